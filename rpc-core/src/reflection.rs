//! The built-in reflection service's wire contract: its name, its methods, its answers.
//!
//! Every `rpc::Server` hosts the service `rpc.Reflection` next to the user's services
//! (unless its `reflection` setting is turned off), with two methods:
//!
//! - `list() -> Vec<ServiceSummary>`: every service the server hosts, built-in ones
//!   included, with its methods;
//! - `describe(service: String, method: String) -> Option<MethodDescription>`: one method's
//!   kind, argument names, and the [`Shape`](crate::shape::Shape)s of its arguments and
//!   result with the registry of the containers they name; `None` for a method the server
//!   does not host.
//!
//! Every answer is a plain serde type, so a tool can print it as JSON, and build a call's
//! body from JSON by following the shapes. Like `rpc.Health`, the name has a dot, which no
//! Rust trait can have; a hand-written service that claims it is refused when it is added to
//! a server.

use serde::{Deserialize, Serialize};

use crate::shape::{MethodKind, Signature};
use crate::Method;

/// The reflection service's name on the wire.
pub const SERVICE: &str = "rpc.Reflection";

/// `rpc.Reflection.list() -> Vec<ServiceSummary>`. Idempotent.
///
/// ```
/// assert_eq!(rpc::reflection::LIST.to_string(), "rpc.Reflection.list");
/// ```
pub const LIST: Method = Method::new(SERVICE, "list").idempotent();

/// `rpc.Reflection.describe(service: String, method: String) -> Option<MethodDescription>`.
/// Idempotent.
pub const DESCRIBE: Method = Method::new(SERVICE, "describe").idempotent();

/// A hosted service and its methods, as [`LIST`] answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceSummary {
    /// The service's name, as in `"Calculator"`.
    pub name: String,
    /// Its methods, in the order the service lists them.
    pub methods: Vec<MethodSummary>,
}

/// One method in a [`ServiceSummary`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MethodSummary {
    /// The method's name, as in `"add"`.
    pub name: String,
    /// Which side streams; `None` when the service does not describe its methods (a
    /// hand-written service) or its types could not be traced.
    pub kind: Option<MethodKind>,
    /// Whether the method is marked idempotent.
    pub idempotent: bool,
}

/// One method in full, as [`DESCRIBE`] answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MethodDescription {
    /// The service's name.
    pub service: String,
    /// The method's name.
    pub name: String,
    /// Whether the method is marked idempotent.
    pub idempotent: bool,
    /// The signature fingerprint the server checks requests against; 0 when it checks none.
    pub fingerprint: u64,
    /// Kind, arguments, result and the containers they name; `None` when the service does
    /// not describe its methods, or (see [`untraceable`](Self::untraceable)) its types could
    /// not be traced.
    pub signature: Option<Signature>,
    /// Why the method's types could not be traced, when they could not.
    pub untraceable: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shape::{trace::Tracer, Shape};
    use crate::MethodId;

    #[test]
    fn methods_are_named_by_service_and_method() {
        assert_eq!(LIST.id(), MethodId::of("rpc.Reflection", "list"));
        assert_eq!(DESCRIBE.id(), MethodId::of("rpc.Reflection", "describe"));
        assert!(LIST.is_idempotent() && DESCRIBE.is_idempotent());
    }

    #[test]
    fn the_answers_can_describe_themselves() {
        // Shape is recursive (an option of a shape): tracing it must end.
        let mut tracer = Tracer::new();
        let shape = tracer
            .trace::<Option<MethodDescription>>()
            .expect("traceable");
        assert_eq!(
            shape,
            Shape::Option(Box::new(Shape::Named("MethodDescription".into())))
        );
        let registry = tracer.into_registry();
        let Some(Shape::Enum(variants)) = registry.get("Shape") else {
            panic!("no Shape enum in {registry:?}");
        };
        assert_eq!(variants.len(), 27);
        assert_eq!(variants[17].name, "option");
    }
}
