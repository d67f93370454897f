// One type implementing two service traits, both hosted on one server: name the trait (or
// the wrapper) where `value.into_service()` would be ambiguous.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

#[rpc::service]
pub trait Adder {
    async fn add(&self, a: u64, b: u64) -> u64;
}

#[rpc::service]
pub trait Counter {
    async fn calls(&self) -> u64;
}

#[derive(Default)]
struct Calc {
    calls: AtomicU64,
}

impl Adder for Calc {
    async fn add(&self, a: u64, b: u64) -> u64 {
        self.calls.fetch_add(1, Ordering::Relaxed);
        a + b
    }
}

impl Counter for Calc {
    async fn calls(&self) -> u64 {
        self.calls.load(Ordering::Relaxed)
    }
}

fn main() {
    // Two values, one per service: name the trait.
    let _separate = rpc::Server::builder()
        .serve(Adder::into_service(Calc::default()))
        .serve(<Calc as Counter>::into_service(Calc::default()));

    // One value behind both services: the wrappers' `from_arc`.
    let calc = Arc::new(Calc::default());
    let _shared = rpc::Server::builder()
        .serve(ServeAdder::from_arc(Arc::clone(&calc)))
        .serve(ServeCounter::from_arc(calc));
}
