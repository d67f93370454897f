//! The `rpc` binary, run as a process against a calculator server in this process.

mod support;

use support::{rpc, rpc_with_input, start};

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_shows_every_service_and_method_kind() {
    let server = start().await;
    let run = rpc(&["list", &server.addr.to_string()]).await;
    assert!(run.ok, "{}", run.stderr);
    let lines: Vec<&str> = run.stdout.lines().collect();
    for expected in ["Calculator", "Counter", "rpc.Health", "rpc.Reflection"] {
        assert!(lines.contains(&expected), "{}", run.stdout);
    }
    let add = lines
        .iter()
        .find(|l| l.trim_start().starts_with("add "))
        .expect("add");
    assert!(add.ends_with("unary"), "{add}");
    let count = lines
        .iter()
        .find(|l| l.trim_start().starts_with("count "))
        .expect("count");
    assert!(count.ends_with("server streaming"), "{count}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn describe_shows_the_signature_and_the_types_it_names() {
    let server = start().await;
    let run = rpc(&["describe", &server.addr.to_string(), "Calculator.add"]).await;
    assert!(run.ok, "{}", run.stderr);
    assert!(
        run.stdout.starts_with("Calculator.add (unary)"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout
            .contains("fn add(a: i64, b: i64) -> Result<i64, MathError>"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout
            .contains("enum MathError { DivisionByZero, Overflow }"),
        "{}",
        run.stdout
    );

    let run = rpc(&["describe", &server.addr.to_string(), "Calculator.mul"]).await;
    assert!(!run.ok);
    assert!(
        run.stderr.contains("has no method `Calculator.mul`"),
        "{}",
        run.stderr
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn call_turns_json_into_a_call_and_the_reply_into_json() {
    let server = start().await;
    let addr = server.addr.to_string();
    let run = rpc(&["call", &addr, "Calculator.add", "[2, 3]"]).await;
    assert!(run.ok, "{}", run.stderr);
    assert_eq!(run.stdout, "{\"Ok\":5}\n");

    // The application's error is the reply's value, not a failure of the call.
    let run = rpc(&["call", &addr, "Calculator.div", "[1, 0]"]).await;
    assert!(run.ok, "{}", run.stderr);
    assert_eq!(run.stdout, "{\"Err\":\"DivisionByZero\"}\n");

    let run = rpc(&["call", &addr, "Counter.points", r#"[["a", "b"]]"#]).await;
    assert!(run.ok, "{}", run.stderr);
    assert_eq!(
        run.stdout,
        "{\"a\":{\"x\":0,\"y\":0},\"b\":{\"x\":1,\"y\":-1}}\n"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_that_does_not_fit_is_refused_naming_its_place() {
    let server = start().await;
    let addr = server.addr.to_string();
    let run = rpc(&["call", &addr, "Calculator.add", r#"[2, "3"]"#]).await;
    assert!(!run.ok);
    assert_eq!(run.stderr, "error: $[1]: expected i64, got string\n");
    assert!(run.stdout.is_empty());

    let run = rpc(&["call", &addr, "Calculator.add", "[2]"]).await;
    assert!(!run.ok);
    assert_eq!(
        run.stderr,
        "error: $: expected an array of 2 values, got 1\n"
    );

    let run = rpc(&["call", &addr, "Calculator.add", "[2,"]).await;
    assert!(!run.ok);
    assert!(
        run.stderr
            .starts_with("error: the arguments are not valid JSON"),
        "{}",
        run.stderr
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_stream_prints_one_line_per_item() {
    let server = start().await;
    let run = rpc(&["call", &server.addr.to_string(), "Counter.count", "[3]"]).await;
    assert!(run.ok, "{}", run.stderr);
    assert_eq!(run.stdout, "0\n1\n2\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_and_timeout_reach_the_call() {
    let server = start().await;
    let addr = server.addr.to_string();
    let run = rpc(&[
        "call",
        &addr,
        "Counter.header",
        r#"["trace"]"#,
        "--metadata",
        "trace=abc",
        "-m",
        "x=y",
    ])
    .await;
    assert!(run.ok, "{}", run.stderr);
    assert_eq!(run.stdout, "\"abc\"\n");
    let run = rpc(&["call", &addr, "Counter.header", r#"["trace"]"#]).await;
    assert_eq!(run.stdout, "null\n");

    let run = rpc(&[
        "--timeout",
        "50ms",
        "call",
        &addr,
        "Calculator.slow_add",
        "[1, 1, 5000]",
    ])
    .await;
    assert!(!run.ok);
    assert!(run.stderr.contains("deadline exceeded"), "{}", run.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reflection_service_called_through_its_own_shapes_gives_its_typed_answer() {
    // `rpc call` decodes by the reflected shapes; `rpc describe --json` prints the answer
    // decoded by its Rust type. The two must agree, on a type as rich as a description.
    let server = start().await;
    let addr = server.addr.to_string();
    let by_shapes = rpc(&[
        "call",
        &addr,
        "rpc.Reflection.describe",
        r#"["Calculator", "add"]"#,
    ])
    .await;
    assert!(by_shapes.ok, "{}", by_shapes.stderr);
    let typed = rpc(&["describe", "--json", &addr, "Calculator.add"]).await;
    assert!(typed.ok, "{}", typed.stderr);
    let by_shapes: serde_json::Value = serde_json::from_str(&by_shapes.stdout).expect("json");
    let typed: serde_json::Value = serde_json::from_str(&typed.stdout).expect("json");
    assert_eq!(by_shapes, typed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_stream_takes_its_items_as_json_lines_from_stdin_or_a_file() {
    let server = start().await;
    let addr = server.addr.to_string();
    let items = "{\"x\": 1, \"y\": 0}\n\n{\"x\": 2, \"y\": 5}\n{\"x\": 39, \"y\": -1}\n";
    let run = rpc_with_input(&["call", &addr, "Counter.sum_x", "[100]"], items).await;
    assert!(run.ok, "{}", run.stderr);
    assert_eq!(run.stdout, "142\n");

    let dir = std::env::temp_dir().join(format!("rpc-cli-items-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let file = dir.join("points.jsonl");
    std::fs::write(&file, items).expect("write items");
    let run = rpc(&[
        "call",
        &addr,
        "Counter.sum_x",
        "[0]",
        "--items",
        file.to_str().expect("utf-8 path"),
    ])
    .await;
    let _ = std::fs::remove_dir_all(&dir);
    assert!(run.ok, "{}", run.stderr);
    assert_eq!(run.stdout, "42\n");

    // No items: an empty stream.
    let run = rpc(&["call", &addr, "Counter.sum_x", "[7]"]).await;
    assert!(run.ok, "{}", run.stderr);
    assert_eq!(run.stdout, "7\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bidirectional_call_prints_each_reply_item() {
    let server = start().await;
    let run = rpc_with_input(
        &["call", &server.addr.to_string(), "Counter.doubled"],
        "1\n-4\n21\n",
    )
    .await;
    assert!(run.ok, "{}", run.stderr);
    assert_eq!(run.stdout, "2\n-8\n42\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_item_that_does_not_fit_is_refused_naming_its_line() {
    let server = start().await;
    let addr = server.addr.to_string();
    let run = rpc_with_input(
        &["call", &addr, "Counter.sum_x", "[0]"],
        "{\"x\": 1, \"y\": 2}\n{\"x\": \"one\", \"y\": 2}\n",
    )
    .await;
    assert!(!run.ok);
    assert!(run.stderr.contains("item on line 2: "), "{}", run.stderr);
    assert!(run.stderr.contains("$.x"), "{}", run.stderr);

    let run = rpc_with_input(&["call", &addr, "Counter.doubled"], "1\n[2\n").await;
    assert!(!run.ok);
    assert!(
        run.stderr.contains("item on line 2 is not valid JSON"),
        "{}",
        run.stderr
    );

    // Items for a method that takes none.
    let run = rpc(&["call", &addr, "Calculator.add", "[1, 2]", "--items", "-"]).await;
    assert!(!run.ok);
    assert!(
        run.stderr.contains("takes no stream from the client"),
        "{}",
        run.stderr
    );
}
