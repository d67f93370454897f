//! `rpc`: ping, health-check, list, describe and call an rpc server from a shell. See the
//! crate docs (`rpc_cli`) or `rpc --help`.

use std::process::ExitCode;

use clap::Parser;

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli = rpc_cli::cli::Cli::parse();
    let mut out = std::io::stdout().lock();
    match rpc_cli::cli::run(cli, &mut out).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err}");
            ExitCode::FAILURE
        }
    }
}
