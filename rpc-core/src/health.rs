//! The built-in health service's wire contract: its name, its one method, its answer.
//!
//! Every `rpc::Server` hosts the service `rpc.Health` next to the user's services; its
//! method `check(service: String) -> HealthStatus` says whether the server serves `service`
//! (the empty string asks about the server as a whole). The name has a dot, which no Rust
//! trait name can have, so no `#[rpc::service]` trait can take it; a hand-written
//! `rpc::Service` that claims it is refused when it is added to a server.
//!
//! These items live here, in the protocol crate, because both ends need them: the server
//! answers the check (`rpc-server`), clients and balancers ask it (`rpc::health::HealthClient`
//! in the facade, or [`CHECK`] with `rpc::Client::call` directly).

use std::sync::OnceLock;

use serde::{Deserialize, Serialize};

use crate::shape::{MethodKind, Signature, TraceError};
use crate::Method;

/// The health service's name on the wire.
pub const SERVICE: &str = "rpc.Health";

/// `rpc.Health.check(service: String) -> HealthStatus`. Idempotent: asking twice does no
/// harm, so a check that may have run can be sent again. It carries its signature's
/// fingerprint ([`signature`]), so a peer whose `HealthStatus` differs is refused with
/// `SignatureMismatch` instead of misread.
///
/// ```
/// assert_eq!(rpc::health::CHECK.to_string(), "rpc.Health.check");
/// assert!(rpc::health::CHECK.is_idempotent());
/// assert_ne!(rpc::health::CHECK.fingerprint(), 0);
/// ```
pub const CHECK: Method = Method::new(SERVICE, "check")
    .idempotent()
    .with_fingerprint(CHECK_FINGERPRINT);

/// The fingerprint of [`signature`], written out so that [`CHECK`] can be a constant; a test
/// holds the two together (and `docs/PROTOCOL.md` lists it among its test vectors).
const CHECK_FINGERPRINT: u64 = 0x71e1_b4b6_f403_387b;

/// The signature of [`CHECK`], traced once: `(service: String) -> HealthStatus`.
pub fn signature() -> &'static Result<Signature, TraceError> {
    static SIGNATURE: OnceLock<Result<Signature, TraceError>> = OnceLock::new();
    SIGNATURE.get_or_init(|| {
        Signature::builder(MethodKind::Unary)
            .arg::<String>("service")
            .result::<HealthStatus>()
            .build()
    })
}

/// What a server says about one service name.
///
/// On the wire it is a bincode enum (its variant index), like any result; the variants are
/// in a fixed order and new ones would be a protocol change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum HealthStatus {
    /// The server hosts the service and takes calls for it.
    Serving,
    /// The server hosts the service but asks not to be sent calls for it: the application
    /// said so, or the server is shutting down (from the moment it starts draining, while the
    /// calls in flight finish).
    NotServing,
    /// The server hosts no service of that name.
    Unknown,
}

impl HealthStatus {
    /// Whether calls for the service may be sent to this server.
    pub const fn is_serving(self) -> bool {
        matches!(self, HealthStatus::Serving)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Bincode, Codec, MethodId};

    #[test]
    fn the_check_carries_the_fingerprint_of_its_traced_signature() {
        let signature = signature().as_ref().expect("traceable");
        assert_eq!(CHECK.fingerprint(), signature.fingerprint());
    }

    #[test]
    fn the_check_is_named_by_service_and_method() {
        assert_eq!(CHECK.id(), MethodId::of("rpc.Health", "check"));
        assert_eq!((CHECK.service(), CHECK.name()), (SERVICE, "check"));
    }

    #[test]
    fn statuses_travel_as_their_variant_index() {
        // Fixed on the wire: reordering the variants would break older peers.
        for (status, index) in [
            (HealthStatus::Serving, 0u8),
            (HealthStatus::NotServing, 1),
            (HealthStatus::Unknown, 2),
        ] {
            let mut buf = bytes::BytesMut::new();
            Bincode.encode(&status, &mut buf).expect("encodes");
            assert_eq!(&buf[..], &[index]);
            assert_eq!(
                Bincode.decode::<HealthStatus>(&buf).expect("decodes"),
                status
            );
        }
    }
}
