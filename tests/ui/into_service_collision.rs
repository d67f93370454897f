#[rpc::service]
pub trait Deployer {
    async fn into_service(&self, name: String);
}

fn main() {}
