// A deprecated trait method warns the code that calls it through the client stub.
#![deny(deprecated)]

#[rpc::service]
pub trait Legacy {
    /// Adds; kept for old callers.
    #[deprecated(note = "use `add`")]
    async fn old_add(&self, a: i64, b: i64) -> i64;
    async fn add(&self, a: i64, b: i64) -> i64;
}

async fn caller(client: LegacyClient) -> Result<i64, rpc::Error> {
    let new = client.add(1, 2).await?;
    let old = client.old_add(1, 2).await?;
    Ok(new + old)
}

fn main() {
    let _caller = caller;
}
