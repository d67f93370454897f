//! `rpc-bench`: run with no subcommand to benchmark rpc, tarpc and floor (see README.md).
//!
//! ```text
//! rpc-bench [--secs 3] [--warm 1] [--reps 3]
//!           [--workloads lat,pipe,conns,bulk,stream,stream-small,balanced,mem]
//!           [--systems rpc,tarpc,floor,rpc-tls,rpc-payload] [--no-save]
//! rpc-bench server --system S [--slow-ms N]         (internal)
//! rpc-bench client --system S --workload W --addr A [--warm 1] [--secs 3]   (internal)
//! rpc-bench client --system rpc --workload balanced --policy one|p2c|rr --addrs A,B,C
//!           [--warm 1] [--secs 3]                   (internal)
//! rpc-bench memclient --system S --addr A --conns N --calls M               (internal)
//! ```

use std::net::SocketAddr;

use std::time::Duration;

use rpc_bench::balanced::{self, Policy};
use rpc_bench::load::Workload;
use rpc_bench::orchestrate::{self, Options};
use rpc_bench::{alloc, System};

#[global_allocator]
static GLOBAL: alloc::Counting = alloc::Counting;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let flag = |name: &str| -> Option<String> {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1).cloned())
    };
    let has = |name: &str| args.iter().any(|a| a == name);
    let system = || {
        let s = flag("--system").unwrap_or_else(|| usage("--system is required"));
        System::parse(&s).unwrap_or_else(|| usage(&format!("unknown system {s}")))
    };
    let addr = || -> SocketAddr {
        flag("--addr")
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| usage("--addr IP:PORT is required"))
    };
    let num = |name: &str, default: f64| -> f64 {
        flag(name).map_or(default, |v| {
            v.parse()
                .unwrap_or_else(|_| usage(&format!("{name} takes a number")))
        })
    };
    match args.first().map(String::as_str) {
        Some("server") => {
            let slow = flag("--slow-ms").map(|ms| {
                ms.parse()
                    .map(Duration::from_millis)
                    .unwrap_or_else(|_| usage("--slow-ms takes a whole number of milliseconds"))
            });
            rpc_bench::server_main(system(), slow);
        }
        Some("client") if flag("--workload").as_deref() == Some(balanced::NAME) => {
            if system() != System::Rpc {
                usage("the balanced workload is for the rpc system only");
            }
            let policy = flag("--policy")
                .and_then(|p| Policy::parse(&p))
                .unwrap_or_else(|| usage("--policy one|p2c|rr is required"));
            let addrs: Vec<SocketAddr> = flag("--addrs")
                .unwrap_or_else(|| usage("--addrs IP:PORT,... is required"))
                .split(',')
                .map(|a| {
                    a.parse()
                        .unwrap_or_else(|_| usage(&format!("--addrs: {a} is not IP:PORT")))
                })
                .collect();
            balanced::client_main(policy, addrs, num("--warm", 1.0), num("--secs", 3.0));
        }
        Some("client") => {
            let w = flag("--workload").unwrap_or_else(|| usage("--workload is required"));
            let w = Workload::parse(&w).unwrap_or_else(|| usage(&format!("unknown workload {w}")));
            rpc_bench::load::client_main(
                system(),
                w,
                addr(),
                num("--warm", 1.0),
                num("--secs", 3.0),
            );
        }
        Some("memclient") => rpc_bench::mem::client_main(
            system(),
            addr(),
            num("--conns", 10_000.0) as usize,
            num("--calls", 0.0) as usize,
        ),
        Some("-h" | "--help") => usage(""),
        _ => {
            let mut workloads = Vec::new();
            let (mut mem, mut run_balanced) = (true, true);
            if let Some(list) = flag("--workloads") {
                (mem, run_balanced) = (false, false);
                for w in list.split(',') {
                    if w == "mem" {
                        mem = true;
                    } else if w == balanced::NAME {
                        run_balanced = true;
                    } else {
                        workloads.extend(
                            Workload::parse_group(w)
                                .unwrap_or_else(|| usage(&format!("unknown workload {w}"))),
                        );
                    }
                }
            } else {
                workloads = Workload::ALL.to_vec();
            }
            let systems = match flag("--systems") {
                Some(list) => list
                    .split(',')
                    .map(|s| {
                        System::parse(s).unwrap_or_else(|| usage(&format!("unknown system {s}")))
                    })
                    .collect(),
                None => System::ALL.to_vec(),
            };
            let opts = Options {
                secs: num("--secs", 3.0),
                warm: num("--warm", 1.0),
                reps: (num("--reps", 3.0) as usize).max(1),
                workloads,
                systems,
                mem,
                balanced: run_balanced,
                save: !has("--no-save"),
                command: std::iter::once("cargo run -p rpc-bench --release --".to_string())
                    .chain(args.iter().cloned())
                    .collect::<Vec<_>>()
                    .join(" ")
                    .trim_end_matches(" --")
                    .to_string(),
            };
            if has("--allocs") {
                eprintln!("note: --allocs is no longer needed: allocations are always counted");
            }
            let fds = rpc_bench::raise_fd_limit();
            if opts.mem && fds < rpc_bench::mem::IDLE_CONNS as u64 + 1000 {
                eprintln!("warning: open-file limit is {fds}; the 10,000-connection test may fail (raise `ulimit -Hn`)");
            }
            let report = orchestrate::run(&opts);
            println!("{report}");
            if opts.save {
                match orchestrate::save(&report) {
                    Ok(path) => eprintln!("saved {}", path.display()),
                    Err(err) => eprintln!("could not save results: {err}"),
                }
            }
        }
    }
}

fn usage(problem: &str) -> ! {
    if !problem.is_empty() {
        eprintln!("rpc-bench: {problem}");
    }
    eprintln!(
        "usage: rpc-bench [--secs 3] [--warm 1] [--reps 3] \
         [--workloads lat,pipe,conns,bulk,stream,stream-small,balanced,mem] \
         [--systems rpc,tarpc,floor,rpc-tls,rpc-payload] [--no-save]\n\
         (stream = stream-down,stream-up: 64 KiB items; \
         stream-small = stream-small-down,stream-small-up: 32-byte items)"
    );
    std::process::exit(if problem.is_empty() { 0 } else { 2 });
}
