// Generated names stay out of the way of the names people give their own types.

/// The tarpc naming: the implementation is called `<Trait>Server`. The generated wrapper is
/// `ServeLoop`, so the two live side by side.
#[rpc::service]
pub trait Loop {
    async fn tick(&self) -> u64;
}

pub struct LoopServer;

impl Loop for LoopServer {
    async fn tick(&self) -> u64 {
        1
    }
}

/// Both generated names can be chosen, for when a default collides with a type of the
/// user's (here `ClockClient` and `ServeClock` are the user's own).
#[rpc::service(server = ClockHost, client = ClockRemote)]
pub trait Clock {
    async fn now(&self) -> u64;
}

pub struct ClockClient;
pub struct ServeClock;

impl Clock for ServeClock {
    async fn now(&self) -> u64 {
        0
    }
}

/// One of the two alone.
#[rpc::service(client = r#Remote)]
trait Timer {
    async fn start(&self);
}

impl Timer for LoopServer {
    async fn start(&self) {}
}

fn hostable<S: rpc::Service>(_: &S) {}

#[allow(dead_code)] // compiled, never run: it needs a server
async fn use_clients() -> Result<(), rpc::Error> {
    let tick: u64 = LoopClient::connect("127.0.0.1:4000").await?.tick().await?;
    let now: u64 = ClockRemote::connect("127.0.0.1:4000").await?.now().await?;
    let () = Remote::connect("127.0.0.1:4000").await?.start().await?;
    drop((tick, now, ClockClient));
    Ok(())
}

fn main() {
    let looped: ServeLoop<LoopServer> = Loop::into_service(LoopServer);
    let clock: ClockHost<ServeClock> = ServeClock.into_service();
    let timer: ServeTimer<LoopServer> = ServeTimer::new(LoopServer);
    hostable(&looped);
    hostable(&clock);
    hostable(&timer);
}
