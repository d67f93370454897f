#[rpc::service]
pub trait Store {
    async fn clear(&self, _: bool);
}

fn main() {}
