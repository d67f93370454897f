#[rpc::service]
pub trait Printer {
    async fn print(&self, format: String, _: ...);
}

fn main() {}
