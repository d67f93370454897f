#[rpc::service]
pub trait Calculator {
    async fn add(a: i64, b: i64) -> i64;
}

fn main() {}
