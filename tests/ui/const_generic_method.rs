#[rpc::service]
pub trait Store {
    async fn first<const N: usize>(&self) -> Vec<u8>;
}

fn main() {}
