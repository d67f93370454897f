#[rpc::service]
pub trait Files {
    #[idempotent]
    async fn upload(&self, name: String, data: rpc::Stream<Vec<u8>>) -> u64;
    /// A stream back is fine: the request is what a retry sends again.
    #[idempotent]
    async fn download(&self, name: String) -> rpc::Stream<Vec<u8>>;
}

fn main() {}
