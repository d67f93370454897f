#[rpc::service]
pub trait Flags {
    #[cfg(unix)]
    async fn extra(&self) -> u64;
    async fn always(&self) -> u64;
}

fn main() {}
