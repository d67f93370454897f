//! Tasks owned by a value: aborted when their owner is dropped.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context as TaskContext, Poll};

use tokio::task::{JoinError, JoinHandle};

/// A spawned task that ends when this handle is dropped: the owner of a connection's writer
/// task, or of a call's request-stream sender. Awaiting it waits for the task's output.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// use rpc_core::task::AbortOnDrop;
/// let task = AbortOnDrop::spawn(async { 1 + 1 });
/// assert_eq!(task.await.expect("not aborted"), 2);
///
/// let forever = AbortOnDrop::spawn(std::future::pending::<()>());
/// drop(forever); // the task is aborted here
/// # }
/// ```
#[derive(Debug)]
#[must_use = "dropping an AbortOnDrop aborts its task at once"]
pub struct AbortOnDrop<T>(JoinHandle<T>);

impl<T: Send + 'static> AbortOnDrop<T> {
    /// Spawns `future` on the current tokio runtime, owned by the returned handle.
    pub fn spawn(future: impl Future<Output = T> + Send + 'static) -> Self {
        AbortOnDrop(tokio::spawn(future))
    }
}

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl<T> Future for AbortOnDrop<T> {
    type Output = Result<T, JoinError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.0).poll(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn dropping_the_handle_aborts_the_task() {
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = AbortOnDrop::spawn(async move {
            let _tx = tx; // dropped when the task ends
            std::future::pending::<()>().await
        });
        drop(task);
        // The sender is dropped only if the task was aborted.
        assert!(rx.await.is_err());
    }
}
