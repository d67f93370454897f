#[rpc::service]
pub trait Greeter {
    async fn greeting(&self) -> &'static str;
}

fn main() {}
