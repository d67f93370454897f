//! `#[idempotent]` marks a method's `rpc::Method` on both sides, leaves its id alone, and
//! is gone from the trait the user implements; a server stream may be idempotent.
use rpc::Service as _;

#[rpc::service]
pub trait Store {
    /// Reads a value.
    #[idempotent]
    async fn get(&self, key: String) -> u64;
    async fn put(&self, key: String, value: u64);
    #[idempotent]
    async fn scan(&self, prefix: String) -> rpc::Stream<String>;
}

struct Impl;

impl Store for Impl {
    async fn get(&self, _key: String) -> u64 {
        0
    }
    async fn put(&self, _key: String, _value: u64) {}
    async fn scan(&self, _prefix: String) -> rpc::Stream<String> {
        rpc::Stream::empty()
    }
}

fn main() {
    let service = Impl.into_service();
    let marked: Vec<(&str, bool)> = service
        .methods()
        .iter()
        .map(|method| (method.name(), method.is_idempotent()))
        .collect();
    assert_eq!(marked, [("get", true), ("put", false), ("scan", true)]);
    assert_eq!(
        service.methods()[0].id(),
        rpc::Method::new("Store", "get").id()
    );
}
