// One type implementing two service traits: `into_service` must say which one.
#[rpc::service]
pub trait Adder {
    async fn add(&self, a: i64, b: i64) -> i64;
}

#[rpc::service]
pub trait Multiplier {
    async fn mul(&self, a: i64, b: i64) -> i64;
}

struct Calc;

impl Adder for Calc {
    async fn add(&self, a: i64, b: i64) -> i64 {
        a + b
    }
}

impl Multiplier for Calc {
    async fn mul(&self, a: i64, b: i64) -> i64 {
        a * b
    }
}

fn main() {
    let _ = rpc::Server::builder().serve(Calc.into_service());
}
