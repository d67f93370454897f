//! Bodies the tool already holds as bytes, passed through `rpc::Client`'s typed calls.
//!
//! `Client::call` encodes its arguments with bincode and decodes its reply with bincode. The
//! tool builds and reads those bytes itself (see [`json`](crate::json)), so it needs types
//! whose bincode encoding *is* a given byte string, with no length in front:
//!
//! * [`RawArgs`] serializes as a tuple of `u8`s. bincode writes a tuple's elements one after
//!   another with no length, and a `u8` as the byte itself, so the bytes go out unchanged.
//! * [`RawReply`] deserializes as a tuple of `u8`s read until the input ends, which is what a
//!   body is: the rest of its frame. So it holds exactly the body the server sent.

use std::fmt;

use serde::de::{SeqAccess, Visitor};
use serde::ser::SerializeTuple;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Arguments already encoded: sent as they are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawArgs(pub Vec<u8>);

impl Serialize for RawArgs {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut tuple = serializer.serialize_tuple(self.0.len())?;
        for byte in &self.0 {
            tuple.serialize_element(byte)?;
        }
        tuple.end()
    }
}

/// A reply (or stream item) body, undecoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawReply(pub Vec<u8>);

impl<'de> Deserialize<'de> for RawReply {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Bytes;

        impl<'de> Visitor<'de> for Bytes {
            type Value = RawReply;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("the bytes of a body")
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<RawReply, A::Error> {
                let mut bytes = Vec::new();
                // The body ends where its frame ends: reading past it is the only error a
                // `u8` can meet, and it marks the end.
                while let Ok(Some(byte)) = seq.next_element::<u8>() {
                    bytes.push(byte);
                }
                Ok(RawReply(bytes))
            }
        }

        deserializer.deserialize_tuple(usize::MAX, Bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;
    use rpc_core::{Bincode, Codec};

    #[test]
    fn raw_args_encode_as_the_bytes_themselves() {
        for body in [vec![], vec![0u8], vec![4, 6, 255, 251, 0, 1]] {
            let mut buf = BytesMut::new();
            Bincode
                .encode(&RawArgs(body.clone()), &mut buf)
                .expect("encodes");
            assert_eq!(&buf[..], &body[..]);
        }
    }

    #[test]
    fn raw_replies_hold_the_whole_body() {
        for body in [vec![], vec![7u8], (0..=255).collect::<Vec<u8>>()] {
            let got: RawReply = Bincode.decode(&body).expect("decodes");
            assert_eq!(got.0, body);
        }
        // What a typed reply would have been decoded from.
        let mut buf = BytesMut::new();
        Bincode
            .encode(&Ok::<i64, String>(-5), &mut buf)
            .expect("encodes");
        let got: RawReply = Bincode.decode(&buf).expect("decodes");
        assert_eq!(got.0, [0, 9]);
    }
}
