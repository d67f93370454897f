//! Asking a server what it serves: the built-in reflection service.
//!
//! Every [`Server`](crate::Server) hosts a service named `rpc.Reflection`, unless built with
//! [`ServerBuilder::reflection(false)`](crate::ServerBuilder::reflection), with two methods:
//!
//! - [`list`](ReflectionClient::list): every service the server hosts (the built-in ones
//!   included) and its methods, with each method's kind;
//! - [`describe`](ReflectionClient::describe): one method in full: its kind, its arguments'
//!   names and [shapes](crate::shape::Shape), its result's shape, and the registry of the
//!   structs and enums those name; `None` for a method the server does not host.
//!
//! The answers are plain serde types: a tool can print them as JSON, and turn JSON into a
//! call's arguments by following the shapes.
//!
//! ```no_run
//! use rpc::reflection::ReflectionClient;
//!
//! # async fn demo() -> Result<(), rpc::Error> {
//! let reflection = ReflectionClient::connect("127.0.0.1:4000").await?;
//! for service in reflection.list().await? {
//!     for method in &service.methods {
//!         println!("{}.{} ({:?})", service.name, method.name, method.kind);
//!     }
//! }
//! if let Some(add) = reflection.describe("Calculator", "add").await? {
//!     let signature = add.signature.expect("a generated service describes its methods");
//!     println!("add takes {:?} and returns {:?}", signature.args, signature.result);
//! }
//! # Ok(()) }
//! ```

use crate::{Call, Client, Endpoint, Error};

#[doc(inline)]
pub use rpc_core::reflection::{
    MethodDescription, MethodSummary, ServiceSummary, DESCRIBE, LIST, SERVICE,
};

/// Client for the built-in reflection service; the stub `#[rpc::service]` would generate for
/// it. Cheap to clone; clones share one connection.
#[derive(Clone, Debug)]
pub struct ReflectionClient {
    client: Client,
}

impl ReflectionClient {
    /// Connects to a server at `endpoint` (a `"host:port"` string, a `SocketAddr`, or
    /// `rpc::Endpoint::unix(path)`).
    pub async fn connect(endpoint: impl Into<Endpoint>) -> Result<Self, Error> {
        Ok(Self::new(Client::connect(endpoint).await?))
    }

    /// Uses an existing connection (shared with other services' clients).
    pub fn new(client: Client) -> Self {
        ReflectionClient { client }
    }

    /// The underlying connection.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Every service the server hosts, in name order, with its methods. Fails with
    /// [`Error::UnknownMethod`] when the server has reflection turned off.
    pub fn list(&self) -> Call<(), Vec<ServiceSummary>> {
        self.client.call(LIST, ())
    }

    /// `service.method` in full; `None` when the server does not host it.
    pub fn describe(
        &self,
        service: impl Into<String>,
        method: impl Into<String>,
    ) -> Call<(String, String), Option<MethodDescription>> {
        self.client.call(DESCRIBE, (service.into(), method.into()))
    }
}
