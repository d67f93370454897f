//! One call on the server: run the handler under its deadline and catch its panics, so that
//! every request gets exactly one response.
//!
//! Calls are not spawned as tasks by default. The connection polls a new call once, right
//! where it read the request; most handlers finish in that first poll, and then the call has
//! cost no task, no timer and no wake-up. A call still pending after it moves into the
//! connection's set of running calls, and only then does its deadline get a timer. The calls
//! of a service hosted with `serve_spawned` run as tasks of their own instead
//! ([`SpawnedCall`]), still owned by the connection's set.

use std::any::Any;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::task::{Context as TaskContext, Poll};

use futures::future::CatchUnwind;
use futures::FutureExt;
use rpc_core::deadline::Timer;
use rpc_core::task::AbortOnDrop;
use rpc_core::Error;
use tokio::time::Instant;

use crate::admission::Charge;
use crate::observe::ServerCall;
use crate::service::Dispatch;
use crate::stats::CallGuard;

/// A call in progress. Resolves to its request id once the handler has queued its reply
/// (with `None`), or failed without one (with the error the connection sends back for it).
pub(crate) struct CallTask {
    id: u64,
    handler: CatchUnwind<AssertUnwindSafe<Dispatch>>,
    /// Armed only if the handler does not finish in its first poll.
    timer: Timer,
    /// Counts the call as in flight, and holds its bytes against the budgets; set only if
    /// it does not finish in its first poll.
    held: Option<(CallGuard, Charge)>,
    /// Whether a panic's message goes to the caller (`ServerConfig::expose_panic_messages`).
    expose_panics: bool,
    /// The call's span and metrics.
    observe: ServerCall,
}

impl CallTask {
    pub(crate) fn new(
        id: u64,
        dispatch: Dispatch,
        deadline: Option<Instant>,
        expose_panics: bool,
        observe: ServerCall,
    ) -> Self {
        CallTask {
            id,
            handler: AssertUnwindSafe(dispatch).catch_unwind(),
            timer: Timer::new(deadline),
            held: None,
            expose_panics,
            observe,
        }
    }

    /// The call's request id.
    #[inline]
    pub(crate) fn id(&self) -> u64 {
        self.id
    }

    /// Counts the call in the server's in-flight figure, and its bytes in the budgets,
    /// until it ends.
    pub(crate) fn track(&mut self, in_flight: CallGuard, charge: Charge) {
        self.held = Some((in_flight, charge));
    }
}

impl Future for CallTask {
    type Output = (u64, Option<Error>);

    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Self::Output> {
        // Every field is Unpin (the handler lives in a Box).
        let this = self.get_mut();
        let entered = this.observe.enter();
        let failure = match Pin::new(&mut this.handler).poll(cx) {
            Poll::Ready(Ok(Ok(()))) => None,
            Poll::Ready(Ok(Err(err))) => Some(err),
            Poll::Ready(Err(panic)) => Some(panicked(this.id, &*panic, this.expose_panics)),
            Poll::Pending => {
                std::task::ready!(this.timer.poll_expired(cx));
                // The handler is dropped with this task: its work stops here.
                Some(Error::DeadlineExceeded)
            }
        };
        drop(entered);
        this.observe.finish(failure.as_ref());
        Poll::Ready((this.id, failure))
    }
}

/// A call in the connection's set of running calls: one still pending after its first poll
/// on the connection's task, or one running as a task of its own.
pub(crate) enum Running {
    InPlace(CallTask),
    Spawned(SpawnedCall),
}

impl Future for Running {
    type Output = (u64, Option<Error>);

    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Self::Output> {
        // Both variants are Unpin.
        match self.get_mut() {
            Running::InPlace(call) => Pin::new(call).poll(cx),
            Running::Spawned(call) => Pin::new(call).poll(cx),
        }
    }
}

/// A call running as a tokio task of its own (a service hosted with `serve_spawned`).
/// Dropping it aborts the task, so a cancel, the connection's end or the server's drop stop
/// the handler as they stop an in-place call; the deadline and panic capture run inside the
/// task, in its [`CallTask`].
pub(crate) struct SpawnedCall {
    id: u64,
    expose_panics: bool,
    task: AbortOnDrop<(u64, Option<Error>)>,
}

impl SpawnedCall {
    /// Spawns `call` on the current runtime; its first poll happens on some worker, not here.
    pub(crate) fn spawn(call: CallTask) -> Self {
        SpawnedCall {
            id: call.id,
            expose_panics: call.expose_panics,
            task: AbortOnDrop::spawn(call),
        }
    }
}

impl Future for SpawnedCall {
    type Output = (u64, Option<Error>);

    fn poll(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Self::Output> {
        let (id, expose_panics) = (self.id, self.expose_panics);
        let failure = match std::task::ready!(Pin::new(&mut self.task).poll(cx)) {
            Ok(done) => return Poll::Ready(done),
            // The handler's panics are caught inside the task; this is a panic outside it.
            Err(join) if join.is_panic() => panicked(id, &*join.into_panic(), expose_panics),
            // Only the runtime shutting down cancels the task while this handle holds it.
            Err(_) => Error::closed("the call's task was cancelled: the runtime is shutting down"),
        };
        Poll::Ready((id, Some(failure)))
    }
}

/// Logs the panic of call `id` with its message, and makes the error its caller gets: the
/// message only if the server exposes them, else the call id to find it in the log (a panic
/// message can carry anything the handler held: a path, a query, a secret).
fn panicked(id: u64, payload: &(dyn Any + Send), expose: bool) -> Error {
    let message = panic_message(payload);
    tracing::error!(call_id = id, panic = %message, "handler panicked; the caller gets HandlerPanicked and the server keeps serving");
    let message = if expose {
        message
    } else {
        format!("call id {id}; see the server log")
    };
    Error::HandlerPanicked { message }
}

fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&'static str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "panic payload is not a string".to_string()
    }
}
