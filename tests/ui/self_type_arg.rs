#[rpc::service]
pub trait Merge {
    async fn merge(&self, other: Self);
}

fn main() {}
