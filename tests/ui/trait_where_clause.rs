#[rpc::service]
pub trait Store
where
    Self: Sized,
{
    async fn len(&self) -> u64;
}

fn main() {}
