// The attribute takes `server = Name` and `client = Name`; every other argument is refused,
// each mistake reported once.
#[rpc::service(name = "calc", server = "CalculatorHost", client = rpc::Client, spawn)]
pub trait Calculator {
    async fn add(&self, a: i64, b: i64) -> i64;
}

fn main() {}
