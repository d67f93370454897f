//! Memory budgets that add up, and dead peers noticed at the in-flight limit, over real TCP:
//! parked and shed requests, the cap on client streams, the inbound and outbound budgets,
//! and the server's accounting back at zero once the clients have gone.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use futures::StreamExt;
use rpc::protocol::message::Header;
use support::{eventually, start, within, Raw};
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;

#[rpc::service]
trait Hold {
    /// Waits for the gate, then answers 1.
    async fn wait(&self) -> u32;
    /// Answers at once.
    async fn quick(&self) -> u32;
    /// Waits for the gate before reading anything, then counts the bytes sent.
    async fn upload(&self, chunks: rpc::Stream<Vec<u8>>) -> u64;
    /// Takes a payload it ignores, waits for the gate.
    async fn heavy(&self, payload: Vec<u8>) -> u32;
    /// Answers `len` bytes.
    async fn big(&self, len: u32) -> Vec<u8>;
}

#[derive(Clone)]
struct HoldImpl {
    gate: Arc<Semaphore>,
    /// Handlers that have started.
    started: Arc<AtomicUsize>,
}

impl HoldImpl {
    fn new() -> Self {
        HoldImpl {
            gate: Arc::new(Semaphore::new(0)),
            started: Arc::new(AtomicUsize::new(0)),
        }
    }

    async fn pass(&self) {
        self.started.fetch_add(1, Ordering::SeqCst);
        // Each handler takes one permit and gives it back... to nobody: one per call.
        self.gate.acquire().await.expect("gate open").forget();
    }
}

impl Hold for HoldImpl {
    async fn wait(&self) -> u32 {
        self.pass().await;
        1
    }
    async fn quick(&self) -> u32 {
        2
    }
    async fn upload(&self, mut chunks: rpc::Stream<Vec<u8>>) -> u64 {
        self.pass().await;
        let mut total = 0;
        while let Some(Ok(chunk)) = chunks.next().await {
            total += chunk.len() as u64;
        }
        total
    }
    async fn heavy(&self, payload: Vec<u8>) -> u32 {
        drop(payload);
        self.pass().await;
        3
    }
    async fn big(&self, len: u32) -> Vec<u8> {
        vec![9; len as usize]
    }
}

/// A server with `builder`'s limits hosting a fresh [`HoldImpl`], and a client of it.
async fn hold_server(builder: rpc::ServerBuilder) -> (HoldImpl, support::Running, HoldClient) {
    let service = HoldImpl::new();
    let server = start(builder.serve(service.clone().into_service())).await;
    let client = HoldClient::new(support::connect_pinned(server.addr).await);
    (service, server, client)
}

/// `n` calls to `wait`, each in a task of its own.
fn waits(client: &HoldClient, n: usize) -> Vec<JoinHandle<Result<u32, rpc::Error>>> {
    (0..n)
        .map(|_| {
            let client = client.clone();
            tokio::spawn(async move { client.wait().await })
        })
        .collect()
}

fn everything_released(handle: &rpc::ServerHandle) -> bool {
    let held = handle.accounting();
    held.connections == 0
        && held.in_flight == 0
        && held.inbound_bytes == 0
        && held.outbound_bytes == 0
        && held.streams == 0
        && held.parked == 0
}

#[tokio::test]
async fn a_client_that_fills_the_in_flight_limit_and_leaves_releases_everything() {
    let (service, server, client) =
        hold_server(rpc::Server::builder().max_in_flight_per_connection(4)).await;
    let calls = waits(&client, 10);
    eventually("four calls run and six wait", || {
        let held = server.handle.accounting();
        held.in_flight == 4 && held.parked == 6
    })
    .await;
    let held = server.handle.accounting();
    assert!(held.inbound_bytes > 0, "{held:?}");
    assert_eq!(service.started.load(Ordering::SeqCst), 4);

    // The client goes away without cancelling anything: its process could have died.
    for call in &calls {
        call.abort();
    }
    drop(client);
    eventually("everything the client held is released", || {
        everything_released(&server.handle)
    })
    .await;
    assert_eq!(
        service.started.load(Ordering::SeqCst),
        4,
        "no parked call ran for a client that had gone"
    );
}

#[tokio::test]
async fn a_raw_client_at_the_limit_is_seen_closing_and_cancelling() {
    let service = HoldImpl::new();
    let server = start(
        rpc::Server::builder()
            .max_in_flight_per_connection(2)
            .serve(service.clone().into_service()),
    )
    .await;
    let mut raw = Raw::connect(server.addr).await;
    for id in 1..=5 {
        raw.send_frame(&support::request(id, "Hold", "wait"), &support::body(&()))
            .await;
    }
    eventually("two run, three wait", || {
        let held = server.handle.accounting();
        held.in_flight == 2 && held.parked == 3
    })
    .await;
    // A cancel behind the limit is read: the parked call is forgotten.
    raw.send_frame(&Header::Cancel { id: 4 }, &[]).await;
    eventually("the cancelled call no longer waits", || {
        server.handle.accounting().parked == 2
    })
    .await;
    // So is the end of the connection.
    drop(raw);
    eventually("everything released", || {
        everything_released(&server.handle)
    })
    .await;
}

#[tokio::test]
async fn waiting_requests_run_in_turn_and_shed_ones_are_refused_at_once() {
    // Wait (the default): every call succeeds, never more than two at a time.
    let (service, server, client) =
        hold_server(rpc::Server::builder().max_in_flight_per_connection(2)).await;
    let calls = waits(&client, 6);
    eventually("two run, four wait", || {
        server.handle.accounting().parked == 4
    })
    .await;
    service.gate.add_permits(6);
    for call in calls {
        assert_eq!(within("call", call).await.expect("join").expect("call"), 1);
    }

    // Shed: the third call is refused while two run, and says why.
    let (service, server, client) = hold_server(
        rpc::Server::builder()
            .max_in_flight_per_connection(2)
            .overload(rpc::Overload::Shed),
    )
    .await;
    let running = waits(&client, 2);
    eventually("two calls run", || {
        server.handle.accounting().in_flight == 2
    })
    .await;
    let err = within("refused call", client.wait())
        .await
        .expect_err("shed");
    match &err {
        rpc::Error::Overloaded { reason } => assert!(reason.contains("limit of 2"), "{reason}"),
        other => panic!("expected Overloaded, got {other:?}"),
    }
    assert_eq!(server.handle.accounting().parked, 0);
    service.gate.add_permits(2);
    for call in running {
        assert_eq!(within("call", call).await.expect("join").expect("call"), 1);
    }
    assert_eq!(service.started.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn the_stream_cap_holds_back_client_streams_but_not_unary_calls() {
    let (service, server, client) =
        hold_server(rpc::Server::builder().max_streams_per_connection(1)).await;
    let uploads: Vec<_> = (0..3)
        .map(|_| {
            let client = client.clone();
            tokio::spawn(async move {
                client
                    .upload(rpc::Stream::iter(vec![vec![1u8; 1000]; 5]))
                    .await
            })
        })
        .collect();
    eventually("one upload runs, two wait", || {
        let held = server.handle.accounting();
        held.streams == 3 && held.parked == 2
    })
    .await;
    assert_eq!(
        within("a unary call beside them", client.quick())
            .await
            .expect("unary call"),
        2
    );
    service.gate.add_permits(3);
    for upload in uploads {
        assert_eq!(
            within("upload", upload).await.expect("join").expect("call"),
            5000
        );
    }
    drop(client);
    eventually("everything released", || {
        everything_released(&server.handle)
    })
    .await;
}

#[tokio::test]
async fn unread_client_streams_hold_no_more_than_their_windows() {
    const WINDOW: usize = 64 * 1024;
    const STREAMS: usize = 8;
    let service = HoldImpl::new();
    let server = start(
        rpc::Server::builder()
            .stream_window(WINDOW)
            .serve(service.clone().into_service()),
    )
    .await;
    let client = rpc::Client::builder()
        .stream_window(WINDOW)
        .connect(server.addr)
        .await
        .expect("connect");
    let client = HoldClient::new(client);
    // Each upload offers 16 windows' worth that the handler does not read.
    let sent = Arc::new(AtomicUsize::new(0));
    let uploads: Vec<_> = (0..STREAMS)
        .map(|_| {
            let client = client.clone();
            let sent = sent.clone();
            tokio::spawn(async move {
                let chunks = futures::stream::iter(0..64).map(move |_| {
                    sent.fetch_add(1, Ordering::SeqCst);
                    vec![5u8; 16 * 1024]
                });
                client.upload(rpc::Stream::new(chunks)).await
            })
        })
        .collect();
    // Every upload's producer stops once its window is full.
    eventually("all uploads wait for credit", || {
        server.handle.accounting().streams == STREAMS && sent.load(Ordering::SeqCst) >= STREAMS
    })
    .await;
    let held = server.handle.accounting();
    // Each stream: its window, its request, the call's bookkeeping.
    let bound = STREAMS * (WINDOW + 4096);
    assert!(
        held.inbound_bytes <= bound,
        "{} bytes held for {STREAMS} unread streams, bound {bound}",
        held.inbound_bytes
    );
    assert!(
        sent.load(Ordering::SeqCst) < STREAMS * 64,
        "producers were not held back"
    );
    service.gate.add_permits(STREAMS);
    for upload in uploads {
        assert_eq!(
            within("upload", upload).await.expect("join").expect("call"),
            64 * 16 * 1024
        );
    }
    drop(client);
    eventually("everything released", || {
        everything_released(&server.handle)
    })
    .await;
}

#[tokio::test]
async fn a_request_beyond_the_inbound_budget_is_refused_and_others_carry_on() {
    let service = HoldImpl::new();
    let server = start(
        rpc::Server::builder()
            .max_frame_len(64 * 1024)
            .stream_window(4 * 1024)
            // The smallest budget allowed is one request of the largest size.
            .max_inbound_bytes_per_connection(100 * 1024)
            .serve(service.clone().into_service()),
    )
    .await;
    let client = HoldClient::new(support::connect_pinned(server.addr).await);
    let first = tokio::spawn({
        let client = client.clone();
        async move { client.heavy(vec![0; 60 * 1024]).await }
    });
    eventually("the first heavy call runs", || {
        service.started.load(Ordering::SeqCst) == 1
    })
    .await;
    let err = within("second heavy call", client.heavy(vec![0; 60 * 1024]))
        .await
        .expect_err("does not fit the budget");
    match &err {
        rpc::Error::Overloaded { reason } => {
            assert!(reason.contains("inbound budget"), "{reason}")
        }
        other => panic!("expected Overloaded, got {other:?}"),
    }
    // Small calls still fit beside the one that holds the budget.
    assert_eq!(within("quick", client.quick()).await.expect("quick"), 2);
    service.gate.add_permits(1);
    assert_eq!(
        within("first", first).await.expect("join").expect("call"),
        3
    );
    drop(client);
    eventually("everything released", || {
        everything_released(&server.handle)
    })
    .await;
}

#[tokio::test]
async fn replies_to_clients_that_do_not_read_stay_within_the_outbound_budget() {
    const BUDGET: usize = 256 * 1024;
    const REPLY: u32 = 64 * 1024;
    let service = HoldImpl::new();
    let server = start(
        rpc::Server::builder()
            // Each connection alone could queue four times the total.
            .write_high_water(1 << 20)
            .max_outbound_bytes(BUDGET)
            .serve(service.into_service()),
    )
    .await;
    // Three clients ask for 32 MiB each, and read none of it.
    let mut raws = Vec::new();
    for _ in 0..3 {
        let mut raw = Raw::connect(server.addr).await;
        for id in 1..=512 {
            raw.send_frame(
                &support::request(id, "Hold", "big"),
                &support::body(&(REPLY,)),
            )
            .await;
        }
        raws.push(raw);
    }
    // Handlers end up waiting for room: the kernel's buffers are full, and so is the budget.
    eventually("handlers wait for room to reply", || {
        server.handle.accounting().in_flight > 0
    })
    .await;
    let most = BUDGET + 3 * 2 * (REPLY as usize + 64);
    for _ in 0..20 {
        let held = server.handle.accounting();
        assert!(
            held.outbound_bytes <= most,
            "{} bytes queued, at most {most}",
            held.outbound_bytes
        );
        tokio::task::yield_now().await;
    }
    // A well-behaved client is answered once room comes back; the others leave.
    drop(raws);
    eventually("everything released", || {
        everything_released(&server.handle)
    })
    .await;
}
