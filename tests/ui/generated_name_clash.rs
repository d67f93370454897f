// The trait, the server type and the client type share one namespace.
#[rpc::service(server = Clock)]
pub trait Clock {
    async fn now(&self) -> u64;
}

#[rpc::service(server = Remote, client = Remote)]
pub trait Timer {
    async fn start(&self);
}

fn main() {}
