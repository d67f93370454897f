#[rpc::service]
pub trait Store {
    async fn put<T>(&self, key: String, value: T);
}

fn main() {}
