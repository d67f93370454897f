#[rpc::service]
pub trait Files {
    async fn upload(&self, data: rpc::Stream<Vec<u8>>, name: String) -> u64;
}

fn main() {}
