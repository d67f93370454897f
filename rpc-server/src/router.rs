//! Which service answers which method id.

use std::sync::Arc;

use rpc_core::ids::IdMap;
use rpc_core::{Method, MethodId};

use crate::intercept::{Intercepted, ServerInterceptor};
use crate::service::Service;

/// Method id to service, built once when the server is configured.
#[derive(Default, Clone)]
pub(crate) struct Router {
    /// Method ids are hashes already and the table is fixed before any peer connects.
    routes: IdMap<MethodId, Route>,
}

#[derive(Clone)]
pub(crate) struct Route {
    pub(crate) service: Arc<dyn Service>,
    pub(crate) method: Method,
    pub(crate) run: RunOn,
}

/// Where the calls of a service run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RunOn {
    /// Polled by the connection's own task, first right where the request was read (the
    /// default: most calls finish in that first poll).
    Connection,
    /// Each call is a tokio task of its own, owned by the connection (for handlers that block
    /// or burn CPU).
    OwnTask,
}

impl Router {
    /// Adds every method of `service`.
    ///
    /// # Panics
    /// If a method id is already taken: two services with the same name, or (vanishingly
    /// unlikely) two `Service.method` names whose hashes collide.
    pub(crate) fn add(&mut self, service: Arc<dyn Service>, run: RunOn) {
        for method in service.methods() {
            if let Some(Err(err)) = service.signature(method.id()) {
                tracing::warn!(
                    "{method}: {err}; its calls carry no signature fingerprint, so a client \
                     built from another signature is not refused"
                );
            }
            let route = Route {
                service: service.clone(),
                method: *method,
                run,
            };
            if let Some(existing) = self.routes.insert(method.id(), route) {
                panic!(
                    "method {method} (id {}) is already served by {}: each service may be added \
                     to a server once, and method ids must be unique",
                    method.id(),
                    existing.method
                );
            }
        }
    }

    /// Puts every route's service behind `interceptor` (outside any interceptor already
    /// there: this one runs first).
    pub(crate) fn intercept_all(&mut self, interceptor: &Arc<dyn ServerInterceptor>) {
        for route in self.routes.values_mut() {
            route.service = Arc::new(Intercepted::shared(
                route.service.clone(),
                interceptor.clone(),
            ));
        }
    }

    /// Replaces each service with `wrap(service)`, once per service: all the methods of one
    /// service share the wrapped one.
    #[cfg(feature = "tower")]
    pub(crate) fn wrap_services(&mut self, wrap: &dyn Fn(Arc<dyn Service>) -> Arc<dyn Service>) {
        let mut wrapped: Vec<(Arc<dyn Service>, Arc<dyn Service>)> = Vec::new();
        for route in self.routes.values_mut() {
            let known = wrapped
                .iter()
                .find(|(original, _)| Arc::ptr_eq(original, &route.service));
            let new = match known {
                Some((_, new)) => new.clone(),
                None => {
                    let new = wrap(route.service.clone());
                    wrapped.push((route.service.clone(), new.clone()));
                    new
                }
            };
            route.service = new;
        }
    }

    pub(crate) fn get(&self, id: MethodId) -> Option<&Route> {
        self.routes.get(&id)
    }

    /// The name of every service added, each once, in no particular order.
    pub(crate) fn service_names(&self) -> Vec<&'static str> {
        let mut names: Vec<&'static str> = self
            .routes
            .values()
            .map(|route| route.service.name())
            .collect();
        names.sort_unstable();
        names.dedup();
        names
    }

    /// Every service added, each once, in no particular order.
    pub(crate) fn services(&self) -> Vec<Arc<dyn Service>> {
        let mut services: Vec<Arc<dyn Service>> = Vec::new();
        for route in self.routes.values() {
            if !services.iter().any(|s| Arc::ptr_eq(s, &route.service)) {
                services.push(route.service.clone());
            }
        }
        services
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }
}
