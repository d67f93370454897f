#[rpc::service]
pub trait Calculator {
    async fn add(&self, a: i64, b: i64) -> i64;
    async fn r#add(&self, a: i64, b: i64, c: i64) -> i64;
}

fn main() {}
