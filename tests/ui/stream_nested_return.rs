#[rpc::service]
pub trait Feed {
    async fn numbers(&self) -> Result<rpc::Stream<u8>, String>;
}

fn main() {}
