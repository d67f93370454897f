//! A deprecated method warns its callers, not the code generated to serve it; attributes on
//! parameters are kept.
#![deny(deprecated, unused_variables)]

#[rpc::service]
pub trait Legacy {
    #[deprecated(note = "use `add`")]
    async fn old_add(&self, a: i64, b: i64) -> i64;
    async fn add(&self, a: i64, b: i64) -> i64;
    /// A default body that ignores its argument.
    async fn ignore(&self, #[allow(unused_variables)] n: u64) -> u64 {
        0
    }
}

struct Impl;

impl Legacy for Impl {
    async fn old_add(&self, a: i64, b: i64) -> i64 {
        a + b
    }
    async fn add(&self, a: i64, b: i64) -> i64 {
        a + b
    }
}

fn main() {
    let _service = Impl.into_service();
}
