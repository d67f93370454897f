//! Hostile input over real TCP. In every case a well-behaved client keeps calling the same
//! server while the attack runs, and every one of its calls must succeed.

mod support;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rpc::protocol::message::{Header, Status};
use rpc::ErrorCode;
use support::{
    body, eventually, frame, preamble, read_until_closed, request, start, within, xorshift, Raw,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

#[rpc::service]
trait Target {
    async fn ok(&self, n: u32) -> u32;
    async fn hangs(&self);
    async fn count(&self, items: Vec<u64>) -> usize;
}

struct TargetImpl;

impl Target for TargetImpl {
    async fn ok(&self, n: u32) -> u32 {
        n
    }
    async fn hangs(&self) {
        std::future::pending::<()>().await
    }
    async fn count(&self, items: Vec<u64>) -> usize {
        items.len()
    }
}

/// A client calling the server in a loop while an attack runs.
struct GoodTraffic {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicU64>,
    task: JoinHandle<Result<(), String>>,
}

impl GoodTraffic {
    async fn start(addr: std::net::SocketAddr) -> GoodTraffic {
        // Pinned: if the attack cost this connection, a redial must not hide it.
        let client = TargetClient::new(support::connect_pinned(addr).await);
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicU64::new(0));
        let task = tokio::spawn({
            let (stop, ok) = (stop.clone(), ok.clone());
            async move {
                let mut n = 0u32;
                while !stop.load(Ordering::Relaxed) {
                    n = n.wrapping_add(1);
                    match client.ok(n).await {
                        Ok(back) if back == n => ok.fetch_add(1, Ordering::Relaxed),
                        other => return Err(format!("good call {n} got {other:?}")),
                    };
                }
                // One more call after the attack, on the same connection.
                match client.ok(7).await {
                    Ok(7) => Ok(()),
                    other => Err(format!("final good call got {other:?}")),
                }
            }
        });
        GoodTraffic { stop, ok, task }
    }

    /// Stops the loop and checks that every call succeeded.
    async fn finish(self) {
        self.stop.store(true, Ordering::Relaxed);
        within("good traffic", self.task)
            .await
            .expect("good traffic task")
            .expect("every good call succeeds");
        assert!(
            self.ok.load(Ordering::Relaxed) > 0,
            "no good call completed"
        );
    }
}

async fn target() -> support::Running {
    start(rpc::Server::builder().serve(TargetImpl.into_service())).await
}

/// Reads the next frame and checks it answers `id` successfully with `expected`.
async fn expect_ok<T: serde::Serialize>(raw: &mut Raw, id: u64, expected: &T) {
    let (header, reply) = raw.next().await.expect("a response");
    assert!(
        matches!(header, Header::Response { id: got, status: Status::Ok } if got == id),
        "{header:?}"
    );
    assert_eq!(reply.as_ref(), body(expected).as_slice());
}

/// Reads the next frame and checks it fails `id` with the wire error `code`.
async fn expect_error(raw: &mut Raw, id: u64, code: ErrorCode) {
    let (header, _) = raw.next().await.expect("a response");
    assert!(
        matches!(header, Header::Response { id: got, status: Status::Error { code: c, .. } } if got == id && c == code.to_u16()),
        "{header:?}"
    );
}

#[tokio::test]
async fn random_bytes_are_dropped() {
    let server = target().await;
    let good = GoodTraffic::start(server.addr).await;
    let mut seed = 0x9e37_79b9_7f4a_7c15;
    for _ in 0..20 {
        let mut noise = vec![0u8; 4096];
        for b in &mut noise {
            *b = xorshift(&mut seed) as u8;
        }
        // Raw noise from the first byte, and noise after a valid handshake.
        let mut stream = TcpStream::connect(server.addr).await.expect("connect");
        let _ = stream.write_all(&noise).await;
        read_until_closed("noise connection closed", &mut stream).await;
        let mut raw = Raw::connect(server.addr).await;
        let _ = raw.stream.write_all(&noise).await;
        read_until_closed("noise after handshake closed", &mut raw.stream).await;
    }
    good.finish().await;
}

#[tokio::test]
async fn an_http_request_is_dropped_at_once() {
    let server = target().await;
    let good = GoodTraffic::start(server.addr).await;
    let mut stream = TcpStream::connect(server.addr).await.expect("connect");
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .expect("write");
    // Closed with unread bytes in its buffer, the socket may end in a reset; either way the
    // server must not have answered.
    let reply = read_until_closed("http connection closed", &mut stream).await;
    assert!(reply.is_empty(), "the server answered HTTP with {reply:?}");
    good.finish().await;
}

#[tokio::test]
async fn a_four_gib_frame_with_no_readable_header_closes_the_connection() {
    let server = target().await;
    let good = GoodTraffic::start(server.addr).await;
    let mut raw = Raw::connect(server.addr).await;
    // An oversized frame costs only its call, but this one's front (more than the server
    // reads of it: the metadata limit and a little) is no header: no call to fail.
    let mut bytes = u32::MAX.to_be_bytes().to_vec();
    bytes.resize(4 + 32 * 1024, 0xff);
    raw.send(&bytes).await;
    raw.closed().await;
    good.finish().await;
}

#[tokio::test]
async fn a_four_gib_request_is_refused_and_the_connection_kept() {
    let server = target().await;
    let good = GoodTraffic::start(server.addr).await;
    let mut raw = Raw::connect(server.addr).await;
    // Only the front of the frame is ever sent: the server answers from its header alone.
    let head = frame(&request(1, "Target", "ok"), &[]);
    let mut bytes = u32::MAX.to_be_bytes().to_vec();
    bytes.extend_from_slice(&head[4..]);
    bytes.resize(4 + 32 * 1024, 0);
    raw.send(&bytes).await;
    expect_error(&mut raw, 1, ErrorCode::MessageTooLarge).await;
    good.finish().await;
}

/// Resident and virtual size of this process, in bytes, from /proc/self/statm.
fn memory() -> (u64, u64) {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("statm");
    let mut fields = statm
        .split_whitespace()
        .map(|f| f.parse::<u64>().expect("number"));
    let page = 4096;
    let virt = fields.next().expect("size") * page;
    let rss = fields.next().expect("resident") * page;
    (rss, virt)
}

/// How many file descriptors this process may open.
fn fd_limit() -> usize {
    let limits = std::fs::read_to_string("/proc/self/limits").expect("limits");
    limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3))
        .and_then(|soft| soft.parse().ok())
        .unwrap_or(1024)
}

#[tokio::test]
async fn a_thousand_claimed_maximum_frames_cost_no_memory() {
    let server = target().await;
    let good = GoodTraffic::start(server.addr).await;
    // Client and server ends both live in this process: two descriptors per connection.
    let n = 1000.min(fd_limit().saturating_sub(200) / 2);
    let (rss_before, virt_before) = memory();
    let max = rpc::ServerConfig::default().max_frame_len as u32;
    let mut conns = Vec::with_capacity(n);
    for _ in 0..n {
        let mut raw = Raw::connect(server.addr).await;
        raw.send(&max.to_be_bytes()).await;
        conns.push(raw);
    }
    eventually("all connections open", || server.handle.connections() > n).await;
    // Round trips on the good connection give the server time to read every header.
    for n in 0..50 {
        let client = TargetClient::connect(server.addr).await.expect("connect");
        assert_eq!(client.ok(n).await.expect("call"), n);
    }
    let (rss_after, virt_after) = memory();
    let rss_growth = rss_after.saturating_sub(rss_before);
    let virt_growth = virt_after.saturating_sub(virt_before);
    eprintln!("{n} connections each claiming a {max}-byte frame: RSS +{rss_growth} B, address space +{virt_growth} B");
    // Reserving the claimed 16 MiB per connection would be 16 GB of address space.
    assert!(
        rss_growth < 256 << 20,
        "RSS grew by {rss_growth} bytes for {n} connections"
    );
    assert!(
        virt_growth < 4 << 30,
        "address space grew by {virt_growth} bytes for {n} connections"
    );
    drop(conns);
    good.finish().await;
}

#[tokio::test]
async fn a_truncated_frame_then_close_costs_nothing() {
    let server = target().await;
    let good = GoodTraffic::start(server.addr).await;
    let mut raw = Raw::connect(server.addr).await;
    let whole = frame(&request(1, "Target", "ok"), &body(&(5u32,)));
    raw.send(&whole[..whole.len() - 2]).await;
    raw.stream.shutdown().await.expect("half close");
    raw.closed().await;
    good.finish().await;
}

#[tokio::test]
async fn a_slowloris_frame_does_not_slow_anyone_else() {
    let server = target().await;
    let good = GoodTraffic::start(server.addr).await;
    let mut raw = Raw::connect(server.addr).await;
    raw.send(&100u32.to_be_bytes()).await;
    // One byte per 100 ms, ten times: the attack itself is paced, nothing waits on it.
    let mut pace = tokio::time::interval(Duration::from_millis(100));
    for _ in 0..10 {
        pace.tick().await;
        raw.send(&[0]).await;
    }
    good.finish().await;
}

#[tokio::test]
async fn a_garbage_body_fails_that_call_only() {
    let server = target().await;
    let good = GoodTraffic::start(server.addr).await;
    let mut raw = Raw::connect(server.addr).await;
    raw.send_frame(&request(1, "Target", "ok"), &[0xff; 32])
        .await;
    expect_error(&mut raw, 1, ErrorCode::BadRequest).await;
    // The connection still serves.
    raw.send_frame(&request(2, "Target", "ok"), &body(&(9u32,)))
        .await;
    expect_ok(&mut raw, 2, &9u32).await;
    good.finish().await;
}

#[tokio::test]
async fn a_vec_claiming_two_to_the_sixty_elements_is_refused_without_allocating() {
    let server = target().await;
    let good = GoodTraffic::start(server.addr).await;
    let mut raw = Raw::connect(server.addr).await;
    let mut forged = vec![253u8]; // bincode varint marker: a u64 follows
    forged.extend_from_slice(&(1u64 << 60).to_le_bytes());
    forged.extend_from_slice(&[1, 2, 3]);
    raw.send_frame(&request(1, "Target", "count"), &forged)
        .await;
    expect_error(&mut raw, 1, ErrorCode::BadRequest).await;
    good.finish().await;
}

#[tokio::test]
async fn an_unknown_message_kind_closes_the_connection() {
    let server = target().await;
    let good = GoodTraffic::start(server.addr).await;
    let mut raw = Raw::connect(server.addr).await;
    raw.send(&[0, 0, 0, 1, 99]).await; // message tag 99 does not exist
    raw.closed().await;
    good.finish().await;
}

#[tokio::test]
async fn a_reused_request_id_closes_the_connection() {
    let server = target().await;
    let good = GoodTraffic::start(server.addr).await;
    let mut raw = Raw::connect(server.addr).await;
    raw.send_frame(&request(5, "Target", "hangs"), &body(&()))
        .await;
    raw.send_frame(&request(5, "Target", "hangs"), &body(&()))
        .await;
    raw.closed().await;
    eventually("aborted handlers counted out", || {
        server.handle.in_flight() == 0
    })
    .await;
    good.finish().await;
}

#[tokio::test]
async fn a_response_sent_to_the_server_closes_the_connection() {
    let server = target().await;
    let good = GoodTraffic::start(server.addr).await;
    let mut raw = Raw::connect(server.addr).await;
    raw.send_frame(
        &Header::Response {
            id: 1,
            status: Status::Ok,
        },
        &body(&5u32),
    )
    .await;
    raw.closed().await;
    good.finish().await;
}

#[tokio::test]
async fn connections_beyond_the_limit_are_refused_and_the_rest_unaffected() {
    let limit = 8;
    let server = start(
        rpc::Server::builder()
            .max_connections(limit)
            .preamble_timeout(Duration::from_secs(60))
            .serve(TargetImpl.into_service()),
    )
    .await;
    let good = GoodTraffic::start(server.addr).await;
    let (mut accepted, mut refused) = (Vec::new(), 0);
    for _ in 0..30 {
        let mut stream = TcpStream::connect(server.addr).await.expect("connect");
        stream.write_all(&preamble()).await.expect("write");
        let mut answer = [0u8; 8];
        match within("preamble answer or close", stream.read_exact(&mut answer)).await {
            Ok(_) => accepted.push(stream),
            Err(_) => refused += 1,
        }
    }
    assert_eq!(accepted.len(), limit - 1, "the good client holds one slot");
    assert_eq!(refused, 30 - (limit - 1));
    good.finish().await;
}

#[tokio::test]
async fn a_peer_that_never_finishes_its_preamble_is_dropped() {
    let server = start(
        rpc::Server::builder()
            .preamble_timeout(Duration::from_millis(200))
            .serve(TargetImpl.into_service()),
    )
    .await;
    let good = GoodTraffic::start(server.addr).await;
    let mut silent = TcpStream::connect(server.addr).await.expect("connect");
    let mut half = TcpStream::connect(server.addr).await.expect("connect");
    half.write_all(&preamble()[..4]).await.expect("write");
    read_until_closed("silent peer dropped", &mut silent).await;
    read_until_closed("half preamble dropped", &mut half).await;
    good.finish().await;
}

#[tokio::test]
async fn ten_thousand_request_cancel_pairs_leave_nothing_in_flight() {
    let server = target().await;
    let good = GoodTraffic::start(server.addr).await;
    let mut raw = Raw::connect(server.addr).await;
    let unit = body(&());
    for batch in 0..100u64 {
        let mut bytes = Vec::new();
        for i in 0..100u64 {
            let id = batch * 100 + i;
            bytes.extend_from_slice(&frame(&request(id, "Target", "hangs"), &unit));
            bytes.extend_from_slice(&frame(&Header::Cancel { id }, &[]));
            // Cancels for ids that were never sent are ignored.
            bytes.extend_from_slice(&frame(&Header::Cancel { id: id + 1_000_000 }, &[]));
        }
        raw.send(&bytes).await;
    }
    // The connection still answers, and nothing is left running.
    raw.send_frame(&request(u64::MAX, "Target", "ok"), &body(&(3u32,)))
        .await;
    expect_ok(&mut raw, u64::MAX, &3u32).await;
    eventually("in-flight count back to zero", || {
        server.handle.in_flight() == 0
    })
    .await;
    good.finish().await;
}

#[tokio::test]
async fn oversized_metadata_fails_the_call_not_the_connection() {
    let server = start(
        rpc::Server::builder()
            .max_metadata_len(64)
            .serve(TargetImpl.into_service()),
    )
    .await;
    let client = TargetClient::connect(server.addr).await.expect("connect");
    let err = client
        .ok(1)
        .metadata("blob", vec![0u8; 1024])
        .await
        .expect_err("too much metadata");
    assert!(
        matches!(err, rpc::Error::BadRequest { ref reason } if reason.contains("1028")),
        "{err}"
    );
    assert_eq!(
        client
            .ok(2)
            .metadata("small", "x")
            .await
            .expect("small metadata"),
        2
    );
}

#[tokio::test]
async fn a_deadline_too_far_to_represent_is_no_deadline() {
    let server = target().await;
    let good = GoodTraffic::start(server.addr).await;
    let mut raw = Raw::connect(server.addr).await;
    let header = Header::Request(rpc::protocol::message::RequestHeader {
        id: 1,
        method: rpc::MethodId::of("Target", "ok").as_u64(),
        fingerprint: 0,
        timeout_micros: Some(u64::MAX),
        metadata: rpc::Metadata::new(),
    });
    raw.send_frame(&header, &body(&(4u32,))).await;
    expect_ok(&mut raw, 1, &4u32).await;
    good.finish().await;
}

#[tokio::test]
async fn the_server_enforces_a_deadline_the_client_never_acts_on() {
    // A raw client that sends a deadline and then neither times out nor cancels: only the
    // server's own timer can end the call.
    let server = target().await;
    let mut raw = Raw::connect(server.addr).await;
    let header = match request(1, "Target", "hangs") {
        Header::Request(mut request) => {
            request.timeout_micros = Some(100_000);
            Header::Request(request)
        }
        other => other,
    };
    raw.send_frame(&header, &body(&())).await;
    expect_error(&mut raw, 1, ErrorCode::DeadlineExceeded).await;
    eventually("in-flight count back to zero", || {
        server.handle.in_flight() == 0
    })
    .await;
    raw.send_frame(&request(2, "Target", "ok"), &body(&(7u32,)))
        .await;
    expect_ok(&mut raw, 2, &7u32).await;
}
