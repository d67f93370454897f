//! One call on the server: run the handler under its deadline and catch its panics, so that
//! every request gets exactly one response.

use std::any::Any;
use std::panic::AssertUnwindSafe;

use futures::FutureExt;
use rpc_core::{Context, Error};
use tokio::time::Instant;

use crate::service::{Dispatch, Reply};
use crate::stats::CallGuard;

/// Drives one call to its single outcome: the handler's reply, or an error response for a
/// failure to decode, a panic, or a passed deadline. Returns the request id, so the
/// connection can forget the call.
pub(crate) async fn run(
    id: u64,
    context: Context,
    deadline: Option<Instant>,
    dispatch: Dispatch,
    reply: Reply,
    in_flight: CallGuard,
) -> u64 {
    let guarded = context.scope(AssertUnwindSafe(dispatch).catch_unwind());
    let outcome = match deadline {
        Some(deadline) => match tokio::time::timeout_at(deadline, guarded).await {
            Ok(outcome) => outcome,
            Err(_elapsed) => Ok(Err(Error::DeadlineExceeded)),
        },
        None => guarded.await,
    };
    match outcome {
        Ok(Ok(())) => {}
        Ok(Err(err)) => reply.error(&err).await,
        Err(panic) => {
            let message = panic_message(&*panic);
            tracing::error!(request_id = id, panic = %message, "handler panicked; the caller gets HandlerPanicked and the server keeps serving");
            reply.error(&Error::HandlerPanicked { message }).await;
        }
    }
    drop(in_flight);
    id
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
