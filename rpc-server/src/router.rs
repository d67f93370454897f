//! Which service answers which method id.

use std::sync::Arc;

use rpc_core::ids::IdMap;
use rpc_core::{Method, MethodId};

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
}

impl Router {
    /// Adds every method of `service`.
    ///
    /// # Panics
    /// If a method id is already taken: two services with the same name, or (vanishingly
    /// unlikely) two `Service.method` names whose hashes collide.
    pub(crate) fn add(&mut self, service: Arc<dyn Service>) {
        for method in service.methods() {
            let route = Route {
                service: service.clone(),
                method: *method,
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

    pub(crate) fn get(&self, id: MethodId) -> Option<&Route> {
        self.routes.get(&id)
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }
}
