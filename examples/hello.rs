//! Hello, World! as a remote call: a server and a client in one process.
//!
//! Run it with:
//!
//! ```text
//! cargo run --example hello
//! ```
//!
//! This is the classic socket tutorial's exchange (the client says its name, the server
//! answers "Hello, <name>!"), with the socket code replaced by a trait.

use std::error::Error;
use std::process::ExitCode;

/// The service: one plain Rust trait.
#[rpc::service]
pub trait Greeter {
    /// Answers with a greeting for `name`.
    async fn hello(&self, name: String) -> String;
}

/// The server's implementation: plain Rust, no framework types.
struct Server;

impl Greeter for Server {
    async fn hello(&self, name: String) -> String {
        format!("Hello, {name}!")
    }
}

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
    // Port 0: the operating system picks a free port.
    let server = rpc::Server::builder()
        .serve(Server.into_service())
        .bind("127.0.0.1:0")
        .await?;
    let addr = server.local_addr().ok_or("server is not on TCP")?;
    let handle = server.handle();
    let running = tokio::spawn(server.run());
    println!("server listening on {addr}");

    let greeter = GreeterClient::connect(addr).await?;
    let reply = greeter.hello("World".to_string()).await?;
    println!("client got: {reply}");

    // Stop the server gracefully and wait for it.
    handle.shutdown();
    running.await?;
    Ok(())
}
