//! A calculator server in the test process, and the `rpc` binary run against it.

// Each test file uses its own subset of these helpers.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::process::Output;

use serde::{Deserialize, Serialize};

/// The calculator's application error (a copy of `examples/calculator.rs`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) enum MathError {
    /// The divisor was zero.
    DivisionByZero,
    /// The result does not fit in an `i64`.
    Overflow,
}

/// Integer arithmetic as a service (the trait of `examples/calculator.rs`).
#[rpc::service]
pub(crate) trait Calculator {
    /// `a + b`, failing on overflow.
    async fn add(&self, a: i64, b: i64) -> Result<i64, MathError>;
    /// `a / b`, failing on a zero divisor.
    async fn div(&self, a: i64, b: i64) -> Result<i64, MathError>;
    /// Adds after a pause of `millis` milliseconds.
    async fn slow_add(&self, a: i64, b: i64, millis: u64) -> i64;
}

/// A server-streaming method next to the calculator.
#[rpc::service]
pub(crate) trait Counter {
    /// `0, 1, .., n - 1`.
    async fn count(&self, n: u64) -> rpc::Stream<u64>;
    /// The call's metadata value under `key`, if any.
    async fn header(&self, key: String) -> Option<String>;
    /// Points, to show structs and maps.
    async fn points(&self, names: Vec<String>) -> BTreeMap<String, Point>;
    /// `start` plus the sum of the points' `x`: a client stream of structs.
    async fn sum_x(&self, start: i32, points: rpc::Stream<Point>) -> i32;
    /// Each number doubled, as it arrives: both ways.
    async fn doubled(&self, numbers: rpc::Stream<i64>) -> rpc::Stream<i64>;
}

/// A struct in a reply.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Point {
    pub(crate) x: i32,
    pub(crate) y: i32,
}

struct Calc;

impl Calculator for Calc {
    async fn add(&self, a: i64, b: i64) -> Result<i64, MathError> {
        a.checked_add(b).ok_or(MathError::Overflow)
    }
    async fn div(&self, a: i64, b: i64) -> Result<i64, MathError> {
        if b == 0 {
            return Err(MathError::DivisionByZero);
        }
        a.checked_div(b).ok_or(MathError::Overflow)
    }
    async fn slow_add(&self, a: i64, b: i64, millis: u64) -> i64 {
        tokio::time::sleep(std::time::Duration::from_millis(millis)).await;
        a.wrapping_add(b)
    }
}

struct Count;

impl Counter for Count {
    async fn count(&self, n: u64) -> rpc::Stream<u64> {
        rpc::Stream::iter(0..n)
    }
    async fn header(&self, key: String) -> Option<String> {
        rpc::Context::with_current(|cx| cx.metadata().get_str(&key).map(str::to_string)).flatten()
    }
    async fn points(&self, names: Vec<String>) -> BTreeMap<String, Point> {
        names
            .into_iter()
            .zip(0..)
            .map(|(name, i)| (name, Point { x: i, y: -i }))
            .collect()
    }
    async fn sum_x(&self, start: i32, points: rpc::Stream<Point>) -> i32 {
        use futures::StreamExt;
        points
            .fold(start, |sum, point| async move {
                point.map_or(sum, |p| sum.wrapping_add(p.x))
            })
            .await
    }
    async fn doubled(&self, numbers: rpc::Stream<i64>) -> rpc::Stream<i64> {
        use futures::StreamExt;
        rpc::Stream::from_results(numbers.map(|n| n.map(|n| n.wrapping_mul(2))))
    }
}

/// A running server; stopped when dropped.
pub(crate) struct Running {
    pub(crate) addr: SocketAddr,
    pub(crate) handle: rpc::ServerHandle,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The calculator and the counter on 127.0.0.1, on a port the OS picks.
pub(crate) async fn start() -> Running {
    let server = rpc::Server::builder()
        .serve(Calc.into_service())
        .serve(Count.into_service())
        .bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = server.local_addr().expect("tcp address");
    let handle = server.handle();
    let task = tokio::spawn(server.run());
    Running { addr, handle, task }
}

/// What one run of the tool printed, and whether it succeeded.
pub(crate) struct Run {
    pub(crate) ok: bool,
    pub(crate) stdout: String,
    pub(crate) stderr: String,
}

/// Runs the `rpc` binary with `args` (its standard input empty).
pub(crate) async fn rpc(args: &[&str]) -> Run {
    rpc_with_input(args, "").await
}

/// Runs the `rpc` binary with `args`, `input` on its standard input.
pub(crate) async fn rpc_with_input(args: &[&str], input: &str) -> Run {
    use tokio::io::AsyncWriteExt;
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_rpc"))
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("the rpc binary runs");
    let mut stdin = child.stdin.take().expect("piped stdin");
    // A tool that stops reading early closes the pipe; its exit status tells the test.
    let _ = stdin.write_all(input.as_bytes()).await;
    drop(stdin);
    let Output {
        status,
        stdout,
        stderr,
    } = child.wait_with_output().await.expect("the rpc binary ends");
    Run {
        ok: status.success(),
        stdout: String::from_utf8_lossy(&stdout).into_owned(),
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
    }
}
