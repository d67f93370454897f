//! [`Call`]: one remote call, configured before it is awaited.

use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

use rpc_core::error::ErrorCode;
use rpc_core::message::{Header, RequestHeader, Status};
use rpc_core::{Bincode, Codec, Context, Error, Metadata, Method};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::time::Instant;

use crate::client::Client;
use crate::connection::Connection;

/// A call to a remote method, returned by the generated stub methods.
///
/// Await it directly, or configure it first:
///
/// ```no_run
/// # async fn demo(client: rpc_client::Client, method: rpc_core::Method) -> Result<(), rpc_core::Error> {
/// use std::time::Duration;
/// let sum: i64 = client
///     .call(method, (2i64, 3i64))
///     .timeout(Duration::from_millis(50))
///     .metadata("authorization", "Bearer secret")
///     .await?;
/// # Ok(()) }
/// ```
///
/// Dropping the future before it completes cancels the call: the server aborts the handler.
#[must_use = "a call does nothing until it is awaited"]
pub struct Call<Args, Out> {
    /// The call as configured; taken when the call starts.
    setup: Option<Setup<Args>>,
    /// The running call, from the first poll on.
    running: Option<Running<Out>>,
    _out: PhantomData<fn() -> Out>,
}

type Running<Out> = Pin<Box<dyn Future<Output = Result<Out, Error>> + Send>>;

struct Setup<Args> {
    client: Client,
    method: Method,
    args: Args,
    deadline: Deadline,
    metadata: Metadata,
}

// No field is ever pinned in place: `args` is moved into the boxed future before the first
// poll, and that future is pinned by its box. So `Call` can be `Unpin` whatever `Args` is.
impl<Args, Out> Unpin for Call<Args, Out> {}

#[derive(Debug, Clone, Copy)]
enum Deadline {
    /// The client's default timeout, or the surrounding handler's deadline if sooner.
    Default,
    At(Instant),
    Never,
}

impl<Args, Out> std::fmt::Debug for Call<Args, Out> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut f = f.debug_struct("Call");
        if let Some(setup) = &self.setup {
            f.field("method", &setup.method)
                .field("deadline", &setup.deadline);
        }
        f.field("started", &self.running.is_some()).finish()
    }
}

/// How many times a call the server refused unrun (it was shutting down) is sent again.
const MAX_UNRUN_RETRIES: usize = 2;

impl<Args, Out> Call<Args, Out> {
    pub(crate) fn new(client: Client, method: Method, args: Args) -> Self {
        Call {
            setup: Some(Setup {
                client,
                method,
                args,
                deadline: Deadline::Default,
                metadata: Metadata::new(),
            }),
            running: None,
            _out: PhantomData,
        }
    }

    fn set_deadline(mut self, deadline: Deadline) -> Self {
        if let Some(setup) = &mut self.setup {
            setup.deadline = deadline;
        }
        self
    }

    /// Fails the call with [`Error::DeadlineExceeded`] if no reply arrives within `timeout`;
    /// the server stops the handler at the same moment.
    pub fn timeout(self, timeout: Duration) -> Self {
        // A timeout too long to represent as an instant means no deadline at all.
        match Instant::now().checked_add(timeout) {
            Some(at) => self.set_deadline(Deadline::At(at)),
            None => self.set_deadline(Deadline::Never),
        }
    }

    /// Like [`timeout`](Self::timeout), with an absolute instant.
    pub fn deadline(self, deadline: Instant) -> Self {
        self.set_deadline(Deadline::At(deadline))
    }

    /// Waits as long as it takes, ignoring the client's default timeout.
    pub fn no_deadline(self) -> Self {
        self.set_deadline(Deadline::Never)
    }

    /// Adds a metadata pair, readable by the handler through `rpc::Context`.
    pub fn metadata(mut self, key: impl Into<String>, value: impl Into<Vec<u8>>) -> Self {
        if let Some(setup) = &mut self.setup {
            setup.metadata.insert(key, value);
        }
        self
    }
}

impl<Args> Setup<Args> {
    fn resolve_deadline(&self) -> Option<Instant> {
        match self.deadline {
            Deadline::At(at) => Some(at),
            Deadline::Never => None,
            Deadline::Default => {
                let default = self
                    .client
                    .config()
                    .default_timeout
                    .and_then(|t| Instant::now().checked_add(t));
                let inherited = Context::with_current(Context::deadline).flatten();
                match (default, inherited) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                }
            }
        }
    }
}

impl<Args: Serialize + Send + 'static> Setup<Args> {
    async fn run<Out: DeserializeOwned>(self) -> Result<Out, Error> {
        let deadline = self.resolve_deadline();
        let Setup {
            client,
            method,
            args,
            metadata,
            ..
        } = self;
        let mut args = args;
        let attempts = async {
            let mut attempt = 0;
            loop {
                let conn = client.connection().await?;
                // Cloning empty metadata (the common case) does not allocate.
                match send(&conn, method, &mut args, metadata.clone(), deadline).await {
                    Err(Error::Overloaded { .. })
                        if attempt < MAX_UNRUN_RETRIES && !conn.is_usable() =>
                    {
                        attempt += 1;
                    }
                    outcome => return outcome,
                }
            }
        };
        match deadline {
            Some(deadline) => tokio::time::timeout_at(deadline, attempts)
                .await
                .unwrap_or(Err(Error::DeadlineExceeded)),
            None => attempts.await,
        }
    }
}

/// One attempt on one connection. `args` is borrowed mutably (`&mut T` is `Send` when `T`
/// is), so the call future is `Send` without demanding `Args: Sync`.
async fn send<Args: Serialize, Out: DeserializeOwned>(
    conn: &Connection,
    method: Method,
    args: &mut Args,
    metadata: Metadata,
    deadline: Option<Instant>,
) -> Result<Out, Error> {
    // Bounded in-flight calls per connection: wait for room rather than queue without bound.
    let _permit = conn
        .permits
        .acquire()
        .await
        .map_err(|_| Error::closed("the connection is closing"))?;
    let (id, reply) = conn.register()?;
    let mut pending = PendingCall {
        conn,
        id,
        done: false,
    };
    conn.queue.ready().await?;
    let header = Header::Request(RequestHeader {
        id,
        method: method.id().as_u64(),
        timeout_micros: deadline.map(|d| {
            let left = d.saturating_duration_since(Instant::now());
            u64::try_from(left.as_micros()).unwrap_or(u64::MAX)
        }),
        metadata,
    });
    {
        let args: &Args = args;
        conn.queue.push(&header, |buf| Bincode.encode(args, buf))?;
    }
    let outcome = reply
        .await
        .unwrap_or_else(|_| Err(Error::closed("the connection ended")));
    pending.done = true;
    let (status, body) = outcome?;
    match status {
        Status::Ok => Ok(Bincode.decode(&body)?),
        Status::Error { code, message } => {
            if ErrorCode::from_u16(code) == Some(ErrorCode::ShuttingDown) {
                // The server did not run it; new calls must go to a new connection.
                conn.mark_going_away();
            }
            Err(Error::from_remote(code, message, &method))
        }
    }
}

/// Cancels the call on the server if the caller stops waiting (drop, timeout).
struct PendingCall<'a> {
    conn: &'a Connection,
    id: u64,
    done: bool,
}

impl Drop for PendingCall<'_> {
    fn drop(&mut self) {
        if !self.done {
            self.conn.cancel(self.id);
        }
    }
}

impl<Args, Out> Future for Call<Args, Out>
where
    Args: Serialize + Send + 'static,
    Out: DeserializeOwned + Send + 'static,
{
    type Output = Result<Out, Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        if this.running.is_none() {
            let Some(setup) = this.setup.take() else {
                return Poll::Ready(Err(Error::Cancelled));
            };
            this.running = Some(Box::pin(setup.run::<Out>()));
        }
        match &mut this.running {
            Some(running) => {
                let outcome = running.as_mut().poll(cx);
                if outcome.is_ready() {
                    // Release the connection and buffers now, not when the Call is dropped.
                    this.running = None;
                }
                outcome
            }
            None => Poll::Ready(Err(Error::Cancelled)),
        }
    }
}
