//! A service hosted with `serve_spawned`: each call runs as a task of its own, so a handler
//! that blocks its thread does not stall the other calls of its connection, and the call is
//! still stopped by a cancel, its deadline and the connection's end, still reports a panic,
//! and still counts against the in-flight limit.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};

use rpc::protocol::message::{Header, Status};
use support::{body, eventually, request, start, within, Raw};
use tokio::sync::Semaphore;

#[rpc::service]
trait Work {
    async fn quick(&self, n: u32) -> u32;
    /// Blocks its thread until the test releases it (or drops the release).
    async fn block(&self) -> u32;
    async fn panics(&self) -> u32;
    /// Never finishes on its own; signals when its future is dropped.
    async fn hangs(&self);
    /// Waits for the gate; records how many run at once.
    async fn gated(&self) -> u32;
}

struct WorkImpl {
    /// One permit per handler that started.
    started: Arc<Semaphore>,
    /// One permit per `hangs` handler dropped.
    dropped: Arc<Semaphore>,
    /// What `block` waits on with a blocking receive.
    release: Mutex<mpsc::Receiver<()>>,
    gate: Arc<Semaphore>,
    active: AtomicUsize,
    max_active: Arc<AtomicUsize>,
}

/// What a test keeps of a [`WorkImpl`] it hands to a server.
struct Probes {
    started: Arc<Semaphore>,
    dropped: Arc<Semaphore>,
    release: mpsc::SyncSender<()>,
    gate: Arc<Semaphore>,
    max_active: Arc<AtomicUsize>,
}

fn work() -> (WorkImpl, Probes) {
    let (release_tx, release_rx) = mpsc::sync_channel(1);
    let svc = WorkImpl {
        started: Arc::new(Semaphore::new(0)),
        dropped: Arc::new(Semaphore::new(0)),
        release: Mutex::new(release_rx),
        gate: Arc::new(Semaphore::new(0)),
        active: AtomicUsize::new(0),
        max_active: Arc::default(),
    };
    let probes = Probes {
        started: svc.started.clone(),
        dropped: svc.dropped.clone(),
        release: release_tx,
        gate: svc.gate.clone(),
        max_active: svc.max_active.clone(),
    };
    (svc, probes)
}

/// Signals when a handler's future is dropped.
struct DropSignal(Arc<Semaphore>);

impl Drop for DropSignal {
    fn drop(&mut self) {
        self.0.add_permits(1);
    }
}

impl Work for WorkImpl {
    async fn quick(&self, n: u32) -> u32 {
        n
    }
    async fn block(&self) -> u32 {
        self.started.add_permits(1);
        // Blocks this worker thread, as CPU-heavy or blocking code would. The receive
        // fails (and the handler returns) if the test drops its sender.
        let release = self.release.lock().expect("release lock");
        match release.recv() {
            Ok(()) => 1,
            Err(_) => 0,
        }
    }
    async fn panics(&self) -> u32 {
        panic!("spawned boom")
    }
    async fn hangs(&self) {
        let _signal = DropSignal(self.dropped.clone());
        self.started.add_permits(1);
        std::future::pending::<()>().await
    }
    async fn gated(&self) -> u32 {
        let now = self.active.fetch_add(1, Ordering::SeqCst) + 1;
        self.max_active.fetch_max(now, Ordering::SeqCst);
        self.started.add_permits(1);
        self.gate.acquire().await.expect("gate").forget();
        self.active.fetch_sub(1, Ordering::SeqCst);
        2
    }
}

/// Waits for one permit of `signals`.
async fn signalled(what: &str, signals: &Semaphore) {
    within(what, signals.acquire())
        .await
        .expect("semaphore open")
        .forget();
}

/// Reads frames until the response to call `id`, and returns its status.
async fn response(raw: &mut Raw, id: u64) -> Status {
    loop {
        match raw.next().await {
            Some((Header::Response { id: got, status }, _)) if got == id => return status,
            Some(_) => {}
            None => panic!("connection closed before the response to call {id}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blocking_handler_does_not_stall_the_other_calls_of_its_connection() {
    let (svc, probes) = work();
    let server = start(rpc::Server::builder().serve_spawned(svc.into_service())).await;
    // One connection, never redialed: both calls share it.
    let client = WorkClient::new(support::connect_pinned(server.addr).await);
    let blocked = tokio::spawn({
        let client = client.clone();
        async move { client.block().no_deadline().await }
    });
    signalled("blocking handler started", &probes.started).await;

    // Its thread is blocked in a receive that only the test can end; a call on the same
    // connection still completes.
    assert_eq!(
        within("a call beside a blocked handler", client.quick(7))
            .await
            .expect("quick call"),
        7
    );
    assert!(!blocked.is_finished(), "the blocking handler was released");

    probes.release.send(()).expect("handler waiting");
    assert_eq!(
        within("released call", blocked)
            .await
            .expect("join")
            .expect("call"),
        1
    );
}

#[tokio::test]
async fn a_spawned_handler_that_panics_fails_its_call_with_handler_panicked() {
    let (svc, _probes) = work();
    let server = start(
        rpc::Server::builder()
            .expose_panic_messages(true)
            .serve_spawned(svc.into_service()),
    )
    .await;
    let client = WorkClient::new(support::connect_pinned(server.addr).await);
    let err = within("panicking call", client.panics())
        .await
        .expect_err("panicked");
    assert!(
        matches!(err, rpc::Error::HandlerPanicked { ref message } if message == "spawned boom"),
        "{err}"
    );
    assert_eq!(client.quick(3).await.expect("same connection"), 3);
    assert_eq!(server.handle.in_flight(), 0);
}

#[tokio::test]
async fn a_cancel_stops_a_spawned_handler() {
    let (svc, probes) = work();
    let server = start(rpc::Server::builder().serve_spawned(svc.into_service())).await;
    let mut raw = Raw::connect(server.addr).await;
    raw.send_frame(&request(1, "Work", "hangs"), &body(&()))
        .await;
    signalled("handler started", &probes.started).await;
    assert_eq!(server.handle.in_flight(), 1);
    raw.send_frame(&Header::Cancel { id: 1 }, &[]).await;
    signalled("handler dropped after cancel", &probes.dropped).await;
    eventually("in-flight count back to zero", || {
        server.handle.in_flight() == 0
    })
    .await;
    // The connection goes on.
    raw.send_frame(&request(2, "Work", "quick"), &body(&(5u32,)))
        .await;
    assert!(matches!(response(&mut raw, 2).await, Status::Ok));
}

#[tokio::test]
async fn the_server_enforces_the_deadline_of_a_spawned_call() {
    // A raw client that neither times out nor cancels: only the server's timer ends the call.
    let (svc, probes) = work();
    let server = start(rpc::Server::builder().serve_spawned(svc.into_service())).await;
    let mut raw = Raw::connect(server.addr).await;
    let header = match request(1, "Work", "hangs") {
        Header::Request(mut request) => {
            request.timeout_micros = Some(100_000);
            Header::Request(request)
        }
        other => other,
    };
    raw.send_frame(&header, &body(&())).await;
    let status = response(&mut raw, 1).await;
    let deadline_exceeded = rpc::ErrorCode::DeadlineExceeded.to_u16();
    assert!(
        matches!(status, Status::Error { code, .. } if code == deadline_exceeded),
        "{status:?}"
    );
    signalled("handler dropped at its deadline", &probes.dropped).await;
    eventually("in-flight count back to zero", || {
        server.handle.in_flight() == 0
    })
    .await;
}

#[tokio::test]
async fn a_closing_connection_stops_its_spawned_handlers() {
    let (svc, probes) = work();
    let server = start(rpc::Server::builder().serve_spawned(svc.into_service())).await;
    let mut raw = Raw::connect(server.addr).await;
    for id in 1..=3 {
        raw.send_frame(&request(id, "Work", "hangs"), &body(&()))
            .await;
    }
    for _ in 0..3 {
        signalled("handler started", &probes.started).await;
    }
    drop(raw);
    for _ in 0..3 {
        signalled("handler dropped with its connection", &probes.dropped).await;
    }
    eventually("in-flight count back to zero", || {
        server.handle.in_flight() == 0
    })
    .await;
}

#[tokio::test]
async fn spawned_calls_count_against_the_in_flight_limit() {
    let (svc, probes) = work();
    let server = start(
        rpc::Server::builder()
            .max_in_flight_per_connection(2)
            .serve_spawned(svc.into_service()),
    )
    .await;
    let client = WorkClient::new(support::connect_pinned(server.addr).await);
    let calls: Vec<_> = (0..6)
        .map(|_| {
            let client = client.clone();
            tokio::spawn(async move { client.gated().await })
        })
        .collect();
    for _ in 0..6 {
        signalled("a handler starts", &probes.started).await;
        assert!(probes.max_active.load(Ordering::SeqCst) <= 2);
        probes.gate.add_permits(1);
    }
    for call in calls {
        assert_eq!(within("call", call).await.expect("join").expect("call"), 2);
    }
    assert_eq!(
        probes.max_active.load(Ordering::SeqCst),
        2,
        "the limit was never reached"
    );
}
