//! Shared by the integration tests: a server on 127.0.0.1 with an OS-chosen port.

// Each test binary uses its own subset of these helpers.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::Duration;

use tokio::task::JoinHandle;

/// A running server and what tests need to reach and stop it.
pub(crate) struct Running {
    pub(crate) addr: SocketAddr,
    pub(crate) handle: rpc::ServerHandle,
    pub(crate) task: JoinHandle<()>,
}

impl Running {
    /// Stops the server at once: the task is aborted, every connection dropped.
    pub(crate) fn kill(&self) {
        self.task.abort();
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Binds `builder` to 127.0.0.1:0 and runs it in a task.
pub(crate) async fn start(builder: rpc::ServerBuilder) -> Running {
    let server = builder.bind("127.0.0.1:0").await.expect("bind 127.0.0.1:0");
    let addr = server.local_addr().expect("tcp address");
    let handle = server.handle();
    let task = tokio::spawn(server.run());
    Running { addr, handle, task }
}

/// Guards a test against hanging: the behaviour under test must finish well within this.
pub(crate) const PATIENCE: Duration = Duration::from_secs(20);

/// Awaits `future`, failing the test if it takes longer than [`PATIENCE`].
pub(crate) async fn within<F: std::future::IntoFuture>(what: &str, future: F) -> F::Output {
    match tokio::time::timeout(PATIENCE, future.into_future()).await {
        Ok(output) => output,
        Err(_) => panic!("{what} did not finish within {PATIENCE:?}"),
    }
}
