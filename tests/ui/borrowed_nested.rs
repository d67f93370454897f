#[rpc::service]
pub trait Store {
    async fn put_all(&self, keys: Vec<&'static [u8]>);
}

fn main() {}
