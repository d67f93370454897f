//! The reflection service every server hosts unless told not to: `rpc.Reflection.list()` and
//! `rpc.Reflection.describe(service, method)` (see `rpc_core::reflection`).
//!
//! The answers are fixed once the server is built (its services do not change), so they are
//! computed then, from the router, into a catalog that calls only read.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use rpc_core::reflection::{MethodDescription, MethodSummary, ServiceSummary, DESCRIBE, LIST};
use rpc_core::shape::{MethodKind, Signature, TraceError};
use rpc_core::{Method, MethodId};

use crate::router::Router;
use crate::service::{Dispatch, Request, Service};

/// What reflection answers: every hosted service and method.
#[derive(Debug, Default)]
pub(crate) struct Catalog {
    services: Vec<ServiceSummary>,
    /// By `(service, method)`.
    methods: HashMap<(String, String), MethodDescription>,
}

impl Catalog {
    /// Describes every method `router` routes (the reflection service included, once it is
    /// added).
    pub(crate) fn new(router: &Router) -> Catalog {
        let mut services: Vec<ServiceSummary> = Vec::new();
        let mut methods = HashMap::new();
        for service in router.services() {
            let mut summary = ServiceSummary {
                name: service.name().to_owned(),
                methods: Vec::new(),
            };
            for method in service.methods() {
                let traced = service.signature(method.id());
                let signature = traced.and_then(|traced| traced.as_ref().ok());
                summary.methods.push(MethodSummary {
                    name: method.name().to_owned(),
                    kind: signature.map(|signature| signature.kind),
                    idempotent: method.is_idempotent(),
                });
                let description = MethodDescription {
                    service: method.service().to_owned(),
                    name: method.name().to_owned(),
                    idempotent: method.is_idempotent(),
                    fingerprint: method.fingerprint(),
                    signature: signature.cloned(),
                    untraceable: traced
                        .and_then(|traced| traced.as_ref().err())
                        .map(ToString::to_string),
                };
                let key = (method.service().to_owned(), method.name().to_owned());
                methods.insert(key, description);
            }
            services.push(summary);
        }
        services.sort_by(|a, b| a.name.cmp(&b.name));
        Catalog { services, methods }
    }

    fn describe(&self, service: &str, method: &str) -> Option<MethodDescription> {
        self.methods
            .get(&(service.to_owned(), method.to_owned()))
            .cloned()
    }
}

/// The `rpc.Reflection` service. Its catalog is set once the router is complete, as it
/// describes itself too.
#[derive(Debug, Default)]
pub(crate) struct ReflectionService(pub(crate) Arc<OnceLock<Catalog>>);

impl Service for ReflectionService {
    fn name(&self) -> &'static str {
        rpc_core::reflection::SERVICE
    }

    fn methods(&self) -> &'static [Method] {
        &[LIST, DESCRIBE]
    }

    fn call(&self, request: Request) -> Dispatch {
        let catalog = self.0.clone();
        match request.method() {
            LIST => request.dispatch(move |(): ()| async move {
                catalog
                    .get()
                    .map(|catalog| catalog.services.clone())
                    .unwrap_or_default()
            }),
            DESCRIBE => request.dispatch(move |(service, method): (String, String)| async move {
                catalog
                    .get()
                    .and_then(|catalog| catalog.describe(&service, &method))
            }),
            _ => request.unknown_method(),
        }
    }

    fn signature(&self, method: MethodId) -> Option<&'static Result<Signature, TraceError>> {
        static SIGNATURES: OnceLock<[Result<Signature, TraceError>; 2]> = OnceLock::new();
        let [list, describe] = SIGNATURES.get_or_init(|| {
            [
                Signature::builder(MethodKind::Unary)
                    .result::<Vec<ServiceSummary>>()
                    .build(),
                Signature::builder(MethodKind::Unary)
                    .arg::<String>("service")
                    .arg::<String>("method")
                    .result::<Option<MethodDescription>>()
                    .build(),
            ]
        });
        if method == LIST.id() {
            Some(list)
        } else if method == DESCRIBE.id() {
            Some(describe)
        } else {
            None
        }
    }
}
