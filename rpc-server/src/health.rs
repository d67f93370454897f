//! The health service every server hosts: `rpc.Health.check(service) -> HealthStatus`.
//!
//! The status of each name is a flag set by the application through
//! [`ServerHandle::set_serving`](crate::ServerHandle::set_serving); the shutdown signal
//! overrides them all. The names are fixed when the server is built (its services and `""`),
//! so the table is a map that never changes shape, of atomics: a check reads one flag and
//! the signal, and is on no other call's path.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use rpc_core::health::{HealthStatus, CHECK};
use rpc_core::shape::{Signature, TraceError};
use rpc_core::{Method, MethodId};
use tokio::sync::watch;

use crate::service::{Dispatch, Request, Service};

/// The serving flag of every name the server answers for, and the shutdown signal.
#[derive(Debug)]
pub(crate) struct Health {
    /// `""` (the server as a whole) and the name of every hosted service.
    serving: HashMap<&'static str, AtomicBool>,
    /// The server's shutdown signal: once set, every name is not serving.
    draining: watch::Receiver<bool>,
}

impl Health {
    /// Every name in `services`, and `""`, starts serving.
    pub(crate) fn new(
        services: impl IntoIterator<Item = &'static str>,
        draining: watch::Receiver<bool>,
    ) -> Self {
        let serving = std::iter::once("")
            .chain(services)
            .map(|name| (name, AtomicBool::new(true)))
            .collect();
        Health { serving, draining }
    }

    /// What a check of `service` answers.
    pub(crate) fn status(&self, service: &str) -> HealthStatus {
        let Some(flag) = self.serving.get(service) else {
            return HealthStatus::Unknown;
        };
        if *self.draining.borrow() || !flag.load(Ordering::Acquire) {
            HealthStatus::NotServing
        } else {
            HealthStatus::Serving
        }
    }

    /// Sets the flag of `service`; `false` if the server has no such name.
    pub(crate) fn set_serving(&self, service: &str, serving: bool) -> bool {
        match self.serving.get(service) {
            Some(flag) => {
                flag.store(serving, Ordering::Release);
                true
            }
            None => false,
        }
    }
}

/// The `rpc.Health` service, added by the server builder to every server.
pub(crate) struct HealthService(pub(crate) Arc<Health>);

impl Service for HealthService {
    fn name(&self) -> &'static str {
        rpc_core::health::SERVICE
    }

    fn methods(&self) -> &'static [Method] {
        &[CHECK]
    }

    fn call(&self, request: Request) -> Dispatch {
        if request.method().id() != CHECK.id() {
            return request.unknown_method();
        }
        let health = self.0.clone();
        request.dispatch(move |(service,): (String,)| async move { health.status(&service) })
    }

    fn signature(&self, method: MethodId) -> Option<&'static Result<Signature, TraceError>> {
        (method == CHECK.id()).then(rpc_core::health::signature)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_start_serving_and_change_one_by_one_until_the_drain() {
        let (signal, draining) = watch::channel(false);
        let health = Health::new(["A", "B"], draining);
        for name in ["", "A", "B"] {
            assert_eq!(health.status(name), HealthStatus::Serving, "{name:?}");
        }
        assert_eq!(health.status("C"), HealthStatus::Unknown);

        assert!(health.set_serving("A", false));
        assert!(!health.set_serving("C", false));
        assert_eq!(health.status("A"), HealthStatus::NotServing);
        assert_eq!(health.status("B"), HealthStatus::Serving);
        assert_eq!(health.status(""), HealthStatus::Serving);
        assert_eq!(health.status("C"), HealthStatus::Unknown);
        assert!(health.set_serving("A", true));
        assert_eq!(health.status("A"), HealthStatus::Serving);

        signal.send_replace(true);
        for name in ["", "A", "B"] {
            assert_eq!(health.status(name), HealthStatus::NotServing, "{name:?}");
        }
        // Setting a flag back does not undo the drain; an unknown name stays unknown.
        assert!(health.set_serving("B", true));
        assert_eq!(health.status("B"), HealthStatus::NotServing);
        assert_eq!(health.status("C"), HealthStatus::Unknown);
    }
}
