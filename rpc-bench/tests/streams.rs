//! Smoke tests of the stream workloads: rpc and the floor move the same items and the same
//! payload bytes, every item checked on arrival; and the orchestrator runs the workloads
//! end to end. No timing is asserted.

use std::net::SocketAddr;

use rpc_bench::load::{read_stream, write_stream, Tally, Until, SMALL_ITEM, STREAM_ITEM};
use rpc_bench::{floor, rpc_sys, BenchStreams, Uploaded};

/// An rpc server and a floor server on 127.0.0.1, port 0; the runtime of the test owns the
/// tasks serving them.
async fn servers() -> (SocketAddr, SocketAddr) {
    let server = rpc_sys::bind().await.expect("bind rpc");
    let rpc = server.local_addr().expect("tcp address");
    tokio::spawn(server.run());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind floor");
    let floor = listener.local_addr().expect("floor address");
    tokio::spawn(floor::serve_on(listener));
    (rpc, floor)
}

/// Reads `n` items of a server stream and sends `n` items as a client stream.
async fn both_ways<C: BenchStreams>(addr: SocketAddr, size: usize, n: u64) -> (Tally, Tally) {
    let conn = C::connect(addr).await.expect("connect");
    let down = read_stream(&conn, size, Until::Items(n)).await;
    let up = write_stream(&conn, size, Until::Items(n)).await;
    // The connection carries on after a dropped server stream and a finished client one.
    let again = read_stream(&conn, size, Until::Items(3)).await;
    assert_eq!((again.items, again.errors, again.wrong), (3, 0, 0));
    (down, up)
}

fn check(system: &str, t: &Tally, size: usize, n: u64) {
    assert_eq!(t.first_error, None, "{system}");
    assert_eq!((t.errors, t.wrong), (0, 0), "{system}");
    assert_eq!(t.items, n, "{system}: items");
    assert_eq!(t.total, n, "{system}: items sent or read in all");
    assert_eq!(t.bytes, n * size as u64, "{system}: payload bytes");
}

async fn same_bytes(size: usize, n: u64) {
    // A stall (credit never handed back, say) fails the test instead of hanging it.
    tokio::time::timeout(
        std::time::Duration::from_secs(60),
        same_bytes_inner(size, n),
    )
    .await
    .expect("the streams stalled");
}

async fn same_bytes_inner(size: usize, n: u64) {
    let (rpc, floor) = servers().await;
    let (rpc_down, rpc_up) = both_ways::<rpc_sys::StreamsClient>(rpc, size, n).await;
    let (payload_down, payload_up) = both_ways::<rpc_sys::PayloadStreamsClient>(rpc, size, n).await;
    let (floor_down, floor_up) = both_ways::<floor::FloorConn>(floor, size, n).await;
    for (system, t) in [
        ("rpc down", &rpc_down),
        ("rpc up", &rpc_up),
        ("rpc-payload down", &payload_down),
        ("rpc-payload up", &payload_up),
        ("floor down", &floor_down),
        ("floor up", &floor_up),
    ] {
        check(system, t, size, n);
    }
    let received = Uploaded {
        items: n,
        bytes: n * size as u64,
        wrong: 0,
    };
    assert_eq!(rpc_up.server, Some(received), "rpc server's count");
    assert_eq!(
        payload_up.server,
        Some(received),
        "rpc-payload server's count"
    );
    assert_eq!(floor_up.server, Some(received), "floor server's count");
    assert_eq!(rpc_down.bytes, floor_down.bytes);
    assert_eq!(payload_down.bytes, floor_down.bytes);
    assert_eq!(rpc_up.bytes, floor_up.bytes);
}

#[tokio::test]
async fn stream_items_of_64_kib_move_the_same_bytes_on_rpc_and_floor() {
    // 40 items is 2.5 MiB: ten windows, so credit has to come back several times.
    same_bytes(STREAM_ITEM, 40).await;
}

#[tokio::test]
async fn stream_items_of_32_bytes_move_the_same_bytes_on_rpc_and_floor() {
    // 20,000 frames of 45 bytes is about 3.4 windows.
    same_bytes(SMALL_ITEM, 20_000).await;
}

#[tokio::test]
async fn echo_payload_returns_what_it_was_given() {
    use rpc_bench::BenchConn;
    let (rpc, _) = servers().await;
    let conn = rpc_sys::PayloadBenchClient::connect(rpc)
        .await
        .expect("connect");
    for len in [0, 32, 1 << 20] {
        let data: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
        let back = conn.echo(data.clone()).await.expect("echo");
        assert_eq!(back.as_ref(), &data[..], "{len} bytes");
    }
}

#[test]
fn the_orchestrator_runs_the_stream_workloads_and_skips_tarpc() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_rpc-bench"))
        .args([
            "--secs",
            "0.2",
            "--warm",
            "0.1",
            "--reps",
            "1",
            "--workloads",
            "stream,stream-small",
            "--systems",
            "rpc,tarpc,floor,rpc-payload",
            "--no-save",
        ])
        .output()
        .expect("run rpc-bench");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for w in [
        "stream-down",
        "stream-up",
        "stream-small-down",
        "stream-small-up",
    ] {
        // rpc-payload runs the 64 KiB streams only.
        let systems: &[&str] = if w.starts_with("stream-small") {
            &["rpc", "floor"]
        } else {
            &["rpc", "floor", "rpc-payload"]
        };
        for sys in systems {
            let line = format!("{w} {sys}: ");
            let at = stdout
                .find(&line)
                .unwrap_or_else(|| panic!("{line}\n{stdout}"));
            let rest = &stdout[at + line.len()..];
            let end = rest.find([';', '\n']).unwrap_or(rest.len());
            let summary = rest[..end].trim_end_matches('.');
            assert!(
                summary.ends_with(" 0 errors, 0 wrong") && !summary.starts_with("0 "),
                "{w} {sys}: {summary}"
            );
        }
        // tarpc has no streams: its cells say so.
        let row = stdout
            .lines()
            .find(|l| l.starts_with(&format!("| {w} | allocs/item, server |")))
            .unwrap_or_else(|| panic!("no allocs row for {w}\n{stdout}"));
        assert!(row.contains("| n/a |"), "{row}");
    }
}
