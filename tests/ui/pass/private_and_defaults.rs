// Private services, default bodies (which may use `self`, `?` and `return`),
// raw identifiers, one-argument methods and `mut` arguments.

#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct Item {
    name: String,
}

#[rpc::service]
trait Inventory {
    async fn get(&self, id: u64) -> Option<Item>;

    async fn name(&self, id: u64) -> Result<String, String> {
        let item = self.get(id).await.ok_or_else(|| format!("no item {id}"))?;
        if item.name.is_empty() {
            return Err("unnamed".to_owned());
        }
        Ok(item.name)
    }

    async fn r#move(&self, from: u64, to: u64);

    async fn bump(&self, mut by: u64) -> u64;
}

struct Memory;

impl Inventory for Memory {
    async fn get(&self, id: u64) -> Option<Item> {
        (id == 1).then(|| Item {
            name: "one".to_owned(),
        })
    }

    async fn r#move(&self, _from: u64, _to: u64) {}

    async fn bump(&self, mut by: u64) -> u64 {
        by += 1;
        by
    }
}

/// Overrides the provided method.
struct Fixed;

impl Inventory for Fixed {
    async fn get(&self, _id: u64) -> Option<Item> {
        None
    }

    async fn name(&self, _id: u64) -> Result<String, String> {
        Ok("fixed".to_owned())
    }

    async fn r#move(&self, _from: u64, _to: u64) {}

    async fn bump(&self, by: u64) -> u64 {
        by
    }
}

fn hostable<S: rpc::Service>(_: S) {}

fn main() {
    hostable(ServeInventory::new(Memory));
    hostable(Fixed.into_service());
    let _move = InventoryClient::r#move;
    let _name: fn(&InventoryClient, u64) -> rpc::Call<(u64,), Result<String, String>> =
        InventoryClient::name;
}
