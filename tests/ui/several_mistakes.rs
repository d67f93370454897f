// Every mistake is reported in one go, each exactly once.
#[rpc::service]
pub trait Calculator {
    fn add(&self, a: i64, b: i64) -> i64;
    async fn concat(&self, a: &str, b: &str) -> String;
    async fn reset(&mut self);
    async fn ok(&self) -> u8;
}

fn main() {}
