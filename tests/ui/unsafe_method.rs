#[rpc::service]
pub trait Memory {
    async unsafe fn poke(&self, address: u64, value: u8);
}

fn main() {}
