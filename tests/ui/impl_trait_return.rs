#[rpc::service]
pub trait Store {
    async fn keys(&self) -> impl Iterator<Item = String>;
}

fn main() {}
