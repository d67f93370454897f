#[rpc::service]
pub trait Memory {
    async extern "C" fn peek(&self, address: u64) -> u8;
}

fn main() {}
