#[rpc::service]
pub trait Store {
    #[idempotent]
    /// Reads a value.
    #[idempotent]
    async fn get(&self, key: String) -> u64;
}

fn main() {}
