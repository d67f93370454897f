#[rpc::service]
pub trait Limits {
    const async fn max(&self) -> u64;
}

fn main() {}
