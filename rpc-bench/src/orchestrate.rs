//! The orchestrator: starts server and client as separate processes (this same executable,
//! re-run with `server ...` and `client ...`), collects results and CPU time, prints and
//! saves the table.

use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::balanced;
use crate::load::{LoadResult, Workload};
use crate::mem::{self, MemResult};
use crate::proc_stat;
use crate::System;

/// Options of a benchmark run.
#[derive(Debug, Clone)]
pub struct Options {
    /// Seconds measured per run.
    pub secs: f64,
    /// Seconds of warm-up per run.
    pub warm: f64,
    /// Repetitions of every (workload, system).
    pub reps: usize,
    /// Workloads to run.
    pub workloads: Vec<Workload>,
    /// Systems to run.
    pub systems: Vec<System>,
    /// Whether to run the memory-at-scale test.
    pub mem: bool,
    /// Whether to run the `balanced` workload (one client over three servers; rpc only).
    pub balanced: bool,
    /// Whether to save the table under `results/`.
    pub save: bool,
    /// The command line, for the report.
    pub command: String,
}

/// One measurement.
#[derive(Debug, Clone)]
pub struct Sample {
    /// What the client measured.
    pub load: LoadResult,
    /// CPU of the client process during the measuring window.
    pub client_cpu_ns: u64,
    /// CPU of the server process during the measuring window.
    pub server_cpu_ns: u64,
    /// Client allocations during the window.
    pub client_allocs: Option<u64>,
    /// Server allocations during the window.
    pub server_allocs: Option<u64>,
}

/// A child process that is killed when dropped.
pub struct Proc {
    /// The child.
    pub child: Child,
    /// Its stdin (closing it ends a server).
    pub stdin: Option<ChildStdin>,
    /// Its stdout, line by line.
    pub stdout: BufReader<ChildStdout>,
}

impl Proc {
    /// Starts this executable with `args`.
    pub fn start(args: &[String]) -> Proc {
        let exe = std::env::current_exe().expect("current_exe");
        let mut cmd = Command::new(exe);
        cmd.args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let mut child = cmd.spawn().expect("spawn child");
        let stdin = child.stdin.take();
        let stdout = BufReader::new(child.stdout.take().expect("stdout"));
        Proc {
            child,
            stdin,
            stdout,
        }
    }

    /// The child's pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The next line of stdout, without its newline; `None` at end of stream.
    pub fn line(&mut self) -> Option<String> {
        let mut line = String::new();
        match self.stdout.read_line(&mut line) {
            Ok(0) | Err(_) => None,
            Ok(_) => Some(line.trim_end().to_string()),
        }
    }

    /// Sends one line on stdin.
    pub fn send(&mut self, line: &str) {
        if let Some(stdin) = &mut self.stdin {
            let _ = writeln!(stdin, "{line}");
            let _ = stdin.flush();
        }
    }

    /// Kills the process after `after` unless [`Watchdog::disarm`] is called first.
    pub fn watchdog(&self, after: Duration) -> Watchdog {
        let pid = self.pid() as libc::pid_t;
        let armed = Arc::new(AtomicBool::new(true));
        let flag = armed.clone();
        std::thread::spawn(move || {
            std::thread::sleep(after);
            if flag.load(Ordering::Acquire) {
                eprintln!("watchdog: killing pid {pid} after {after:?}");
                // SAFETY: kill has no memory-safety preconditions; the pid is our child.
                unsafe {
                    libc::kill(pid, libc::SIGKILL);
                }
            }
        });
        Watchdog(armed)
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stdin = None;
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// See [`Proc::watchdog`].
pub struct Watchdog(Arc<AtomicBool>);

impl Watchdog {
    /// Stops the watchdog.
    pub fn disarm(self) {
        self.0.store(false, Ordering::Release);
    }
}

/// Starts a server of `system` and returns it with its port.
pub fn start_server(system: System) -> (Proc, u16) {
    let mut server = Proc::start(&["server".into(), "--system".into(), system.name().into()]);
    let port = announced_port(&mut server);
    (server, port)
}

/// Starts a server of `system` with `extra` arguments and returns it with its port.
pub fn start_server_with(system: System, extra: &[String]) -> (Proc, u16) {
    let mut args = vec!["server".into(), "--system".into(), system.name().into()];
    args.extend_from_slice(extra);
    let mut server = Proc::start(&args);
    let port = announced_port(&mut server);
    (server, port)
}

fn announced_port(server: &mut Proc) -> u16 {
    let port = loop {
        let line = server
            .line()
            .expect("server exited before announcing its port");
        if let Some(port) = line.strip_prefix("PORT ") {
            break port.parse::<u16>().expect("port");
        }
    };
    port
}

fn server_allocs(server: &mut Proc) -> Option<u64> {
    server.send("stat");
    let line = server.line()?;
    line.strip_prefix("ALLOCS ")?.parse().ok()
}

/// Runs one (system, workload) measurement with fresh server and client processes.
pub fn measure(system: System, workload: Workload, opts: &Options) -> Option<Sample> {
    let (mut server, port) = start_server(system);
    let mut client = Proc::start(&[
        "client".into(),
        "--system".into(),
        system.name().into(),
        "--workload".into(),
        workload.name().into(),
        "--addr".into(),
        format!("127.0.0.1:{port}"),
        "--warm".into(),
        opts.warm.to_string(),
        "--secs".into(),
        opts.secs.to_string(),
    ]);
    let dog = client.watchdog(Duration::from_secs_f64(opts.warm + opts.secs + 60.0));
    let (spid, cpid) = (server.pid(), client.pid());
    let mut start = None;
    let mut end = None;
    let mut result = None;
    while let Some(line) = client.line() {
        if let Some(n) = line.strip_prefix("WARM ") {
            let cpu = (proc_stat::cpu_ns(spid), proc_stat::cpu_ns(cpid));
            let allocs = (server_allocs(&mut server), n.parse::<u64>().ok());
            start = Some((cpu, allocs));
        } else if let Some(n) = line.strip_prefix("END ") {
            let cpu = (proc_stat::cpu_ns(spid), proc_stat::cpu_ns(cpid));
            let allocs = (server_allocs(&mut server), n.parse::<u64>().ok());
            end = Some((cpu, allocs));
        } else if line.starts_with("RESULT ") {
            result = LoadResult::parse(&line);
            break;
        }
    }
    dog.disarm();
    let (Some(load), Some((c0, a0)), Some((c1, a1))) = (result, start, end) else {
        eprintln!(
            "{} {}: client failed (no result)",
            system.name(),
            workload.name()
        );
        return None;
    };
    let diff = |a: Option<u64>, b: Option<u64>| Some(b?.saturating_sub(a?));
    let (sa, ca) = (diff(a0.0, a1.0), diff(a0.1, a1.1));
    drop(client);
    drop(server);
    Some(Sample {
        load,
        server_cpu_ns: c1.0.saturating_sub(c0.0),
        client_cpu_ns: c1.1.saturating_sub(c0.1),
        client_allocs: ca,
        server_allocs: sa,
    })
}

/// Runs everything `opts` asks for and returns the markdown report.
pub fn run(opts: &Options) -> String {
    let mut samples: Vec<(Workload, System, Sample)> = Vec::new();
    if opts.systems.contains(&System::RpcTls) {
        match crate::rpc_sys::prepare_tls() {
            Ok(dir) => eprintln!("[rpc-tls] certificates in {}", dir.display()),
            Err(err) => eprintln!("[rpc-tls] cannot make certificates: {err}"),
        }
    }
    for &workload in &opts.workloads {
        let systems = systems_of(workload, &opts.systems);
        if systems.len() < opts.systems.len() {
            eprintln!(
                "[{}] not for: {}",
                workload.name(),
                opts.systems
                    .iter()
                    .filter(|s| !systems.contains(s))
                    .map(|s| s.name())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        for rep in 0..opts.reps {
            // Interleave systems; rotate the order each repetition.
            for k in 0..systems.len() {
                let system = systems[(k + rep) % systems.len()];
                eprint!(
                    "[{} rep {}/{}] {:<5} ... ",
                    workload.name(),
                    rep + 1,
                    opts.reps,
                    system.name()
                );
                match measure(system, workload, opts) {
                    Some(s) => {
                        eprintln!(
                            "{:>10.0} calls/s  {:>6.0} MB/s  p50 {:>7.1} us  p99 {:>7.1} us  cpu {:.2} us/call  allocs/call {:.2} + {:.2}  err {} wrong {}",
                            calls_per_s(&s),
                            mb_per_s(&s),
                            s.load.p50_ns as f64 / 1e3,
                            s.load.p99_ns as f64 / 1e3,
                            cpu_us_per_call(&s),
                            client_allocs_per_call(&s),
                            server_allocs_per_call(&s),
                            s.load.errors,
                            s.load.wrong
                        );
                        samples.push((workload, system, s));
                    }
                    None => eprintln!("failed"),
                }
            }
        }
    }
    let balanced = if opts.balanced && opts.systems.contains(&System::Rpc) {
        balanced::run(opts)
    } else {
        if opts.balanced {
            eprintln!(
                "[{}] skipped: it measures the rpc system only",
                balanced::NAME
            );
        }
        Vec::new()
    };
    let mem_results: Vec<(System, MemResult)> = if opts.mem {
        opts.systems
            .iter()
            .filter(|&&system| !matches!(system, System::RpcTls | System::RpcPayload))
            .filter_map(|&system| {
                eprintln!("[mem] {} ...", system.name());
                let r = mem::measure(system);
                match &r {
                    Some(r) => eprintln!("[mem] {} {r:?}", system.name()),
                    None => eprintln!("[mem] {} failed", system.name()),
                }
                r.map(|r| (system, r))
            })
            .collect()
    } else {
        Vec::new()
    };
    report(opts, &samples, &balanced, &mem_results)
}

/// The systems of `systems` that run `workload` ([`System::runs`]).
pub fn systems_of(workload: Workload, systems: &[System]) -> Vec<System> {
    systems
        .iter()
        .copied()
        .filter(|&s| s.runs(workload))
        .collect()
}

fn calls_per_s(s: &Sample) -> f64 {
    s.load.calls as f64 / (s.load.elapsed_ns as f64 / 1e9)
}

fn mb_per_s(s: &Sample) -> f64 {
    s.load.bytes as f64 / 1e6 / (s.load.elapsed_ns as f64 / 1e9)
}

fn cpu_us_per_call(s: &Sample) -> f64 {
    (s.client_cpu_ns + s.server_cpu_ns) as f64 / 1e3 / s.load.calls.max(1) as f64
}

fn client_allocs_per_call(s: &Sample) -> f64 {
    s.client_allocs.unwrap_or(0) as f64 / s.load.calls.max(1) as f64
}

fn server_allocs_per_call(s: &Sample) -> f64 {
    s.server_allocs.unwrap_or(0) as f64 / s.load.calls.max(1) as f64
}

/// (median, min, max) of `v`; `None` if empty.
pub(crate) fn median_min_max(mut v: Vec<f64>) -> Option<(f64, f64, f64)> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    let med = if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    };
    Some((med, v[0], v[n - 1]))
}

/// A figure with three or four significant digits: `1.21M`, `570.0k`, `452`, `83.7`.
pub(crate) fn fmt_num(x: f64) -> String {
    if x >= 1e6 {
        format!("{:.2}M", x / 1e6)
    } else if x >= 1e4 {
        format!("{:.1}k", x / 1e3)
    } else if x >= 100.0 {
        format!("{x:.0}")
    } else if x >= 10.0 {
        format!("{x:.1}")
    } else {
        format!("{x:.2}")
    }
}

type Metric = (&'static str, fn(&Sample) -> f64);

fn metrics(workload: Workload) -> Vec<Metric> {
    let mut m: Vec<Metric> = match workload {
        Workload::Lat | Workload::Pipe => vec![
            ("calls/s (higher is better)", calls_per_s),
            ("p50 us", |s| s.load.p50_ns as f64 / 1e3),
            ("p99 us", |s| s.load.p99_ns as f64 / 1e3),
        ],
        Workload::Conns => vec![("calls/s (higher is better)", calls_per_s)],
        Workload::Bulk => vec![
            ("MB/s (higher is better)", mb_per_s),
            ("p50 ms", |s| s.load.p50_ns as f64 / 1e6),
        ],
        Workload::StreamDown | Workload::StreamUp => vec![
            ("MB/s (higher is better)", mb_per_s),
            ("items/s", calls_per_s),
        ],
        Workload::SmallDown | Workload::SmallUp => {
            vec![("items/s (higher is better)", calls_per_s)]
        }
    };
    if workload.stream().is_some() {
        m.push(("CPU us/item, both processes", cpu_us_per_call));
        m.push(("allocs/item, client", client_allocs_per_call));
        m.push(("allocs/item, server", server_allocs_per_call));
    } else {
        m.push(("CPU us/call, both processes", cpu_us_per_call));
        m.push(("allocs/call, client", client_allocs_per_call));
        m.push(("allocs/call, server", server_allocs_per_call));
    }
    m
}

fn median_of(
    samples: &[(Workload, System, Sample)],
    w: Workload,
    sys: System,
    f: fn(&Sample) -> f64,
) -> Option<(f64, f64, f64)> {
    median_min_max(
        samples
            .iter()
            .filter(|(sw, ss, _)| *sw == w && *ss == sys)
            .map(|(_, _, s)| f(s))
            .collect(),
    )
}

fn report(
    opts: &Options,
    samples: &[(Workload, System, Sample)],
    balanced: &[(usize, usize, balanced::Sample)],
    mem_results: &[(System, MemResult)],
) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# rpc-bench results, {}\n",
        crate::orchestrate::now_utc()
    );
    let _ = writeln!(out, "Command: `{}`  ", opts.command);
    let _ = writeln!(out, "Machine: {}  ", machine());
    let _ = writeln!(
        out,
        "Each cell: median of {} run(s) of {} s after {} s warm-up (min-max in brackets); server and client are separate processes on 127.0.0.1 sharing the cores. CPU = user+sys of both processes during the window / calls.\n",
        opts.reps, opts.secs, opts.warm
    );
    if !opts.workloads.is_empty() {
        load_table(opts, samples, &mut out);
    }
    if !balanced.is_empty() {
        let _ = writeln!(out, "{}", balanced::table(opts, balanced));
    }
    if !mem_results.is_empty() {
        let _ = writeln!(out, "{}", mem::table(mem_results));
    }
    out
}

/// The throughput table of the single-server workloads, their error counts and targets.
fn load_table(opts: &Options, samples: &[(Workload, System, Sample)], out: &mut String) {
    let has = |s: System| opts.systems.contains(&s);
    let tls = has(System::RpcTls);
    let with_payload = has(System::RpcPayload);
    let _ = writeln!(
        *out,
        "| workload | metric | rpc | tarpc | floor | rpc/tarpc | rpc/floor |{}{}",
        if tls { " rpc-tls | rpc-tls/rpc |" } else { "" },
        if with_payload {
            " rpc-payload | rpc-payload/floor |"
        } else {
            ""
        }
    );
    let _ = writeln!(
        *out,
        "|---|---|---|---|---|---|---|{}{}",
        if tls { "---|---|" } else { "" },
        if with_payload { "---|---|" } else { "" }
    );
    for &w in &opts.workloads {
        let runs = systems_of(w, &System::ALL);
        for (name, f) in metrics(w) {
            let cell = |sys: System| -> (String, Option<f64>) {
                match median_of(samples, w, sys, f).filter(|_| has(sys)) {
                    Some((med, lo, hi)) => (
                        format!("{} ({}-{})", fmt_num(med), fmt_num(lo), fmt_num(hi)),
                        Some(med),
                    ),
                    // A system without this workload (tarpc has no streams).
                    None if has(sys) && !runs.contains(&sys) => ("n/a".into(), None),
                    None => ("-".into(), None),
                }
            };
            let (r, rv) = cell(System::Rpc);
            let (t, tv) = cell(System::Tarpc);
            let (fl, fv) = cell(System::Floor);
            // No ratio to a figure shown as 0.00 (no allocations per call, say).
            let ratio = |a: Option<f64>, b: Option<f64>| match (a, b) {
                (Some(a), Some(b)) if b >= 0.005 => format!("{:.2}x", a / b),
                _ => "-".into(),
            };
            let tls_cells = if tls {
                let (s, sv) = cell(System::RpcTls);
                format!(" {s} | {} |", ratio(sv, rv))
            } else {
                String::new()
            };
            let payload_cells = if with_payload {
                let (s, sv) = cell(System::RpcPayload);
                format!(" {s} | {} |", ratio(sv, fv))
            } else {
                String::new()
            };
            let _ = writeln!(
                *out,
                "| {} | {} | {} | {} | {} | {} | {} |{}{}",
                w.name(),
                name,
                r,
                t,
                fl,
                ratio(rv, tv),
                ratio(rv, fv),
                tls_cells,
                payload_cells
            );
        }
    }
    let _ = writeln!(*out);
    // Errors and wrong replies, summed over all runs.
    let mut bad = Vec::new();
    for &w in &opts.workloads {
        for sys in systems_of(w, &opts.systems) {
            let (mut calls, mut e, mut wr) = (0u64, 0u64, 0u64);
            for (_, _, s) in samples.iter().filter(|(sw, ss, _)| *sw == w && *ss == sys) {
                calls += s.load.calls;
                e += s.load.errors;
                wr += s.load.wrong;
            }
            bad.push(format!(
                "{} {}: {} correct {} measured, {} errors, {} wrong",
                w.name(),
                sys.name(),
                calls,
                if w.stream().is_some() {
                    "items"
                } else {
                    "calls"
                },
                e,
                wr
            ));
        }
    }
    let _ = writeln!(
        *out,
        "Every reply checked (errors and wrong replies counted from the start of warm-up): {}.\n",
        bad.join("; ")
    );
    if [System::Rpc, System::Tarpc, System::Floor]
        .iter()
        .all(|s| opts.systems.contains(s))
    {
        let _ = writeln!(*out, "{}", targets(samples));
    }
}

fn targets(samples: &[(Workload, System, Sample)]) -> String {
    let med = |w, sys, f| median_of(samples, w, sys, f).map(|m| m.0);
    let ratio = |w, a, b, f| Some(med(w, a, f)? / med(w, b, f)?);
    let p50: fn(&Sample) -> f64 = |s| s.load.p50_ns as f64;
    let checks: Vec<(&str, Option<f64>, f64, bool)> = vec![
        (
            "pipe calls/s >= 0.5x floor",
            ratio(Workload::Pipe, System::Rpc, System::Floor, calls_per_s),
            0.5,
            true,
        ),
        (
            "pipe calls/s >= 3x tarpc",
            ratio(Workload::Pipe, System::Rpc, System::Tarpc, calls_per_s),
            3.0,
            true,
        ),
        (
            "conns calls/s >= 0.5x floor",
            ratio(Workload::Conns, System::Rpc, System::Floor, calls_per_s),
            0.5,
            true,
        ),
        (
            "lat p50 <= 1.2x floor",
            ratio(Workload::Lat, System::Rpc, System::Floor, p50),
            1.2,
            false,
        ),
        (
            "bulk MB/s >= 0.9x floor",
            ratio(Workload::Bulk, System::Rpc, System::Floor, mb_per_s),
            0.9,
            true,
        ),
        (
            "pipe CPU/call <= 2.5x floor",
            ratio(Workload::Pipe, System::Rpc, System::Floor, cpu_us_per_call),
            2.5,
            false,
        ),
    ];
    let mut out = String::from("| target | measured | met? |\n|---|---|---|\n");
    for (name, value, bound, at_least) in checks {
        let (shown, met) = match value {
            Some(v) => (
                format!("{v:.2}x"),
                if at_least { v >= bound } else { v <= bound },
            ),
            None => ("-".into(), false),
        };
        let _ = writeln!(
            out,
            "| {name} | {shown} | {} |",
            if value.is_none() {
                "not run"
            } else if met {
                "yes"
            } else {
                "NO"
            }
        );
    }
    out
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines().find_map(|l| {
                l.strip_prefix("model name")
                    .map(|v| v.trim_start_matches([' ', '\t', ':']).to_string())
            })
        })
        .unwrap_or_else(|| "unknown cpu".into());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    format!("{cores} cores, {cpu}, Linux {kernel}")
}

/// `YYYY-MM-DD HH:MM UTC`, from the system clock.
pub fn now_utc() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (y, m, d) = civil(secs / 86_400);
    let rem = secs % 86_400;
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60
    )
}

/// `YYYY-MM-DD`.
pub fn today() -> String {
    now_utc()[..10].to_string()
}

/// Days since 1970-01-01 to (year, month, day), after Howard Hinnant's `civil_from_days`.
fn civil(days: u64) -> (i64, u32, u32) {
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// Writes `report` to `results/<date>.md` (or `<date>-2.md`, ... if taken); returns the path.
pub fn save(report: &str) -> std::io::Result<std::path::PathBuf> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("results");
    std::fs::create_dir_all(&dir)?;
    let date = today();
    let mut path = dir.join(format!("{date}.md"));
    let mut n = 2;
    while path.exists() {
        path = dir.join(format!("{date}-{n}.md"));
        n += 1;
    }
    std::fs::write(&path, report)?;
    Ok(path)
}
