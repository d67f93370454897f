#[rpc::service]
pub trait Store {
    #[idempotent(true)]
    async fn get(&self, key: String) -> u64;
    #[idempotent = "yes"]
    async fn len(&self) -> u64;
}

fn main() {}
