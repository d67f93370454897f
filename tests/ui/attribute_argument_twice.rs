#[rpc::service(server = CalculatorHost, client = CalculatorRemote, server = Host)]
pub trait Calculator {
    async fn add(&self, a: i64, b: i64) -> i64;
}

fn main() {}
