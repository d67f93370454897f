//! `rpc ping`: keepalive pings over a connection of its own, timed.
//!
//! The ping is the protocol's own (a `Ping` frame, answered at once with a `Pong` carrying
//! the same payload), so it measures the network and the server's connection task, not a
//! handler. The tool speaks the frames itself rather than through `rpc::Client`, whose
//! keepalive is internal.

use std::time::Duration;

use bytes::BytesMut;
use futures::StreamExt;
use rpc_core::frame::{FrameDecoder, DEFAULT_MAX_FRAME_LEN};
use rpc_core::message::{decode_frame, encode_frame, Header};
use rpc_core::preamble::client_handshake;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_util::codec::FramedRead;

use crate::error::CliError;

/// Round-trip times of one run of pings.
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    /// Each ping's round trip, in order.
    pub times: Vec<Duration>,
}

impl Summary {
    /// The fastest round trip.
    pub fn min(&self) -> Duration {
        self.times.iter().copied().min().unwrap_or_default()
    }

    /// The slowest round trip.
    pub fn max(&self) -> Duration {
        self.times.iter().copied().max().unwrap_or_default()
    }

    /// The mean round trip.
    pub fn avg(&self) -> Duration {
        match u32::try_from(self.times.len()) {
            Ok(n) if n > 0 => self.times.iter().sum::<Duration>() / n,
            _ => Duration::ZERO,
        }
    }
}

/// Connects to `addr`, sends `count` pings `interval` apart, each waiting up to `timeout` for
/// its pong, and reports each round trip to `each` as it completes.
pub async fn run(
    addr: &str,
    count: u32,
    interval: Duration,
    timeout: Duration,
    mut each: impl FnMut(u32, Duration),
) -> Result<Summary, CliError> {
    let limit = |_| CliError::Timeout {
        millis: timeout.as_millis(),
    };
    let mut stream = tokio::time::timeout(timeout, TcpStream::connect(addr))
        .await
        .map_err(limit)??;
    stream.set_nodelay(true)?;
    tokio::time::timeout(timeout, client_handshake(&mut stream))
        .await
        .map_err(limit)??;
    let (reader, mut writer) = stream.into_split();
    let mut frames = FramedRead::new(reader, FrameDecoder::new(DEFAULT_MAX_FRAME_LEN));
    let mut times = Vec::new();
    for seq in 0..count {
        if seq > 0 {
            tokio::time::sleep(interval).await;
        }
        let payload = u64::from(seq);
        let started = Instant::now();
        write(&mut writer, &Header::Ping { payload }).await?;
        let wait = async {
            loop {
                let Some(frame) = frames.next().await else {
                    return Err(CliError::Rpc(rpc::Error::closed(
                        "the server closed the connection",
                    )));
                };
                match decode_frame(frame?)?.0 {
                    Header::Pong { payload: got } if got == payload => return Ok(()),
                    // The server may ping this connection too: answer, as any peer must.
                    Header::Ping { payload } => {
                        write(&mut writer, &Header::Pong { payload }).await?
                    }
                    // A stale pong, or a go-away: neither is this ping's answer.
                    _ => {}
                }
            }
        };
        tokio::time::timeout(timeout, wait).await.map_err(limit)??;
        let took = started.elapsed();
        each(seq, took);
        times.push(took);
    }
    Ok(Summary { times })
}

async fn write(
    writer: &mut tokio::net::tcp::OwnedWriteHalf,
    header: &Header,
) -> Result<(), CliError> {
    let mut buf = BytesMut::new();
    encode_frame(&mut buf, header, DEFAULT_MAX_FRAME_LEN, |_| Ok(()))?;
    writer.write_all(&buf).await?;
    Ok(())
}
