//! `Bincode::decode` and `decode_prefix` of several types on arbitrary bytes: no panic, no
//! memory reserved for claimed lengths, and whatever decodes re-encodes to bytes that decode
//! to the same value (and re-encode to themselves).

#![no_main]

use std::collections::{BTreeMap, HashMap};
use std::fmt::Debug;

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use rpc_core::{Bincode, Codec, Metadata};
use rpc_fuzz::bounded_decode;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct Record {
    name: String,
    tags: Vec<String>,
    score: Option<i64>,
    nested: Vec<Vec<u8>>,
    kind: Kind,
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
enum Kind {
    Unit,
    Newtype(u32),
    Tuple(i8, char),
    Struct { a: u128, b: bool },
}

type Tuple = (String, Vec<u8>, Option<i64>, HashMap<u32, String>);

/// `ordered`: whether equal values encode to equal bytes (not so for `HashMap`, whose
/// iteration order depends on each map's random hasher seed).
fn check<T: Serialize + DeserializeOwned + PartialEq + Debug>(
    what: &str,
    src: &[u8],
    ordered: bool,
) {
    let decoded = bounded_decode(what, src.len(), || Bincode.decode::<T>(src));
    let prefix = bounded_decode(what, src.len(), || Bincode.decode_prefix::<T>(src));
    match (&decoded, &prefix) {
        (Ok(v), Ok((p, used))) => {
            assert_eq!(
                *used,
                src.len(),
                "{what}: decode took all, decode_prefix did not"
            );
            assert_eq!(v, p, "{what}: decode and decode_prefix disagree");
        }
        (Ok(_), Err(e)) => panic!("{what}: decode succeeded, decode_prefix failed: {e}"),
        (Err(_), Ok((_, used))) => {
            assert!(
                *used < src.len(),
                "{what}: decode_prefix used all, decode failed"
            )
        }
        (Err(_), Err(_)) => {}
    }
    if let Ok((value, used)) = prefix {
        assert!(used <= src.len());
        let mut buf = BytesMut::new();
        Bincode
            .encode(&value, &mut buf)
            .expect("a decoded value must encode");
        let back: T = Bincode
            .decode(&buf)
            .expect("a re-encoded value must decode");
        assert_eq!(back, value, "{what}: round trip changed the value");
        let mut buf2 = BytesMut::new();
        Bincode.encode(&back, &mut buf2).expect("encode");
        if ordered {
            assert_eq!(buf, buf2, "{what}: encoding is not stable");
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&which, src)) = data.split_first() else {
        return;
    };
    match which % 12 {
        0 => check::<u64>("u64", src, true),
        1 => check::<(u64, u64)>("(u64, u64)", src, true),
        2 => check::<String>("String", src, true),
        3 => check::<Vec<u8>>("Vec<u8>", src, true),
        4 => check::<Tuple>(
            "(String, Vec<u8>, Option<i64>, HashMap<u32, String>)",
            src,
            false,
        ),
        5 => check::<HashMap<String, Vec<u32>>>("HashMap<String, Vec<u32>>", src, false),
        6 => check::<Vec<Vec<u8>>>("Vec<Vec<u8>>", src, true),
        7 => check::<Record>("Record", src, true),
        8 => check::<BTreeMap<i16, Option<String>>>("BTreeMap<i16, Option<String>>", src, true),
        9 => check::<Metadata>("Metadata", src, true),
        10 => check::<Vec<(String, Option<Vec<u8>>)>>("Vec<(String, Option<Vec<u8>>)>", src, true),
        _ => check::<(u128, i128, char, bool)>("(u128, i128, char, bool)", src, true),
    }
});
