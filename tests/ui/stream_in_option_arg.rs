#[rpc::service]
pub trait Sink {
    async fn store(&self, data: Option<rpc::Stream<u8>>) -> u64;
}

fn main() {}
