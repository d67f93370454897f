//! A calculator service: typed application errors next to framework errors, in one process
//! or across two terminals.
//!
//! ```text
//! cargo run --example calculator                                   # scripted demo, exits
//! cargo run --example calculator -- server 127.0.0.1:7000          # terminal 1 (Ctrl-C stops it)
//! cargo run --example calculator -- client 127.0.0.1:7000 add 2 3  # terminal 2
//! cargo run --example calculator -- client 127.0.0.1:7000 div 1 0
//! ```
//!
//! `div` returns `Result<i64, MathError>`: dividing by zero is the application's error and
//! arrives as `Ok(Err(MathError::DivisionByZero))`. A call that cannot complete (server
//! gone, deadline passed) is an `rpc::Error` instead; the two never mix. Either way the client
//! prints the error and exits with a failure status.

use std::error::Error;
use std::fmt;
use std::process::ExitCode;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The application's own error type; it travels to the client as it is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum MathError {
    /// The divisor was zero.
    DivisionByZero,
    /// The result does not fit in an `i64`.
    Overflow,
}

impl fmt::Display for MathError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MathError::DivisionByZero => f.write_str("division by zero"),
            MathError::Overflow => f.write_str("overflow"),
        }
    }
}

/// Integer arithmetic as a service.
#[rpc::service]
pub trait Calculator {
    /// `a + b`, failing on overflow.
    async fn add(&self, a: i64, b: i64) -> Result<i64, MathError>;
    /// `a - b`, failing on overflow.
    async fn sub(&self, a: i64, b: i64) -> Result<i64, MathError>;
    /// `a * b`, failing on overflow.
    async fn mul(&self, a: i64, b: i64) -> Result<i64, MathError>;
    /// `a / b`, failing on a zero divisor.
    async fn div(&self, a: i64, b: i64) -> Result<i64, MathError>;
    /// Adds after a pause of `millis` milliseconds, capped at [`MAX_PAUSE_MS`]: a slow call,
    /// to show deadlines. The cap keeps a client from parking the server's handlers for as
    /// long as it likes.
    async fn slow_add(&self, a: i64, b: i64, millis: u64) -> i64;
}

/// The longest pause `slow_add` takes, whatever the client asks for: 5 s.
pub const MAX_PAUSE_MS: u64 = 5_000;

struct Calc;

impl Calculator for Calc {
    async fn add(&self, a: i64, b: i64) -> Result<i64, MathError> {
        a.checked_add(b).ok_or(MathError::Overflow)
    }
    async fn sub(&self, a: i64, b: i64) -> Result<i64, MathError> {
        a.checked_sub(b).ok_or(MathError::Overflow)
    }
    async fn mul(&self, a: i64, b: i64) -> Result<i64, MathError> {
        a.checked_mul(b).ok_or(MathError::Overflow)
    }
    async fn div(&self, a: i64, b: i64) -> Result<i64, MathError> {
        if b == 0 {
            return Err(MathError::DivisionByZero);
        }
        a.checked_div(b).ok_or(MathError::Overflow)
    }
    async fn slow_add(&self, a: i64, b: i64, millis: u64) -> i64 {
        tokio::time::sleep(Duration::from_millis(millis.min(MAX_PAUSE_MS))).await;
        a.wrapping_add(b)
    }
}

const USAGE: &str = "usage: calculator [server ADDR | client ADDR (add|sub|mul|div) A B]";

#[tokio::main]
async fn main() -> ExitCode {
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            // Display, not Debug: the message is written for people.
            eprintln!("error: {err}");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<(), Box<dyn Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        [] => demo().await,
        ["server", addr] => serve(addr).await,
        ["client", addr, op, a, b] => {
            let (a, b) = (a.parse::<i64>()?, b.parse::<i64>()?);
            let calc = CalculatorClient::connect(*addr).await?;
            let result = call(&calc, op, a, b).await?;
            match result {
                Ok(value) => {
                    println!("{a} {op} {b} = {value}");
                    Ok(())
                }
                Err(err) => Err(format!("{a} {op} {b}: {err}").into()),
            }
        }
        _ => Err(USAGE.into()),
    }
}

/// Calls the operation named `op`.
async fn call(
    calc: &CalculatorClient,
    op: &str,
    a: i64,
    b: i64,
) -> Result<Result<i64, MathError>, Box<dyn Error>> {
    let outcome = match op {
        "add" => calc.add(a, b).await,
        "sub" => calc.sub(a, b).await,
        "mul" => calc.mul(a, b).await,
        "div" => calc.div(a, b).await,
        other => return Err(format!("unknown operation {other:?}; {USAGE}").into()),
    };
    // `?` handles the framework error; the application's error stays in the value.
    Ok(outcome?)
}

async fn serve(addr: &str) -> Result<(), Box<dyn Error>> {
    let server = rpc::Server::builder()
        .serve(Calc.into_service())
        .bind(addr)
        .await?;
    println!("calculator listening on {addr}; Ctrl-C to stop");
    server
        .run_until(async {
            let _ = tokio::signal::ctrl_c().await;
            println!("shutting down");
        })
        .await;
    Ok(())
}

async fn demo() -> Result<(), Box<dyn Error>> {
    let server = rpc::Server::builder()
        .serve(Calc.into_service())
        .bind("127.0.0.1:0")
        .await?;
    let addr = server.local_addr().ok_or("server is not on TCP")?;
    let handle = server.handle();
    let running = tokio::spawn(server.run());

    let calc = CalculatorClient::connect(addr).await?;
    for (op, a, b) in [
        ("add", 2, 3),
        ("mul", 6, 7),
        ("div", 7, 2),
        ("div", 1, 0),
        ("mul", i64::MAX, 2),
    ] {
        match call(&calc, op, a, b).await? {
            Ok(value) => println!("{a} {op} {b} = {value}"),
            Err(err) => println!("{a} {op} {b} -> application error: {err}"),
        }
    }

    // A framework error: the call's deadline passes before the server answers.
    match calc
        .slow_add(1, 1, 1_000)
        .timeout(Duration::from_millis(50))
        .await
    {
        Ok(value) => println!("slow_add answered {value}"),
        Err(err) => println!("slow_add with a 50 ms deadline -> framework error: {err}"),
    }

    handle.shutdown();
    running.await?;
    Ok(())
}
