use std::borrow::Cow;

#[rpc::service]
pub trait Store {
    async fn get(&self, key: Cow<'_, str>) -> Option<Cow<'static, str>>;
}

fn main() {}
