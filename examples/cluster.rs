//! A service spread over several processes: a gateway fans each job out over three workers
//! through one balanced client, and keeps answering while a worker dies and comes back.
//!
//! ```text
//! cargo run --example cluster                     # the whole demo on this machine, then exits
//!
//! # the same across hosts:
//! cargo run --example cluster -- worker 0.0.0.0:7001                            # on each worker host
//! cargo run --example cluster -- gateway 0.0.0.0:7000 --workers h1:7001,h2:7001,h3:7001
//! cargo run --example cluster -- gateway 0.0.0.0:7000 --dns workers.internal:7001  # every A/AAAA record
//! cargo run --example cluster -- client gateway-host:7000 --jobs 100
//! ```
//!
//! A job counts the primes below a limit. The gateway splits it into ranges and sends each
//! range to a worker picked by the balanced client (the less loaded of two). Counting a range
//! is marked `#[idempotent]`: when a worker dies with ranges in flight, those calls are sent
//! again to another worker, within the client's retry budget; new calls skip the dead worker
//! until it can be dialled again. The client checks every answer against its own count.
//!
//! With no arguments the demo starts three worker processes (this binary again, in the
//! worker role), the gateway and the client in this process, kills one worker (SIGKILL)
//! while the second third of the jobs is running, starts it again for the last third, and
//! prints per-worker call counts, ranges sent again, job latencies and whether every answer
//! was right.

use std::error::Error;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, BufReader};

/// What each worker process serves.
#[rpc::service]
pub trait Worker {
    /// The number of primes in `lo..hi`.
    #[idempotent]
    async fn count_primes(&self, lo: u64, hi: u64) -> u64;
    /// How many ranges this worker has counted since it started.
    async fn served(&self) -> u64;
}

/// What a finished job reports.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobReport {
    /// Primes below the limit.
    pub primes: u64,
    /// Ranges the job was split into.
    pub ranges: u64,
}

/// What the gateway serves to clients.
#[rpc::service]
pub trait Gateway {
    /// The number of primes below `limit`, counted by the workers in ranges. A range that
    /// failed on every worker fails the job with its error's message.
    async fn count_primes_below(&self, limit: u64) -> Result<JobReport, String>;
}

/// Numbers per range the gateway sends to one worker.
const RANGE: u64 = 4_000;

#[derive(Default)]
struct WorkerImpl {
    served: AtomicU64,
}

impl Worker for WorkerImpl {
    async fn count_primes(&self, lo: u64, hi: u64) -> u64 {
        self.served.fetch_add(1, Ordering::Relaxed);
        count_primes(lo, hi)
    }

    async fn served(&self) -> u64 {
        self.served.load(Ordering::Relaxed)
    }
}

fn is_prime(n: u64) -> bool {
    if n < 2 {
        return false;
    }
    (2..).take_while(|d| d * d <= n).all(|d| n % d != 0)
}

fn count_primes(lo: u64, hi: u64) -> u64 {
    (lo..hi).filter(|&n| is_prime(n)).count() as u64
}

struct GatewayImpl {
    workers: WorkerClient,
}

impl Gateway for GatewayImpl {
    async fn count_primes_below(&self, limit: u64) -> Result<JobReport, String> {
        let ranges: Vec<(u64, u64)> = (0..limit)
            .step_by(RANGE as usize)
            .map(|lo| (lo, (lo + RANGE).min(limit)))
            .collect();
        let counts = ranges
            .iter()
            .map(|&(lo, hi)| self.workers.count_primes(lo, hi));
        let counts = futures::future::try_join_all(counts)
            .await
            .map_err(|err| err.to_string())?;
        Ok(JobReport {
            primes: counts.iter().sum(),
            ranges: ranges.len() as u64,
        })
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    match run(std::env::args().skip(1).collect()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Vec<String>) -> Result<(), Box<dyn Error>> {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    match args.as_slice() {
        [] => demo().await,
        ["worker", addr] => worker(addr).await,
        ["gateway", addr, "--workers", list] => {
            let workers = rpc::Client::builder().balance(list.split(','));
            gateway(addr, workers).await
        }
        ["gateway", addr, "--dns", name] => {
            let changes = rpc::discover::dns(name, Duration::from_secs(5));
            gateway(addr, rpc::Client::builder().discover(changes)).await
        }
        ["client", addr, "--jobs", jobs] => {
            let gateway = GatewayClient::connect(*addr).await?;
            let summary = submit(&gateway, jobs.parse()?, 4).await;
            summary.print();
            summary.verdict()
        }
        _ => Err("usage: cluster | worker ADDR | gateway ADDR (--workers A,B,.. | --dns NAME:PORT) | client ADDR --jobs N".into()),
    }
}

/// The worker role: serve counting until Ctrl-C. Prints the address it listens on first
/// (the demo reads it).
async fn worker(addr: &str) -> Result<(), Box<dyn Error>> {
    let server = rpc::Server::builder()
        .serve(WorkerImpl::default().into_service())
        .bind(addr)
        .await?;
    let local = server.local_addr().ok_or("no TCP address")?;
    println!("worker listening on {local}");
    server
        .run_until(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await;
    Ok(())
}

/// The gateway role: serve jobs, fanned out over `workers`, until Ctrl-C.
async fn gateway(addr: &str, workers: rpc::Client) -> Result<(), Box<dyn Error>> {
    let server = gateway_server(workers).bind(addr).await?;
    println!(
        "gateway listening on {}",
        server.local_addr().ok_or("no TCP address")?
    );
    server
        .run_until(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await;
    Ok(())
}

fn gateway_server(workers: rpc::Client) -> rpc::ServerBuilder {
    let gateway = GatewayImpl {
        workers: WorkerClient::new(workers),
    };
    rpc::Server::builder().serve(gateway.into_service())
}

/// Jobs submitted and how they ended.
#[derive(Default)]
struct Summary {
    ok: u64,
    failed: u64,
    wrong: u64,
    latencies: Vec<Duration>,
}

impl Summary {
    fn add(&mut self, other: Summary) {
        self.ok += other.ok;
        self.failed += other.failed;
        self.wrong += other.wrong;
        self.latencies.extend(other.latencies);
    }

    fn percentile(&self, p: f64) -> Duration {
        let mut sorted = self.latencies.clone();
        sorted.sort();
        let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
        sorted.get(index).copied().unwrap_or_default()
    }

    fn print(&self) {
        println!(
            "  jobs ok {}, failed {}, wrong answers {}; job latency p50 {:?}, p99 {:?}",
            self.ok,
            self.failed,
            self.wrong,
            self.percentile(0.5),
            self.percentile(0.99)
        );
    }

    fn verdict(&self) -> Result<(), Box<dyn Error>> {
        match (self.wrong, self.failed) {
            (0, 0) => Ok(()),
            (wrong, failed) => Err(format!("{wrong} wrong answers, {failed} failed jobs").into()),
        }
    }
}

/// Submits `jobs` jobs, `parallel` at a time, checking each answer against a local count.
async fn submit(gateway: &GatewayClient, jobs: u64, parallel: usize) -> Summary {
    use futures::StreamExt;
    let outcomes = futures::stream::iter(0..jobs)
        .map(|job| async move {
            // Limits vary from job to job, so answers do too.
            let limit = 20_000 + (job * 7_919) % 20_000;
            let started = Instant::now();
            let outcome = gateway.count_primes_below(limit).await;
            (limit, outcome, started.elapsed())
        })
        .buffer_unordered(parallel)
        .collect::<Vec<_>>()
        .await;
    let mut summary = Summary::default();
    for (limit, outcome, took) in outcomes {
        match outcome {
            Ok(Ok(report)) if report.primes == count_primes(0, limit) => {
                summary.ok += 1;
                summary.latencies.push(took);
            }
            Ok(Ok(report)) => {
                eprintln!("  wrong answer below {limit}: {}", report.primes);
                summary.wrong += 1;
            }
            Ok(Err(failure)) => {
                eprintln!("  job below {limit} failed: {failure}");
                summary.failed += 1;
            }
            Err(err) => {
                eprintln!("  job below {limit} failed: {err}");
                summary.failed += 1;
            }
        }
    }
    summary
}

/// A worker process this demo started; killed when dropped.
struct WorkerProcess {
    addr: SocketAddr,
    child: tokio::process::Child,
}

/// Starts this binary in the worker role on `addr` and waits for it to listen.
async fn spawn_worker(addr: &str) -> Result<WorkerProcess, Box<dyn Error>> {
    let mut child = tokio::process::Command::new(std::env::current_exe()?)
        .args(["worker", addr])
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let stdout = child.stdout.take().ok_or("worker stdout not piped")?;
    let mut lines = BufReader::new(stdout).lines();
    let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
        .await
        .map_err(|_| "worker did not start within 30 s")??
        .ok_or("worker exited before listening")?;
    let addr = line
        .strip_prefix("worker listening on ")
        .ok_or_else(|| format!("unexpected worker output: {line}"))?
        .parse()?;
    Ok(WorkerProcess { addr, child })
}

/// Ranges each worker has counted, or "down".
async fn served(addrs: &[SocketAddr]) -> String {
    let mut parts = Vec::new();
    for (i, addr) in addrs.iter().enumerate() {
        let count = match WorkerClient::connect(*addr).await {
            Ok(worker) => match worker.served().timeout(Duration::from_secs(1)).await {
                Ok(n) => n.to_string(),
                Err(_) => "down".into(),
            },
            Err(_) => "down".into(),
        };
        parts.push(format!("worker {i}: {count}"));
    }
    parts.join(", ")
}

async fn demo() -> Result<(), Box<dyn Error>> {
    const JOBS_PER_PHASE: u64 = 12;
    let mut workers = Vec::new();
    for _ in 0..3 {
        workers.push(spawn_worker("127.0.0.1:0").await?);
    }
    let addrs: Vec<SocketAddr> = workers.iter().map(|w| w.addr).collect();
    println!("cluster: 3 worker processes on {addrs:?}");

    // A dead worker is probed again soon: after 50 ms, at most 500 ms.
    let workers_client = rpc::Client::builder()
        .reconnect_backoff(Duration::from_millis(50), Duration::from_millis(500))
        .balance(addrs.clone());
    let server = gateway_server(workers_client.clone())
        .bind("127.0.0.1:0")
        .await?;
    let gateway_addr = server.local_addr().ok_or("no TCP address")?;
    let gateway_task = tokio::spawn(server.run());
    let gateway = GatewayClient::connect(gateway_addr).await?;
    println!("cluster: gateway on {gateway_addr}, {JOBS_PER_PHASE} jobs per phase\n");

    let mut total = Summary::default();
    let phases = [
        "all three workers",
        "worker 1 killed mid-phase",
        "worker 1 back",
    ];
    for (phase, name) in phases.iter().enumerate() {
        if phase == 2 {
            workers[1] = spawn_worker(&addrs[1].to_string()).await?;
            println!("-- started worker 1 again on {}", addrs[1]);
        }
        let retries_before = workers_client.retries();
        let jobs = submit(&gateway, JOBS_PER_PHASE, 4);
        let summary = if phase == 1 {
            // Kill it while its ranges are in flight: they are sent again to the others.
            let kill = async {
                tokio::time::sleep(Duration::from_millis(100)).await;
                workers[1].child.kill().await
            };
            let (summary, killed) = tokio::join!(jobs, kill);
            killed?;
            println!("-- killed worker 1 ({}) 100 ms into the phase", addrs[1]);
            summary
        } else {
            jobs.await
        };
        println!("phase {phase}: {name}");
        summary.print();
        println!(
            "  ranges sent again after a lost worker: {}",
            workers_client.retries() - retries_before
        );
        println!("  ranges counted so far: {}", served(&addrs).await);
        total.add(summary);
    }
    println!("\ntotal:");
    total.print();
    println!(
        "  every answer right: {}",
        if total.wrong == 0 && total.failed == 0 {
            "yes"
        } else {
            "NO"
        }
    );
    gateway_task.abort();
    total.verdict()
}
