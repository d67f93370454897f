//! The `rpc` binary, run as a process against a calculator server in this process.

mod support;

use support::{rpc, start};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ping_reports_each_round_trip_and_a_summary() {
    let server = start().await;
    let addr = server.addr.to_string();
    let run = rpc(&["ping", &addr, "--count", "3", "--interval", "0ms"]).await;
    assert!(run.ok, "{}", run.stderr);
    let pongs: Vec<&str> = run
        .stdout
        .lines()
        .filter(|l| l.starts_with("pong from"))
        .collect();
    assert_eq!(pongs.len(), 3, "{}", run.stdout);
    assert!(pongs[2].contains("seq=2 time="), "{}", run.stdout);
    assert!(
        run.stdout.contains("3 pings: min/avg/max = "),
        "{}",
        run.stdout
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ping_of_nothing_fails_clearly() {
    // A port that was just free: bound, read, released.
    let addr = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("addr").to_string()
    };
    let run = rpc(&["ping", &addr, "--count", "1"]).await;
    assert!(!run.ok);
    assert!(run.stderr.starts_with("error: "), "{}", run.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_of_the_server_and_of_services() {
    let server = start().await;
    let addr = server.addr.to_string();
    let run = rpc(&["health", &addr]).await;
    assert!(run.ok, "{}", run.stderr);
    assert_eq!(run.stdout.trim(), "SERVING");

    let run = rpc(&["health", &addr, "Calculator"]).await;
    assert!(run.ok, "{}", run.stderr);
    assert_eq!(run.stdout.trim(), "SERVING");

    let run = rpc(&["health", &addr, "Nope"]).await;
    assert!(!run.ok);
    assert_eq!(run.stdout.trim(), "UNKNOWN");
    assert_eq!(run.stderr.trim(), "error: Nope is UNKNOWN");

    assert!(server.handle.set_serving("Calculator", false));
    let run = rpc(&["health", &addr, "Calculator"]).await;
    assert!(!run.ok);
    assert_eq!(run.stdout.trim(), "NOT_SERVING");
}
