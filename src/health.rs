//! Asking a server whether it serves a service: the built-in health service.
//!
//! Every [`Server`](crate::Server) hosts a service named `rpc.Health` next to the ones it
//! was given, with one method, `check(service: String) -> HealthStatus`:
//!
//! - a hosted service's name answers [`Serving`](HealthStatus::Serving) or
//!   [`NotServing`](HealthStatus::NotServing), as the application set it with
//!   [`ServerHandle::set_serving`](crate::ServerHandle::set_serving) (every name starts
//!   serving);
//! - `""` asks about the server as a whole (a flag of its own, set the same way);
//! - any other name answers [`Unknown`](HealthStatus::Unknown);
//! - from the moment the server starts shutting down, every hosted name (and `""`) answers
//!   `NotServing`, while its calls in flight finish. A draining server refuses every other
//!   new call unrun, but answers health checks that reach it on a connection it still has
//!   open.
//!
//! A client that has been told the server is going away (the go-away a draining server
//! sends on every connection) sends new calls, health checks included, on a new connection,
//! which a draining server no longer accepts: to such a client the go-away, and a failed
//! dial, already mean not serving.
//!
//! The name has a dot, which no Rust trait can have, so no `#[rpc::service]` trait collides
//! with it; a hand-written [`Service`](crate::Service) that claims it is refused by
//! [`ServerBuilder::serve`](crate::ServerBuilder::serve).
//!
//! ```no_run
//! use rpc::health::{HealthClient, HealthStatus};
//!
//! # async fn demo() -> Result<(), rpc::Error> {
//! let health = HealthClient::connect("127.0.0.1:4000").await?;
//! if health.check("Calculator").await? != HealthStatus::Serving {
//!     println!("not sending calculations there");
//! }
//! // The same call without the stub:
//! let status: HealthStatus = rpc::Client::connect("127.0.0.1:4000")
//!     .await?
//!     .call(rpc::health::CHECK, ("".to_string(),))
//!     .await?;
//! # let _ = status; Ok(()) }
//! ```

use crate::{Call, Client, Endpoint, Error};

#[doc(inline)]
pub use rpc_core::health::{HealthStatus, CHECK, SERVICE};

/// Client for the built-in health service; the stub `#[rpc::service]` would generate for
/// it. Cheap to clone; clones share one connection.
#[derive(Clone, Debug)]
pub struct HealthClient {
    client: Client,
}

impl HealthClient {
    /// Connects to a server at `endpoint` (a `"host:port"` string, a `SocketAddr`, or
    /// `rpc::Endpoint::unix(path)`).
    pub async fn connect(endpoint: impl Into<Endpoint>) -> Result<Self, Error> {
        Ok(Self::new(Client::connect(endpoint).await?))
    }

    /// Uses an existing connection (shared with other services' clients).
    pub fn new(client: Client) -> Self {
        HealthClient { client }
    }

    /// The underlying connection.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// What the server says about `service` (`""`: the server as a whole). The call is
    /// marked idempotent ([`CHECK`]). Like any call it can be given a timeout before it is
    /// awaited: `health.check("").timeout(Duration::from_millis(100)).await`.
    pub fn check(&self, service: impl Into<String>) -> Call<(String,), HealthStatus> {
        self.client.call(CHECK, (service.into(),))
    }
}
