//! Hosts that die and vanish, over real separate network stacks: three workers and a
//! balanced client, each in its own Linux network namespace, joined by veth pairs to a
//! bridge in a fifth namespace. During the run one worker process is killed (its kernel
//! closes its connections) and another host's link is taken down on the bridge (a silent
//! black hole: no FIN, no RST; only keepalive can notice) and brought back.
//!
//! The hosts are roles of this test binary: the orchestrating test re-runs it under
//! `ip netns exec NS` with `RPC_NETNS_ROLE=worker|client`, and only the matching role test
//! (`role_worker`, `role_client`) does anything there. The orchestrator itself runs only
//! `ip` commands and those children; it talks to the client role over its stdin and stdout
//! (lines starting with `@rpc`). Every namespace (and with it every link and the bridge) and
//! every child is removed by a guard, also when the test fails; namespaces left by an earlier
//! run that died are removed at the start.
//!
//! Needs root (or CAP_NET_ADMIN and CAP_SYS_ADMIN) and `ip` from iproute2; without them the
//! test fails saying what is missing, unless `RPC_SKIP_NETNS=1` is set.

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// What each worker host serves.
#[rpc::service]
trait Worker {
    /// The sum of `lo..hi`, tagged with the job it answers and the worker that ran it.
    #[idempotent]
    async fn sum(&self, job: u64, lo: u64, hi: u64) -> Summed;
    /// Appends `seq` to the worker's log and returns the worker's name: not idempotent
    /// (twice is two entries), so never sent again by the client.
    async fn record(&self, seq: u64) -> String;
    /// How many `sum` calls this worker has run.
    async fn executed(&self) -> u64;
}

/// A worker's answer to one job.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Summed {
    job: u64,
    sum: u64,
    worker: String,
}

struct WorkerImpl {
    name: String,
    executed: AtomicU64,
    log: Mutex<Vec<u64>>,
    /// Set by the orchestrator's `hold`: from then on `sum` calls never return, so the
    /// worker is killed with calls in flight.
    hold: Arc<AtomicBool>,
    held: AtomicU64,
}

impl Worker for WorkerImpl {
    async fn sum(&self, job: u64, lo: u64, hi: u64) -> Summed {
        self.executed.fetch_add(1, Ordering::Relaxed);
        if self.hold.load(Ordering::Relaxed) {
            if self.held.fetch_add(1, Ordering::Relaxed) + 1 == HELD {
                println!("{TAG}busy");
            }
            std::future::pending::<()>().await;
        }
        Summed {
            job,
            sum: (lo..hi).sum(),
            worker: self.name.clone(),
        }
    }

    async fn record(&self, seq: u64) -> String {
        self.log
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(seq);
        self.name.clone()
    }

    async fn executed(&self) -> u64 {
        self.executed.load(Ordering::Relaxed)
    }
}

// ---------------------------------------------------------------------------------------
// Settings shared by the orchestrator (to bound its assertions) and the client role.

/// A connection silent this long is pinged.
const KEEPALIVE_INTERVAL: Duration = Duration::from_millis(200);
/// A ping unanswered this long kills the connection.
const KEEPALIVE_TIMEOUT: Duration = Duration::from_millis(600);
const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);
/// Every call's deadline, all attempts included.
const DEADLINE: Duration = Duration::from_secs(6);
/// The latest a silent connection is declared dead after its last frame: the ping goes out
/// between one and two intervals after it, and the peer has the timeout to answer.
const KEEPALIVE_BOUND: Duration = Duration::from_millis(
    2 * KEEPALIVE_INTERVAL.as_millis() as u64 + KEEPALIVE_TIMEOUT.as_millis() as u64,
);
/// Allowance for scheduling on a loaded machine (two cores shared by several builds),
/// well under the deadline, so a call freed by its deadline instead of by keepalive fails
/// the bounds below.
const SLACK: Duration = Duration::from_millis(1000);
/// How long the black hole lasts: several keepalive bounds, so the client meets the host's
/// absence after ejecting it (dials that time out).
const HOLE: Duration = Duration::from_millis(3000);

/// Concurrent loops of idempotent jobs and of non-idempotent calls in the client role.
const JOB_LOOPS: usize = 6;
const CALL_LOOPS: usize = 3;
/// Pace of each loop: keeps the load light on a shared machine.
const PACE: Duration = Duration::from_millis(10);
/// Numbers summed per job.
const SPAN: u64 = 1000;
/// Answers from every worker before the client says it is warm, and answers after an event
/// before it says the cluster moved on.
const WARM_ANSWERS: u64 = 20;
const MOVED_JOBS: u64 = 200;
/// Jobs in flight on the worker when it is killed (at least).
const HELD: u64 = 2;

const ROLE_VAR: &str = "RPC_NETNS_ROLE";
const SKIP_VAR: &str = "RPC_SKIP_NETNS";
/// Lines of the protocol between the roles and the orchestrator start with this.
const TAG: &str = "@rpc ";

// ---------------------------------------------------------------------------------------
// The orchestrator.

#[test]
fn workers_in_namespaces_survive_a_killed_worker_and_a_black_holed_host() {
    if std::env::var_os(ROLE_VAR).is_some() {
        // A role run of this binary: only the role test acts.
        return;
    }
    let ip = match prerequisites() {
        Ok(ip) => ip,
        Err(missing) => {
            if std::env::var(SKIP_VAR).as_deref() == Ok("1") {
                eprintln!("multihost: skipped ({SKIP_VAR}=1): {missing}");
                return;
            }
            panic!("multihost: cannot run: {missing}. Set {SKIP_VAR}=1 to skip this test where namespaces cannot be made.");
        }
    };
    let mut lab = Lab::create(ip);

    // Three workers, each alone on its host.
    let mut workers = Vec::new();
    for i in 1..=3 {
        let name = format!("w{i}");
        let host = format!("h{i}");
        let child = lab.spawn_role(
            &host,
            "role_worker",
            &[
                ("RPC_NETNS_NAME", name.clone()),
                ("RPC_NETNS_ADDR", format!("{}:0", host_ip(i))),
            ],
        );
        let line = lab.expect(&child, "listening ", Duration::from_secs(30));
        workers.push((name, line));
    }
    let addrs: Vec<String> = workers.iter().map(|(_, addr)| addr.clone()).collect();
    let client = lab.spawn_role(
        "h4",
        "role_client",
        &[("RPC_NETNS_WORKERS", addrs.join(","))],
    );
    lab.expect(&client, "warm", Duration::from_secs(30));

    // Kill w1's process with jobs in flight on it (it holds them): its kernel closes its
    // connections, and those jobs must be sent again elsewhere.
    let killed = "w1";
    let victim = "h1";
    lab.tell(victim, "hold");
    lab.expect(victim, "busy", Duration::from_secs(30));
    lab.mark(&client, &format!("kill {killed}"));
    lab.kill_child(victim);
    lab.expect(&client, "moved", Duration::from_secs(30));

    // Black-hole w2's host: its port on the bridge goes down, packets vanish both ways.
    let hole = "w2";
    lab.mark(&client, &format!("down {hole}"));
    lab.ip(&["-n", &lab.ns("br"), "link", "set", "dev", "h2", "down"]);
    // The scenario's length, not a synchronisation: the host stays away this long.
    std::thread::sleep(HOLE);
    lab.mark(&client, &format!("up {hole}"));
    lab.ip(&["-n", &lab.ns("br"), "link", "set", "dev", "h2", "up"]);
    lab.expect(&client, "back", Duration::from_secs(30));

    lab.tell(&client, "stop");
    let summary = lab.expect(&client, "summary ", Duration::from_secs(30));
    let s = Summary::parse(&summary);
    eprintln!("multihost: {summary}");

    // Every idempotent job answered once, rightly, despite the dead worker and the hole.
    assert!(s.num("jobs") > MOVED_JOBS, "too few jobs ran: {summary}");
    assert_eq!(
        s.num("jobs_ok"),
        s.num("jobs"),
        "every idempotent job completes with the right answer: {summary}"
    );
    assert_eq!(s.num("jobs_wrong"), 0, "{summary}");
    assert_eq!(
        s.num("jobs_duplicate"),
        0,
        "no job answered twice: {summary}"
    );
    assert!(
        s.num("retries_kill") >= HELD,
        "the jobs in flight on the killed worker were sent again: {summary}"
    );
    assert!(
        s.num("retries") > s.num("retries_kill"),
        "jobs lost on the black-holed host's silent connection were sent again: {summary}"
    );
    // Non-idempotent calls: a reply, or a typed error; none freed only by its deadline.
    assert_eq!(
        s.num("calls"),
        s.num("calls_ok") + s.num("calls_unrun") + s.num("calls_lost"),
        "non-idempotent calls succeed or fail with ConnectionClosed/a never-ran error: {summary}"
    );
    assert_eq!(
        s.num("calls_deadline"),
        0,
        "no call waited for its deadline: {summary}"
    );
    assert!(
        s.ms("max_call_ms") <= DEADLINE + KEEPALIVE_TIMEOUT,
        "no call hangs past deadline plus keepalive timeout: {summary}"
    );
    // The black hole: calls on the silent connection failed within the keepalive bound, then
    // none waited on that host beyond a dial's timeout, and it serves again once back.
    assert!(
        s.num("hole_lost") > 0,
        "calls in flight to the black-holed host fail when keepalive gives up on it: {summary}"
    );
    assert!(
        s.ms("eject_ms") <= KEEPALIVE_BOUND + SLACK,
        "the black-holed host is ejected within the keepalive bound ({KEEPALIVE_BOUND:?} + {SLACK:?} slack): {summary}"
    );
    assert!(
        s.ms("ejected_max_ms") <= CONNECT_TIMEOUT + SLACK,
        "after ejection no call waits on the black-holed host beyond a dial's timeout: {summary}"
    );
    assert!(
        s.num("back_answers") >= WARM_ANSWERS,
        "the host answers again after it returns: {summary}"
    );
    // Answers are real: each live worker ran at least as many jobs as it answered (more when
    // a reply was lost and the job ran again elsewhere).
    for worker in ["w2", "w3"] {
        assert!(
            s.num(&format!("executed_{worker}")) >= s.num(&format!("answered_{worker}")),
            "{worker} ran what it answered: {summary}"
        );
    }
    drop(lab);
}

/// Finds `ip` and checks that namespaces can be made; says what is missing if not.
fn prerequisites() -> Result<String, String> {
    let ip = ["ip", "/usr/sbin/ip", "/sbin/ip", "/usr/bin/ip", "/bin/ip"]
        .into_iter()
        .find(|ip| {
            Command::new(ip)
                .arg("-V")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|status| status.success())
        })
        .ok_or("`ip` (iproute2) was not found in PATH or /usr/sbin, /sbin")?;
    let probe = format!("{}probe", prefix());
    let out = Command::new(ip)
        .args(["netns", "add", &probe])
        .output()
        .map_err(|err| format!("running `{ip} netns add` failed: {err}"))?;
    if !out.status.success() {
        return Err(format!(
            "`ip netns add` failed ({}): creating network namespaces needs root or CAP_NET_ADMIN and CAP_SYS_ADMIN",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    let _ = Command::new(ip).args(["netns", "del", &probe]).output();
    Ok(ip.to_string())
}

/// This run's namespace prefix: unique while this process lives.
fn prefix() -> String {
    format!("rpct{}-", std::process::id())
}

fn host_ip(i: usize) -> String {
    // 198.18.0.0/15 is for benchmarking: no real network uses it, and it exists only
    // inside this test's namespaces.
    format!("198.18.0.{i}")
}

/// Everything the test made: namespaces (the links and the bridge live and die with them),
/// children, and the threads reading the children's output. Dropping it removes it all.
struct Lab {
    ip: String,
    prefix: String,
    namespaces: Vec<String>,
    children: HashMap<String, Role>,
    lines_tx: SyncSender<(String, String)>,
    lines: Receiver<(String, String)>,
    /// Lines read while waiting for another host's.
    stash: Vec<(String, String)>,
}

struct Role {
    child: Child,
    stdin: Option<ChildStdin>,
    reader: Option<JoinHandle<()>>,
}

impl Lab {
    /// A bridge namespace and four host namespaces h1..h4, each joined to the bridge by a
    /// veth pair, with 198.18.0.i/24 on its end.
    fn create(ip: String) -> Lab {
        let (lines_tx, lines) = std::sync::mpsc::sync_channel(256);
        let mut lab = Lab {
            ip,
            prefix: prefix(),
            namespaces: Vec::new(),
            children: HashMap::new(),
            lines_tx,
            lines,
            stash: Vec::new(),
        };
        lab.remove_leftovers();
        let br = lab.add_ns("br");
        lab.ip(&["-n", &br, "link", "add", "br0", "type", "bridge"]);
        lab.ip(&["-n", &br, "link", "set", "dev", "br0", "up"]);
        for i in 1..=4 {
            let host = lab.add_ns(&format!("h{i}"));
            let port = format!("h{i}");
            // Both ends are made inside namespaces: the root namespace never sees them.
            lab.ip(&[
                "-n", &br, "link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns",
                &host,
            ]);
            lab.ip(&["-n", &br, "link", "set", "dev", &port, "master", "br0"]);
            lab.ip(&["-n", &br, "link", "set", "dev", &port, "up"]);
            lab.ip(&[
                "-n",
                &host,
                "addr",
                "add",
                &format!("{}/24", host_ip(i)),
                "dev",
                "eth0",
            ]);
            lab.ip(&["-n", &host, "link", "set", "dev", "eth0", "up"]);
            lab.ip(&["-n", &host, "link", "set", "dev", "lo", "up"]);
        }
        lab
    }

    fn ns(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    fn add_ns(&mut self, name: &str) -> String {
        let ns = self.ns(name);
        self.ip(&["netns", "add", &ns]);
        self.namespaces.push(ns.clone());
        ns
    }

    /// Runs `ip args`; panics with its stderr if it fails.
    fn ip(&self, args: &[&str]) {
        let out = Command::new(&self.ip)
            .args(args)
            .output()
            .unwrap_or_else(|err| panic!("running ip {args:?}: {err}"));
        assert!(
            out.status.success(),
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }

    /// Removes namespaces of earlier runs whose process is gone (a run killed before its
    /// guard ran), and the processes still inside them.
    fn remove_leftovers(&self) {
        let Ok(out) = Command::new(&self.ip).args(["netns", "list"]).output() else {
            return;
        };
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            let Some(name) = line.split_whitespace().next() else {
                continue;
            };
            let Some(pid) = name
                .strip_prefix("rpct")
                .and_then(|rest| rest.split('-').next())
                .and_then(|pid| pid.parse::<u32>().ok())
            else {
                continue;
            };
            if std::path::Path::new(&format!("/proc/{pid}")).exists() {
                continue; // a run in progress
            }
            eprintln!("multihost: removing namespace {name} left by an earlier run");
            if let Ok(pids) = Command::new(&self.ip)
                .args(["netns", "pids", name])
                .output()
            {
                for pid in String::from_utf8_lossy(&pids.stdout).split_whitespace() {
                    let _ = Command::new("kill").args(["-KILL", pid]).status();
                }
            }
            let _ = Command::new(&self.ip).args(["netns", "del", name]).status();
        }
    }

    /// Runs this test binary's role test `test` inside host namespace `host`, with `env`;
    /// its `@rpc` lines arrive on `self.lines`.
    fn spawn_role(&mut self, host: &str, test: &str, env: &[(&str, String)]) -> String {
        let exe = std::env::current_exe().expect("the test binary's path");
        let mut cmd = Command::new(&self.ip);
        cmd.args(["netns", "exec", &self.ns(host)])
            .arg(exe)
            .args(["--exact", test, "--nocapture", "--test-threads=1"])
            .env(ROLE_VAR, test)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        for (key, value) in env {
            cmd.env(key, value);
        }
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|err| panic!("starting {test} in {host}: {err}"));
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().expect("piped stdout");
        let tx = self.lines_tx.clone();
        let who = host.to_string();
        // Ends when the child's stdout closes (the child exited or was killed) or the lab's
        // receiver is gone.
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                // libtest may have written `test NAME ... ` on the same line first.
                if let Some(rest) = line.split_once(TAG).map(|(_, rest)| rest) {
                    if tx.send((who.clone(), rest.to_string())).is_err() {
                        return;
                    }
                }
            }
        });
        self.children.insert(
            host.to_string(),
            Role {
                child,
                stdin,
                reader: Some(reader),
            },
        );
        host.to_string()
    }

    /// Waits for a line from `host` starting with `start`; returns the rest.
    /// Lines from other hosts read meanwhile are kept for later.
    fn expect(&mut self, host: &str, start: &str, within: Duration) -> String {
        if let Some(i) = self
            .stash
            .iter()
            .position(|(who, line)| who == host && line.starts_with(start))
        {
            let (_, line) = self.stash.remove(i);
            return line[start.len()..].to_string();
        }
        let until = Instant::now() + within;
        loop {
            let left = until.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok((who, line)) if who == host && line.starts_with(start) => {
                    return line[start.len()..].to_string();
                }
                Ok(other) => self.stash.push(other),
                Err(RecvTimeoutError::Timeout) => {
                    panic!("multihost: {host} did not say `{start}` within {within:?}")
                }
                Err(RecvTimeoutError::Disconnected) => unreachable!("the lab holds a sender"),
            }
        }
    }

    /// Tells the client role `line` and waits until it has taken note (its clocks and
    /// counters are read before the orchestrator acts).
    fn mark(&mut self, host: &str, line: &str) {
        self.tell(host, line);
        self.expect(host, &format!("noted {line}"), Duration::from_secs(30));
    }

    /// Sends a command line to `host`'s role.
    fn tell(&mut self, host: &str, line: &str) {
        let role = self.children.get_mut(host).expect("a running role");
        let stdin = role.stdin.as_mut().expect("the role's stdin");
        writeln!(stdin, "{line}")
            .and_then(|()| stdin.flush())
            .unwrap_or_else(|err| panic!("telling {host} `{line}`: {err}"));
    }

    /// SIGKILLs `host`'s role and reaps it (its reader ends with its output; the guard
    /// joins it).
    fn kill_child(&mut self, host: &str) {
        let role = self.children.get_mut(host).expect("a running role");
        // `ip netns exec` execs the command: this is the role's own process.
        let _ = role.child.kill();
        let _ = role.child.wait();
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        // Dropping the receiver frees a reader blocked handing over a line; killing its child
        // ends its input: every reader then returns.
        drop(std::mem::replace(
            &mut self.lines,
            std::sync::mpsc::sync_channel(1).1,
        ));
        for (_, mut role) in self.children.drain() {
            let _ = role.child.kill();
            let _ = role.child.wait();
            if let Some(reader) = role.reader.take() {
                let _ = reader.join();
            }
        }
        // Host namespaces first (their veth ends go, and with them the bridge ports), then
        // the bridge's.
        for ns in self.namespaces.iter().rev() {
            let out = Command::new(&self.ip).args(["netns", "del", ns]).output();
            if !out.is_ok_and(|out| out.status.success()) {
                eprintln!("multihost: could not delete namespace {ns}");
            }
        }
    }
}

/// The client's `key=value` summary.
struct Summary(HashMap<String, String>);

impl Summary {
    fn parse(line: &str) -> Summary {
        Summary(
            line.split_whitespace()
                .filter_map(|pair| pair.split_once('='))
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    fn num(&self, key: &str) -> u64 {
        self.0
            .get(key)
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("summary has no number `{key}`: {:?}", self.0))
    }

    fn ms(&self, key: &str) -> Duration {
        Duration::from_millis(self.num(key))
    }
}

// ---------------------------------------------------------------------------------------
// The roles.

/// Worker role: serve `Worker` on `RPC_NETNS_ADDR` until killed; says where it listens.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn role_worker() {
    if std::env::var(ROLE_VAR).as_deref() != Ok("role_worker") {
        return;
    }
    let name = std::env::var("RPC_NETNS_NAME").expect("RPC_NETNS_NAME");
    let addr = std::env::var("RPC_NETNS_ADDR").expect("RPC_NETNS_ADDR");
    let hold = Arc::new(AtomicBool::new(false));
    let worker = WorkerImpl {
        name,
        executed: AtomicU64::new(0),
        log: Mutex::new(Vec::new()),
        hold: hold.clone(),
        held: AtomicU64::new(0),
    };
    let server = rpc::Server::builder()
        .keepalive_interval(Some(KEEPALIVE_INTERVAL))
        .keepalive_timeout(KEEPALIVE_TIMEOUT)
        .serve(worker.into_service())
        .bind(addr.as_str())
        .await
        .expect("bind");
    let local = server.local_addr().expect("a TCP address");
    println!("{TAG}listening {local}");
    // Commands on stdin; its end (the orchestrator is gone) ends the worker.
    let commands = async {
        use tokio::io::AsyncBufReadExt;
        let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            match line.trim() {
                "hold" => hold.store(true, Ordering::Relaxed),
                other => panic!("unknown worker command {other:?}"),
            }
        }
    };
    tokio::select! {
        () = server.run() => {}
        () = commands => {}
    }
}

/// One call's record in the client role.
struct Record {
    idempotent: bool,
    start: Instant,
    end: Instant,
    outcome: Outcome,
}

enum Outcome {
    Ok,
    Wrong(String),
    Duplicate,
    Err(&'static str, String),
}

/// What the client role shares between its loops and its command reader.
struct Run {
    stop: AtomicBool,
    next_job: AtomicU64,
    next_seq: AtomicU64,
    records: Mutex<Vec<Record>>,
    answered_jobs: Mutex<HashSet<u64>>,
    progress: Mutex<Progress>,
}

/// Counters behind the events the orchestrator waits for.
#[derive(Default)]
struct Progress {
    /// Answers of any call, and of jobs alone, per worker.
    answers: HashMap<String, u64>,
    jobs_answered: HashMap<String, u64>,
    warm: bool,
    /// Jobs completed when a worker was killed; `moved` once MOVED_JOBS more completed.
    killed_at: Option<u64>,
    moved: bool,
    jobs_done: u64,
    /// The black-holed worker and when it went and came back.
    hole: Option<String>,
    down_at: Option<Instant>,
    up_at: Option<Instant>,
    back_answers: u64,
    back: bool,
    /// The client's retries when the worker was killed and when the hole opened.
    retries_at_kill: u64,
    retries_at_down: u64,
}

impl Run {
    fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
        m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Counts an answer from `worker` and says what the orchestrator waits for.
    fn answered(&self, worker: &str, job: bool) {
        let mut p = Run::lock(&self.progress);
        *p.answers.entry(worker.to_string()).or_default() += 1;
        if job {
            p.jobs_done += 1;
            *p.jobs_answered.entry(worker.to_string()).or_default() += 1;
        }
        if !p.warm && p.answers.len() == 3 && p.answers.values().all(|&n| n >= WARM_ANSWERS) {
            p.warm = true;
            println!("{TAG}warm");
        }
        if let Some(at) = p.killed_at {
            if !p.moved && p.jobs_done >= at + MOVED_JOBS {
                p.moved = true;
                println!("{TAG}moved");
            }
        }
        if p.up_at.is_some() && p.hole.as_deref() == Some(worker) {
            p.back_answers += 1;
            if !p.back && p.back_answers >= WARM_ANSWERS {
                p.back = true;
                println!("{TAG}back");
            }
        }
    }

    fn record(&self, idempotent: bool, start: Instant, outcome: Outcome) {
        let end = Instant::now();
        Run::lock(&self.records).push(Record {
            idempotent,
            start,
            end,
            outcome,
        });
    }
}

fn classify(err: &rpc::Error) -> &'static str {
    match err {
        rpc::Error::DeadlineExceeded => "deadline",
        rpc::Error::ConnectionClosed { .. } => "lost",
        err if !err.may_have_run() => "unrun",
        _ => "other",
    }
}

async fn job_loop(run: Arc<Run>, workers: WorkerClient) {
    let mut pace = tokio::time::interval(PACE);
    pace.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while !run.stop.load(Ordering::Relaxed) {
        pace.tick().await;
        let job = run.next_job.fetch_add(1, Ordering::Relaxed);
        let (lo, hi) = (job * SPAN, job * SPAN + SPAN);
        let expected = (hi * (hi - 1) - lo * lo.saturating_sub(1)) / 2;
        let start = Instant::now();
        let outcome = match workers.sum(job, lo, hi).await {
            Ok(summed) if summed.job != job || summed.sum != expected => Outcome::Wrong(format!(
                "job {job}: got job {} sum {} from {}, expected {expected}",
                summed.job, summed.sum, summed.worker
            )),
            Ok(summed) => {
                if Run::lock(&run.answered_jobs).insert(summed.job) {
                    run.answered(&summed.worker, true);
                    Outcome::Ok
                } else {
                    Outcome::Duplicate
                }
            }
            Err(err) => Outcome::Err(classify(&err), format!("job {job}: {err}")),
        };
        run.record(true, start, outcome);
    }
}

async fn call_loop(run: Arc<Run>, workers: WorkerClient) {
    let mut pace = tokio::time::interval(PACE);
    pace.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while !run.stop.load(Ordering::Relaxed) {
        pace.tick().await;
        let seq = run.next_seq.fetch_add(1, Ordering::Relaxed);
        let start = Instant::now();
        let outcome = match workers.record(seq).await {
            Ok(worker) => {
                run.answered(&worker, false);
                Outcome::Ok
            }
            Err(err) => Outcome::Err(classify(&err), format!("record {seq}: {err}")),
        };
        run.record(false, start, outcome);
    }
}

/// Client role: a balanced client over `RPC_NETNS_WORKERS` runs jobs and non-idempotent
/// calls until told `stop` on stdin, then prints a summary.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn role_client() {
    use tokio::io::AsyncBufReadExt;
    if std::env::var(ROLE_VAR).as_deref() != Ok("role_client") {
        return;
    }
    let addrs = std::env::var("RPC_NETNS_WORKERS").expect("RPC_NETNS_WORKERS");
    let addrs: Vec<String> = addrs.split(',').map(str::to_string).collect();
    let client = rpc::Client::builder()
        .default_timeout(Some(DEADLINE))
        .connect_timeout(CONNECT_TIMEOUT)
        .reconnect_backoff(Duration::from_millis(50), Duration::from_millis(300))
        .keepalive_interval(Some(KEEPALIVE_INTERVAL))
        .keepalive_timeout(KEEPALIVE_TIMEOUT)
        .max_attempts(4)
        .balance(addrs.iter());
    let workers = WorkerClient::new(client.clone());
    let run = Arc::new(Run {
        stop: AtomicBool::new(false),
        next_job: AtomicU64::new(0),
        next_seq: AtomicU64::new(0),
        records: Mutex::new(Vec::new()),
        answered_jobs: Mutex::new(HashSet::new()),
        progress: Mutex::new(Progress::default()),
    });
    let mut loops = tokio::task::JoinSet::new();
    for _ in 0..JOB_LOOPS {
        loops.spawn(job_loop(run.clone(), workers.clone()));
    }
    for _ in 0..CALL_LOOPS {
        loops.spawn(call_loop(run.clone(), workers.clone()));
    }

    let mut commands = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    while let Ok(Some(command)) = commands.next_line().await {
        let mut p = Run::lock(&run.progress);
        match command.split_whitespace().collect::<Vec<_>>().as_slice() {
            ["kill", _] => {
                p.killed_at = Some(p.jobs_done);
                p.retries_at_kill = client.retries();
            }
            ["down", worker] => {
                p.retries_at_down = client.retries();
                p.hole = Some(worker.to_string());
                p.down_at = Some(Instant::now());
            }
            ["up", _] => p.up_at = Some(Instant::now()),
            ["stop"] => break,
            other => panic!("unknown command {other:?}"),
        }
        // The orchestrator acts only once the client has taken note.
        println!("{TAG}noted {command}");
    }
    run.stop.store(true, Ordering::Relaxed);
    while let Some(done) = loops.join_next().await {
        done.expect("a workload loop panicked");
    }

    let mut out = String::new();
    let mut add = |key: &str, value: String| out.push_str(&format!(" {key}={value}"));
    let records = std::mem::take(&mut *Run::lock(&run.records));
    let (down, up, back_answers, answers, retries_kill) = {
        let p = Run::lock(&run.progress);
        (
            p.down_at.expect("the hole opened"),
            p.up_at.expect("the hole closed"),
            p.back_answers,
            p.jobs_answered.clone(),
            p.retries_at_down - p.retries_at_kill,
        )
    };
    let jobs: Vec<&Record> = records.iter().filter(|r| r.idempotent).collect();
    let calls: Vec<&Record> = records.iter().filter(|r| !r.idempotent).collect();
    let count =
        |rs: &[&Record], f: &dyn Fn(&Outcome) -> bool| rs.iter().filter(|r| f(&r.outcome)).count();
    let first_error = |rs: &[&Record]| {
        rs.iter()
            .find_map(|r| match &r.outcome {
                Outcome::Err(_, text) | Outcome::Wrong(text) => Some(text.replace(' ', "_")),
                _ => None,
            })
            .unwrap_or_else(|| "none".into())
    };
    add("jobs", jobs.len().to_string());
    add(
        "jobs_ok",
        count(&jobs, &|o| matches!(o, Outcome::Ok)).to_string(),
    );
    add(
        "jobs_wrong",
        count(&jobs, &|o| matches!(o, Outcome::Wrong(_))).to_string(),
    );
    add(
        "jobs_duplicate",
        count(&jobs, &|o| matches!(o, Outcome::Duplicate)).to_string(),
    );
    add(
        "jobs_failed",
        count(&jobs, &|o| matches!(o, Outcome::Err(..))).to_string(),
    );
    add("calls", calls.len().to_string());
    add(
        "calls_ok",
        count(&calls, &|o| matches!(o, Outcome::Ok)).to_string(),
    );
    for kind in ["lost", "unrun", "deadline", "other"] {
        add(
            &format!("calls_{kind}"),
            count(&calls, &|o| matches!(o, Outcome::Err(k, _) if *k == kind)).to_string(),
        );
    }
    let max_call = records
        .iter()
        .map(|r| r.end - r.start)
        .max()
        .unwrap_or_default();
    add("max_call_ms", max_call.as_millis().to_string());
    // Calls lost on the black-holed host's silent connection: those that failed as lost
    // between the hole opening and closing (the killed worker was gone before).
    let hole_lost: Vec<&&Record> = calls
        .iter()
        .filter(|r| r.end >= down && r.end < up && matches!(r.outcome, Outcome::Err("lost", _)))
        .collect();
    add("hole_lost", hole_lost.len().to_string());
    let eject = hole_lost
        .iter()
        .map(|r| r.end - down)
        .max()
        .unwrap_or(Duration::MAX);
    add(
        "eject_ms",
        eject.as_millis().min(u128::from(u64::MAX)).to_string(),
    );
    // Once ejected, no call should wait on the host for more than a dial's timeout.
    let ejected_max = records
        .iter()
        .filter(|r| r.start >= down + KEEPALIVE_BOUND + SLACK && r.start < up)
        .map(|r| r.end - r.start)
        .max()
        .unwrap_or_default();
    add("ejected_max_ms", ejected_max.as_millis().to_string());
    add("back_answers", back_answers.to_string());
    add("retries", client.retries().to_string());
    add("retries_kill", retries_kill.to_string());
    for (i, addr) in addrs.iter().enumerate() {
        let name = format!("w{}", i + 1);
        add(
            &format!("answered_{name}"),
            answers.get(&name).copied().unwrap_or(0).to_string(),
        );
        // Each worker's own count of jobs it ran (none from the killed one).
        let direct = rpc::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .default_timeout(Some(Duration::from_secs(2)))
            .connect(addr.as_str())
            .await;
        let executed = match direct {
            Ok(direct) => WorkerClient::new(direct)
                .executed()
                .await
                .map_or("none".into(), |n| n.to_string()),
            Err(_) => "none".into(),
        };
        add(&format!("executed_{name}"), executed);
    }
    add("first_job_error", first_error(&jobs));
    add("first_call_error", first_error(&calls));
    println!("{TAG}summary{out}");
}
