//! The command line, and running each command.

use std::io::Write;
use std::time::Duration;

use clap::{Parser, Subcommand};
use rpc::health::{HealthClient, HealthStatus};

use crate::error::CliError;

/// A command-line client for rpc servers.
#[derive(Debug, Parser)]
#[command(name = "rpc", version, about, long_about = None)]
pub struct Cli {
    /// How long to wait for the server: to connect, and for each answer (e.g. `500ms`, `5s`, `2`
    /// for seconds).
    #[arg(long, global = true, default_value = "10s", value_parser = parse_duration)]
    pub timeout: Duration,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Round-trip times of keepalive pings: min, avg and max.
    Ping {
        /// The server, as HOST:PORT.
        addr: String,
        /// How many pings.
        #[arg(short, long, default_value_t = 4)]
        count: u32,
        /// The pause between pings (e.g. `200ms`).
        #[arg(long, default_value = "200ms", value_parser = parse_duration)]
        interval: Duration,
    },
    /// Asks the built-in rpc.Health service whether SERVICE (or the whole server) is serving;
    /// exits with failure if it is not.
    Health {
        /// The server, as HOST:PORT.
        addr: String,
        /// A service name; the server as a whole if left out.
        #[arg(default_value = "")]
        service: String,
    },
}

/// Runs the command, writing its output to `out`.
pub async fn run(cli: Cli, out: &mut impl Write) -> Result<(), CliError> {
    match cli.command {
        Command::Ping {
            addr,
            count,
            interval,
        } => {
            let summary = crate::ping::run(&addr, count, interval, cli.timeout, |seq, took| {
                // Best effort: a closed stdout must not stop the pings.
                let _ = writeln!(out, "pong from {addr}: seq={seq} time={}", millis(took));
            })
            .await?;
            writeln!(
                out,
                "{} pings: min/avg/max = {}/{}/{}",
                summary.times.len(),
                millis(summary.min()),
                millis(summary.avg()),
                millis(summary.max()),
            )?;
        }
        Command::Health { addr, service } => {
            let client = connect(&addr, cli.timeout).await?;
            let status = HealthClient::new(client)
                .check(service.clone())
                .timeout(cli.timeout)
                .await?;
            let shown = match status {
                HealthStatus::Serving => "SERVING",
                HealthStatus::NotServing => "NOT_SERVING",
                HealthStatus::Unknown => "UNKNOWN",
            };
            writeln!(out, "{shown}")?;
            if !status.is_serving() {
                let service = if service.is_empty() {
                    "the server".to_string()
                } else {
                    service
                };
                return Err(CliError::NotServing {
                    service,
                    status: shown.to_string(),
                });
            }
        }
    }
    Ok(())
}

/// A client for `addr`, connected within `timeout`.
async fn connect(addr: &str, timeout: Duration) -> Result<rpc::Client, CliError> {
    Ok(rpc::Client::builder()
        .connect_timeout(timeout)
        .default_timeout(Some(timeout))
        .connect(addr)
        .await?)
}

/// A duration as milliseconds with three decimals: `0.123 ms`.
fn millis(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1000.0)
}

/// `500ms`, `5s`, `1.5s`, `2` (seconds), `1m`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, scale) = if let Some(n) = text.strip_suffix("ms") {
        (n, 0.001)
    } else if let Some(n) = text.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = text.strip_suffix('m') {
        (n, 60.0)
    } else {
        (text, 1.0)
    };
    let value: f64 = number
        .trim()
        .parse()
        .map_err(|_| format!("`{text}` is not a duration (try 500ms, 5s or 1m)"))?;
    Duration::try_from_secs_f64(value * scale)
        .map_err(|_| format!("`{text}` is not a duration (try 500ms, 5s or 1m)"))
}
