#[rpc::service]
pub trait Store {
    async fn len(&self) -> u64
    where
        u64: Copy;
}

fn main() {}
