#[rpc::service]
pub trait Store {
    async fn get<'a>(&self, key: std::borrow::Cow<'a, str>) -> Option<String>;
}

fn main() {}
