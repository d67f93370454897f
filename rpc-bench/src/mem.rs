//! Memory at scale: server RSS with 10,000 idle connections, and with 10,000 calls in flight.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::time::Duration;

use crate::orchestrate::{start_server, Proc};
use crate::{floor, proc_stat, rpc_sys, tarpc_sys, BenchConn, System};

/// Idle connections opened in the first test.
pub const IDLE_CONNS: usize = 10_000;
/// Connections carrying the calls of the second test.
pub const INFLIGHT_CONNS: usize = 100;
/// Calls held in flight in the second test.
pub const INFLIGHT_CALLS: usize = 10_000;
/// How long the server holds each call.
const HOLD_MS: u64 = 4_000;

/// Server RSS figures, in bytes.
#[derive(Debug, Clone, Default)]
pub struct MemResult {
    /// Fresh server.
    pub base: u64,
    /// With [`IDLE_CONNS`] idle connections (each has completed one call).
    pub idle: u64,
    /// Fresh server with [`INFLIGHT_CONNS`] connections, each after one call.
    pub conns: u64,
    /// The same with [`INFLIGHT_CALLS`] calls held in flight.
    pub inflight: u64,
    /// Calls that failed or answered wrongly in the in-flight test.
    pub bad: u64,
}

impl MemResult {
    /// Server bytes per idle connection.
    pub fn per_conn(&self) -> f64 {
        self.idle.saturating_sub(self.base) as f64 / IDLE_CONNS as f64
    }
    /// Server bytes per call in flight.
    pub fn per_call(&self) -> f64 {
        self.inflight.saturating_sub(self.conns) as f64 / INFLIGHT_CALLS as f64
    }
}

/// Runs both tests for `system`, each against a fresh server process.
pub fn measure(system: System) -> Option<MemResult> {
    let mut r = MemResult::default();
    {
        let (server, port) = start_server(system);
        std::thread::sleep(Duration::from_millis(300));
        r.base = proc_stat::rss_bytes(server.pid());
        let mut client = memclient(system, port, IDLE_CONNS, 0);
        let dog = client.watchdog(Duration::from_secs(120));
        expect(&mut client, "READY")?;
        std::thread::sleep(Duration::from_millis(500));
        r.idle = proc_stat::rss_bytes(server.pid());
        dog.disarm();
    }
    {
        let (server, port) = start_server(system);
        let mut client = memclient(system, port, INFLIGHT_CONNS, INFLIGHT_CALLS);
        let dog = client.watchdog(Duration::from_secs(120));
        expect(&mut client, "READY")?;
        std::thread::sleep(Duration::from_millis(300));
        r.conns = proc_stat::rss_bytes(server.pid());
        client.send("go");
        expect(&mut client, "SENT")?;
        r.inflight = proc_stat::rss_bytes(server.pid());
        let done = expect(&mut client, "DONE")?;
        r.bad = done
            .split_whitespace()
            .find_map(|kv| kv.strip_prefix("bad="))
            .and_then(|v| v.parse().ok())
            .unwrap_or(u64::MAX);
        dog.disarm();
    }
    Some(r)
}

fn memclient(system: System, port: u16, conns: usize, calls: usize) -> Proc {
    Proc::start(&[
        "memclient".into(),
        "--system".into(),
        system.name().into(),
        "--addr".into(),
        format!("127.0.0.1:{port}"),
        "--conns".into(),
        conns.to_string(),
        "--calls".into(),
        calls.to_string(),
    ])
}

fn expect(p: &mut Proc, word: &str) -> Option<String> {
    loop {
        let line = p.line()?;
        if line.starts_with(word) {
            return Some(line);
        }
    }
}

/// Entry point of `memclient`: opens `conns` connections, makes one `add` on each, prints
/// `READY`; if `calls > 0`, waits for `go` on stdin, starts `calls` `hold` calls spread over
/// the connections, prints `SENT` once they have had time to reach the server, and `DONE
/// bad=<n>` when all are answered. Then waits for stdin to close.
pub fn client_main(system: System, addr: SocketAddr, conns: usize, calls: usize) {
    crate::raise_fd_limit();
    let rt = crate::runtime();
    rt.block_on(async move {
        let result = match system {
            System::Rpc => run::<rpc_sys::BenchClient>(addr, conns, calls).await,
            System::Tarpc => run::<tarpc_sys::TBenchClient>(addr, conns, calls).await,
            System::Floor => run::<floor::FloorConn>(addr, conns, calls).await,
            System::RpcTls => run::<rpc_sys::TlsBenchClient>(addr, conns, calls).await,
            System::RpcPayload => run::<rpc_sys::PayloadBenchClient>(addr, conns, calls).await,
        };
        if let Err(err) = result {
            eprintln!("memclient: {err}");
            std::process::exit(2);
        }
    });
}

async fn run<C: BenchConn>(addr: SocketAddr, conns: usize, calls: usize) -> Result<(), String> {
    let mut open = Vec::with_capacity(conns);
    for i in 0..conns {
        let c = C::connect(addr).await?;
        if c.add(i as u64, 1).await? != i as u64 + 1 {
            return Err("wrong add reply".into());
        }
        open.push(c);
    }
    println!("READY");
    if calls > 0 {
        let mut line = String::new();
        let _ = tokio::task::spawn_blocking(move || std::io::stdin().read_line(&mut line)).await;
        let mut tasks = Vec::with_capacity(calls);
        for i in 0..calls {
            let c = open[i % open.len()].clone();
            tasks.push(tokio::spawn(async move { c.hold(HOLD_MS).await }));
        }
        tokio::time::sleep(Duration::from_millis(HOLD_MS / 2)).await;
        println!("SENT");
        let mut bad = 0;
        for t in tasks {
            match t.await {
                Ok(Ok(ms)) if ms == HOLD_MS => {}
                _ => bad += 1,
            }
        }
        println!("DONE bad={bad}");
    }
    // Keep the connections open until the orchestrator is done measuring.
    let _ = tokio::task::spawn_blocking(|| {
        let mut sink = String::new();
        while std::io::stdin().read_line(&mut sink).is_ok_and(|n| n > 0) {}
    })
    .await;
    drop(open);
    Ok(())
}

/// The markdown table of memory results.
pub fn table(results: &[(System, MemResult)]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Server memory (RSS from /proc; fresh server per test):\n\n| system | RSS fresh | RSS, {IDLE_CONNS} idle conns | bytes/idle conn | RSS, {INFLIGHT_CONNS} conns | RSS, +{INFLIGHT_CALLS} calls in flight | bytes/call in flight | failed calls |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|---|---|");
    let mib = |b: u64| format!("{:.1} MiB", b as f64 / (1024.0 * 1024.0));
    for (sys, r) in results {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {:.0} | {} | {} | {:.0} | {} |",
            sys.name(),
            mib(r.base),
            mib(r.idle),
            r.per_conn(),
            mib(r.conns),
            mib(r.inflight),
            r.per_call(),
            r.bad
        );
    }
    out
}
