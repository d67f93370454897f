#[rpc::service]
pub trait Session {
    async fn connect(&self, user: String);
    async fn new(&self) -> u64;
    async fn client(&self) -> String;
}

fn main() {}
