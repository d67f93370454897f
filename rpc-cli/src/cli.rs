//! The command line, and running each command.

use std::io::Write;
use std::time::Duration;

use clap::{Parser, Subcommand};
use rpc::health::{HealthClient, HealthStatus};
use rpc::reflection::{MethodDescription, ReflectionClient};

use crate::error::CliError;
use crate::render;

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
    /// Lists the services the server hosts and their methods (from its reflection service).
    List {
        /// The server, as HOST:PORT.
        addr: String,
        /// Print the server's answer as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Describes one method: its kind, its arguments and result, and the types they name.
    Describe {
        /// The server, as HOST:PORT.
        addr: String,
        /// The method, as Service.method.
        method: String,
        /// Print the server's answer as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Calls a method with arguments given as JSON and prints the reply as JSON; a method that
    /// answers with a stream prints one line per item as it arrives. A method that takes a
    /// stream reads its items as JSON lines, one item per line, from standard input or
    /// --items FILE.
    Call {
        /// The server, as HOST:PORT.
        addr: String,
        /// The method, as Service.method.
        method: String,
        /// The arguments, a JSON array with one value per argument: '[2, 3]'. Structs are
        /// objects, enums "Variant" or {"Variant": value}; leave out for none.
        #[arg(default_value = "[]")]
        args: String,
        /// A metadata pair sent with the call, as key=value; repeatable.
        #[arg(short, long = "metadata", value_name = "KEY=VALUE", value_parser = parse_pair)]
        metadata: Vec<(String, String)>,
        /// For a method that takes a stream: the file its items are read from, one JSON value
        /// per line ('-', or left out: standard input).
        #[arg(long, value_name = "FILE")]
        items: Option<std::path::PathBuf>,
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
                "{} pings: min/avg/max = {:.3}/{:.3}/{:.3} ms",
                summary.times.len(),
                summary.min().as_secs_f64() * 1000.0,
                summary.avg().as_secs_f64() * 1000.0,
                summary.max().as_secs_f64() * 1000.0,
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
        Command::List { addr, json } => {
            let reflection = ReflectionClient::new(connect(&addr, cli.timeout).await?);
            let services = reflection.list().timeout(cli.timeout).await?;
            if json {
                writeln!(out, "{}", serde_json::to_string_pretty(&services)?)?;
            } else {
                for service in &services {
                    writeln!(out, "{}", service.name)?;
                    for method in &service.methods {
                        let kind = method.kind.map_or("not described", render::kind);
                        writeln!(out, "  {:<20} {kind}", method.name)?;
                    }
                }
            }
        }
        Command::Describe { addr, method, json } => {
            let client = connect(&addr, cli.timeout).await?;
            let description = describe(&client, &method, cli.timeout).await?;
            if json {
                writeln!(out, "{}", serde_json::to_string_pretty(&description)?)?;
            } else {
                match &description.signature {
                    Some(signature) => write!(out, "{}", render::signature(&method, signature))?,
                    None => writeln!(
                        out,
                        "{method}: the server does not describe its shapes{}",
                        description
                            .untraceable
                            .as_deref()
                            .map_or_else(String::new, |why| format!(" ({why})"))
                    )?,
                }
            }
        }
        Command::Call {
            addr,
            method,
            args,
            metadata,
            items,
        } => {
            let client = connect(&addr, cli.timeout).await?;
            let description = describe(&client, &method, cli.timeout).await?;
            let signature =
                description
                    .signature
                    .as_ref()
                    .ok_or_else(|| CliError::NotDescribed {
                        method: method.clone(),
                        why: description.untraceable.clone(),
                    })?;
            let items = match (signature.kind.has_input_stream(), items) {
                (false, None) => None,
                // Refused by the call, with a message that names the method.
                (false, Some(_)) => Some(String::new()),
                (true, Some(path)) if path.as_os_str() != "-" => {
                    Some(std::fs::read_to_string(path)?)
                }
                (true, _) => Some(std::io::read_to_string(std::io::stdin())?),
            };
            let request = crate::call::Request {
                method: &method,
                signature,
                args: &args,
                items: items.as_deref(),
                metadata: &metadata,
                timeout: cli.timeout,
            };
            crate::call::run(&client, request, out).await?;
        }
    }
    Ok(())
}

/// The server's description of `Service.method`.
async fn describe(
    client: &rpc::Client,
    method: &str,
    timeout: Duration,
) -> Result<MethodDescription, CliError> {
    let (service, name) = method
        .rsplit_once('.')
        .filter(|(s, m)| !s.is_empty() && !m.is_empty())
        .ok_or_else(|| CliError::MethodName(method.to_string()))?;
    ReflectionClient::new(client.clone())
        .describe(service, name)
        .timeout(timeout)
        .await?
        .ok_or_else(|| CliError::NoSuchMethod(method.to_string()))
}

/// `key=value`.
fn parse_pair(text: &str) -> Result<(String, String), String> {
    text.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| format!("`{text}` is not key=value"))
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
