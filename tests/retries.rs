//! A call whose connection is lost before its reply may have run: it is sent again only if
//! its method is idempotent, within the retry budget; anything else fails with an error
//! that says the call may have run.

mod support;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use support::within;

#[rpc::service]
trait Store {
    /// Reading twice is reading once.
    #[idempotent]
    async fn get(&self) -> u32;
    /// Not idempotent: never sent twice.
    async fn put(&self) -> u32;
    /// A request larger than the sockets can hold while the server does not read.
    async fn upload(&self, data: serde_bytes::ByteBuf) -> u32;
}

/// A server whose first `drops` connections each read one request and then vanish without
/// a reply; later connections answer every request with 4242. Counts the requests it read.
async fn dropping_server(drops: usize) -> (SocketAddr, Arc<AtomicUsize>) {
    use rpc::protocol::message::Header;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let requests = Arc::new(AtomicUsize::new(0));
    let seen = requests.clone();
    tokio::spawn(async move {
        let mut connections = tokio::task::JoinSet::new();
        for index in 0.. {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let seen = seen.clone();
            if index < drops {
                connections.spawn(async move {
                    let (tx, mut rx) = tokio::sync::mpsc::channel(1);
                    let play = support::play_server(stream, move |header, _| {
                        if matches!(header, Header::Request(_)) {
                            seen.fetch_add(1, Ordering::SeqCst);
                            let _ = tx.try_send(());
                        }
                        bytes::BytesMut::new()
                    });
                    // The connection (and its socket) is dropped once a request arrived.
                    tokio::select! {
                        () = play => {}
                        _ = rx.recv() => {}
                    }
                });
            } else {
                connections.spawn(support::play_server(stream, move |header, _| {
                    let mut out = bytes::BytesMut::new();
                    if let Header::Request(request) = header {
                        seen.fetch_add(1, Ordering::SeqCst);
                        support::ok_response(&mut out, request.id, &4242u32);
                    }
                    out
                }));
            }
        }
    });
    (addr, requests)
}

#[tokio::test]
async fn an_idempotent_call_whose_connection_is_lost_is_sent_again() {
    let (addr, requests) = dropping_server(1).await;
    let client = rpc::Client::connect(addr).await.expect("connect");
    let store = StoreClient::new(client.clone());
    let got = within("get", store.get()).await.expect("sent again");
    assert_eq!(got, 4242);
    assert_eq!(requests.load(Ordering::SeqCst), 2);
    assert_eq!(client.retries(), 1);
}

#[tokio::test]
async fn a_call_that_may_have_run_is_not_sent_again_unless_idempotent() {
    let (addr, requests) = dropping_server(1).await;
    let client = rpc::Client::connect(addr).await.expect("connect");
    let store = StoreClient::new(client.clone());
    let err = within("put", store.put())
        .await
        .expect_err("lost, not retried");
    assert!(matches!(err, rpc::Error::ConnectionClosed { .. }), "{err}");
    assert!(err.may_have_run());
    assert_eq!(requests.load(Ordering::SeqCst), 1);
    assert_eq!(client.retries(), 0);
    // The next call redials and is answered.
    assert_eq!(within("put", store.put()).await.expect("answered"), 4242);
}

#[tokio::test]
async fn the_retry_budget_stops_retries_when_most_attempts_fail() {
    // Every connection is lost. No deposits (ratio 0) and a reserve of 3 retries a second:
    // the first call takes 3 attempts (the most allowed: 2 retries), the second 2 (the last
    // retry), and from then on (within the second) every call gets exactly one attempt.
    let (addr, requests) = dropping_server(usize::MAX).await;
    let client = rpc::Client::builder()
        .retry_budget(0.0, 3)
        .max_attempts(3)
        .connect(addr)
        .await
        .expect("connect");
    let store = StoreClient::new(client.clone());
    let mut attempts = Vec::new();
    for _ in 0..4 {
        let before = requests.load(Ordering::SeqCst);
        let err = within("get", store.get()).await.expect_err("always lost");
        assert!(err.may_have_run(), "{err}");
        attempts.push(requests.load(Ordering::SeqCst) - before);
    }
    assert_eq!(attempts, [3, 2, 1, 1]);
    assert_eq!(client.retries(), 3);
}

/// A server whose first connection reads a little of what the client sends, reports that,
/// then stops reading and, once told to, vanishes; later connections answer every request
/// with 4242. Reports each request a later connection answered, by method id.
async fn stalling_server() -> (
    SocketAddr,
    tokio::sync::mpsc::Receiver<()>,
    tokio::sync::oneshot::Sender<()>,
    tokio::sync::mpsc::Receiver<u64>,
) {
    use rpc::protocol::message::Header;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (reading, read_some) = tokio::sync::mpsc::channel(1);
    let (vanish, told) = tokio::sync::oneshot::channel::<()>();
    let (answered, answers) = tokio::sync::mpsc::channel(16);
    tokio::spawn(async move {
        let Ok((mut first, _)) = listener.accept().await else {
            return;
        };
        let mut hello = [0u8; 8];
        first.read_exact(&mut hello).await.expect("preamble");
        first.write_all(&hello).await.expect("answer");
        let mut some = vec![0u8; 64 * 1024];
        first
            .read_exact(&mut some)
            .await
            .expect("the start of the upload");
        let _ = reading.send(()).await;
        let _ = told.await;
        drop(first);
        let mut connections = tokio::task::JoinSet::new();
        while let Ok((stream, _)) = listener.accept().await {
            let answered = answered.clone();
            connections.spawn(support::play_server(stream, move |header, _| {
                let mut out = bytes::BytesMut::new();
                if let Header::Request(request) = header {
                    let _ = answered.try_send(request.method);
                    support::ok_response(&mut out, request.id, &4242u32);
                }
                out
            }));
        }
    });
    (addr, read_some, vanish, answers)
}

#[tokio::test]
async fn a_call_whose_request_was_never_written_is_sent_again_even_if_not_idempotent() {
    let (addr, mut read_some, vanish, mut answers) = stalling_server().await;
    let client = rpc::Client::builder()
        .max_frame_len(128 << 20)
        .connect(addr)
        .await
        .expect("connect");
    let store = StoreClient::new(client.clone());
    // 64 MiB: more than both sockets hold, so the writer is stuck inside this write.
    let upload = tokio::spawn({
        let store = store.clone();
        async move {
            store
                .upload(serde_bytes::ByteBuf::from(vec![7u8; 64 << 20]))
                .await
        }
    });
    within("the server reads the start of the upload", read_some.recv())
        .await
        .expect("reading");
    // Queued behind the upload: it waits in the write buffer the writer has not taken.
    let put = tokio::spawn({
        let store = store.clone();
        async move { store.put().await }
    });
    support::eventually("both calls in flight", || client.in_flight() == 2).await;
    let _ = vanish.send(());

    let put = within("put", put).await.expect("join");
    assert_eq!(put.expect("sent again: it never reached the server"), 4242);
    let answered = within("answer", answers.recv()).await;
    assert_eq!(answered, Some(rpc::MethodId::of("Store", "put").as_u64()));
    assert!(client.retries() >= 1);
    // The upload was partly written: it may have run, and is not idempotent.
    let upload = within("upload", upload).await.expect("join");
    let err = upload.expect_err("lost with its connection");
    assert!(matches!(err, rpc::Error::ConnectionClosed { .. }), "{err}");
    assert!(err.may_have_run());
}
