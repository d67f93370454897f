#[rpc::service]
pub struct Calculator {
    total: i64,
}

fn main() {}
