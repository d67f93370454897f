//! `floor`: the practical limit. Hand-written tokio + `LengthDelimitedCodec`, no
//! serialization: a request is `[u32 len][u64 id][u8 method][raw bytes]`, a reply
//! `[u32 len][u64 id][raw bytes]`. Each side has one writer per connection that takes every
//! frame queued so far and writes them with one `write_all`; it yields once before taking
//! them, so every caller that is ready joins the same write. The server answers `add` and
//! `echo` inline in its reader (no task per call); `hold` gets a task, since it waits.
//! TCP_NODELAY on both ends.
//!
//! Streams use the same request frames, with ids that have [`STREAM_BIT`] set; every frame
//! the server sends for such an id carries a kind byte after the id, so it is
//! `[u32 len][u64 id][u8 kind][raw bytes]` in both directions. An item is one frame whose
//! bytes are the item's bytes, nothing else. Flow control is rpc's default, by the same
//! rules: a window of 256 KiB of frame bytes per stream; the sender sends an item only
//! while its whole frame fits in the credit left; the receiver hands credit back in one
//! `CREDIT` frame each time the application has consumed half a window (so about one credit
//! frame per two 64 KiB items, or per 2,900 32-byte items); no acknowledgement per item.
//! The server makes each item of a server stream straight in the write buffer (no buffer
//! of its own) and checks each item of a client stream in its reader, where it arrives.
//! The client hands a server stream's items to the reading task through a queue it drains
//! whole under one lock, as slices of the read buffer; a client stream's items are the
//! workload's own `Vec`s, copied into the write buffer.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use futures::StreamExt;
use tokio::io::AsyncWriteExt;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::sync::{oneshot, Notify};
use tokio::task::JoinSet;
use tokio_util::codec::{FramedRead, LengthDelimitedCodec};

use crate::load::{item_ok, payload};
use crate::{BenchConn, BenchStreams, Uploaded};

const ADD: u8 = 0;
const ECHO: u8 = 1;
const HOLD: u8 = 2;
/// Client to server: open a server stream; body: item size (u64).
const DOWN: u8 = 3;
/// Client to server: open a client stream; no body.
const UP: u8 = 4;
/// A stream item, either direction; body: the item.
const ITEM: u8 = 5;
/// Client to server: the client stream ends, or the client drops a server stream.
const END: u8 = 6;
/// Credit handed back, either direction; body: bytes (u32).
const CREDIT: u8 = 7;
/// Server to client: a client stream's result; body: [`Uploaded`] as three u64.
const REPLY: u8 = 8;
/// Set in the ids of stream calls.
pub const STREAM_BIT: u64 = 1 << 63;
/// A stream's flow-control window in frame bytes, as rpc's default
/// (`rpc_core::stream::DEFAULT_WINDOW`).
pub const WINDOW: usize = 256 * 1024;
/// The largest item of a server stream.
const MAX_ITEM: usize = 1 << 20;
const MAX_FRAME: usize = 64 * 1024 * 1024;
const READ_CAPACITY: usize = 64 * 1024;

/// Bytes a stream item of `len` bytes takes on the wire: length prefix, id, kind, item.
fn item_wire_len(len: usize) -> usize {
    4 + 8 + 1 + len
}

/// Frames waiting for the writer.
struct Outbox {
    buf: Mutex<BytesMut>,
    wake: Notify,
    closed: AtomicBool,
}

impl Outbox {
    fn new() -> Arc<Outbox> {
        Arc::new(Outbox {
            buf: Mutex::new(BytesMut::with_capacity(READ_CAPACITY)),
            wake: Notify::new(),
            closed: AtomicBool::new(false),
        })
    }

    /// Appends `[len][id][tag?][body]` and wakes the writer if it was idle.
    fn push(&self, id: u64, tag: Option<u8>, body: &[u8]) {
        let len = 8 + usize::from(tag.is_some()) + body.len();
        let was_empty = {
            let mut out = self.buf.lock().unwrap_or_else(|e| e.into_inner());
            let was_empty = out.is_empty();
            out.reserve(4 + len);
            out.put_u32(len as u32);
            out.put_u64_le(id);
            if let Some(tag) = tag {
                out.put_u8(tag);
            }
            out.put_slice(body);
            was_empty
        };
        if was_empty {
            self.wake.notify_one();
        }
    }

    /// Appends `count` server-stream items of `template.len()` bytes for stream `id`,
    /// numbered from `first`, built in place: `[len][id][ITEM][n][template[8..]]`.
    fn push_items(&self, id: u64, first: u64, count: u64, template: &[u8]) {
        let len = 8 + 1 + template.len();
        let was_empty = {
            let mut out = self.buf.lock().unwrap_or_else(|e| e.into_inner());
            let was_empty = out.is_empty();
            out.reserve((4 + len) * count as usize);
            for n in first..first + count {
                out.put_u32(len as u32);
                out.put_u64_le(id);
                out.put_u8(ITEM);
                out.put_u64_le(n);
                out.put_slice(&template[8..]);
            }
            was_empty
        };
        if was_empty {
            self.wake.notify_one();
        }
    }

    fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.wake.notify_one();
    }

    /// The writer loop: wait, yield once so every ready producer joins, swap, write.
    async fn run(self: Arc<Self>, mut io: OwnedWriteHalf) {
        let mut out = BytesMut::with_capacity(READ_CAPACITY);
        loop {
            self.wake.notified().await;
            tokio::task::yield_now().await;
            {
                let mut buf = self.buf.lock().unwrap_or_else(|e| e.into_inner());
                if buf.is_empty() {
                    if self.closed.load(Ordering::Acquire) {
                        return;
                    }
                    continue;
                }
                std::mem::swap(&mut *buf, &mut out);
            }
            if io.write_all(&out).await.is_err() {
                return;
            }
            out.clear();
        }
    }
}

fn frames(r: OwnedReadHalf) -> FramedRead<OwnedReadHalf, LengthDelimitedCodec> {
    let codec = LengthDelimitedCodec::builder()
        .max_frame_length(MAX_FRAME)
        .new_codec();
    FramedRead::with_capacity(r, codec, READ_CAPACITY)
}

/// Binds 127.0.0.1 on a port the OS picks, announces it and serves ([`serve_on`]).
pub async fn serve() -> Result<(), String> {
    let listener = crate::bind_and_announce()
        .await
        .map_err(|e| e.to_string())?;
    serve_on(listener).await
}

/// Accepts connections on `listener`; one reader task and one writer task per connection.
pub async fn serve_on(listener: tokio::net::TcpListener) -> Result<(), String> {
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(err) => {
                eprintln!("floor accept: {err}");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        tokio::spawn(serve_conn(stream));
    }
}

async fn serve_conn(stream: TcpStream) {
    let _ = stream.set_nodelay(true);
    let (r, w) = stream.into_split();
    let outbox = Outbox::new();
    tokio::spawn(outbox.clone().run(w));
    let mut frames = frames(r);
    // Server streams: their credit, and their producers (aborted when the reader ends).
    let mut downs: IdMap<Arc<Credit>> = IdMap::default();
    let mut producers = JoinSet::new();
    // Client streams, checked and counted here as they arrive.
    let mut ups: IdMap<UpState> = IdMap::default();
    while let Some(Ok(mut frame)) = frames.next().await {
        if frame.len() < 9 {
            break;
        }
        let id = frame.get_u64_le();
        let method = frame.get_u8();
        match method {
            ADD if frame.len() == 16 => {
                let a = frame.get_u64_le();
                let b = frame.get_u64_le();
                outbox.push(id, None, &a.wrapping_add(b).to_le_bytes());
            }
            ECHO => outbox.push(id, None, &frame),
            HOLD if frame.len() == 8 => {
                let ms = frame.get_u64_le();
                let outbox = outbox.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(Duration::from_millis(ms)).await;
                    outbox.push(id, None, &ms.to_le_bytes());
                });
            }
            DOWN if frame.len() == 8 && id & STREAM_BIT != 0 => {
                let size = usize::try_from(frame.get_u64_le())
                    .unwrap_or(MAX_ITEM)
                    .clamp(8, MAX_ITEM);
                let credit = Arc::new(Credit::new(WINDOW));
                downs.insert(id, credit.clone());
                producers.spawn(produce(outbox.clone(), id, size, credit));
            }
            CREDIT if frame.len() == 4 => {
                if let Some(credit) = downs.get(&id) {
                    credit.grant(frame.get_u32_le() as usize);
                }
            }
            UP if id & STREAM_BIT != 0 => {
                ups.insert(id, UpState::default());
            }
            ITEM => {
                let Some(up) = ups.get_mut(&id) else { break };
                let wire = item_wire_len(frame.len());
                if up.outstanding + wire > WINDOW {
                    // The client ignored its window.
                    break;
                }
                up.outstanding += wire;
                if up.template.len() != frame.len() {
                    up.template = payload(frame.len());
                }
                if !item_ok(up.got.items, &up.template, &frame) {
                    up.got.wrong += 1;
                }
                up.got.items += 1;
                up.got.bytes += frame.len() as u64;
                // Consumed on arrival: hand credit back every half window.
                up.consumed += wire;
                if up.consumed >= WINDOW / 2 {
                    outbox.push(id, Some(CREDIT), &(up.consumed as u32).to_le_bytes());
                    up.outstanding -= up.consumed;
                    up.consumed = 0;
                }
            }
            END => {
                if let Some(up) = ups.remove(&id) {
                    let mut reply = [0u8; 24];
                    reply[..8].copy_from_slice(&up.got.items.to_le_bytes());
                    reply[8..16].copy_from_slice(&up.got.bytes.to_le_bytes());
                    reply[16..].copy_from_slice(&up.got.wrong.to_le_bytes());
                    outbox.push(id, Some(REPLY), &reply);
                } else if let Some(credit) = downs.remove(&id) {
                    credit.close();
                }
            }
            _ => break,
        }
    }
    producers.abort_all();
    outbox.close();
}

/// A client stream the server is receiving.
#[derive(Default)]
struct UpState {
    got: Uploaded,
    template: Vec<u8>,
    /// Frame bytes received and not yet handed back as credit.
    outstanding: usize,
    /// Frame bytes consumed since credit was last handed back.
    consumed: usize,
}

/// A server stream's producer: makes items while there is credit, in batches of as many
/// whole frames as the credit allows, until the stream is dropped.
async fn produce(outbox: Arc<Outbox>, id: u64, size: usize, credit: Arc<Credit>) {
    let template = payload(size);
    let wire = item_wire_len(size);
    let mut n = 0u64;
    while let Some(avail) = credit.wait(wire).await {
        let count = avail / wire;
        credit.spend(count * wire);
        outbox.push_items(id, n, count as u64, &template);
        n += count as u64;
    }
}

/// Credit of one stream's sender: bytes of frames it may still send.
struct Credit {
    avail: AtomicUsize,
    wake: Notify,
    closed: AtomicBool,
}

impl Credit {
    fn new(window: usize) -> Credit {
        Credit {
            avail: AtomicUsize::new(window),
            wake: Notify::new(),
            closed: AtomicBool::new(false),
        }
    }

    fn grant(&self, bytes: usize) {
        self.avail.fetch_add(bytes, Ordering::AcqRel);
        self.wake.notify_one();
    }

    fn spend(&self, bytes: usize) {
        self.avail.fetch_sub(bytes, Ordering::AcqRel);
    }

    fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.wake.notify_one();
    }

    /// Waits until at least `need` bytes of credit are there and returns how many;
    /// `None` once the stream is closed.
    async fn wait(&self, need: usize) -> Option<usize> {
        loop {
            if self.closed.load(Ordering::Acquire) {
                return None;
            }
            let avail = self.avail.load(Ordering::Acquire);
            if avail >= need {
                return Some(avail);
            }
            // A grant between the load and here leaves a permit, so it is not missed.
            self.wake.notified().await;
        }
    }
}

/// Request ids are already unique and dense: hash them with one multiply.
#[derive(Default)]
struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 << 8 | u64::from(*b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

type IdMap<V> = HashMap<u64, V, BuildHasherDefault<IdHasher>>;
type Pending = IdMap<oneshot::Sender<Bytes>>;

/// A stream the client has open.
#[derive(Clone)]
enum Slot {
    /// A server stream it reads.
    Down(Arc<Inbox>),
    /// A client stream it sends.
    Up(Arc<Credit>),
}

struct Shared {
    outbox: Arc<Outbox>,
    pending: Mutex<Pending>,
    streams: Mutex<IdMap<Slot>>,
    next_id: AtomicU64,
    closed: AtomicBool,
}

/// One floor connection; clones share it.
#[derive(Clone)]
pub struct FloorConn(Arc<Shared>);

impl FloorConn {
    async fn call(&self, method: u8, body: &[u8]) -> Result<Bytes, String> {
        let shared = &*self.0;
        if shared.closed.load(Ordering::Acquire) {
            return Err("connection closed".into());
        }
        let id = shared.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        shared
            .pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, tx);
        shared.outbox.push(id, Some(method), body);
        rx.await.map_err(|_| "connection closed".to_string())
    }
}

async fn read_replies(shared: Arc<Shared>, r: OwnedReadHalf) {
    let mut frames = frames(r);
    // The server stream the last item was for: consecutive items skip the table.
    let mut last: Option<(u64, Arc<Inbox>)> = None;
    while let Some(Ok(frame)) = frames.next().await {
        if frame.len() < 8 {
            break;
        }
        let mut frame = frame.freeze();
        let id = frame.get_u64_le();
        if id & STREAM_BIT != 0 {
            if frame.is_empty() {
                break;
            }
            let kind = frame.get_u8();
            let ok = match kind {
                ITEM => {
                    let inbox = match &last {
                        Some((last_id, inbox)) if *last_id == id => Some(inbox.clone()),
                        _ => match shared.slot(id) {
                            Some(Slot::Down(inbox)) => {
                                last = Some((id, inbox.clone()));
                                Some(inbox)
                            }
                            _ => None,
                        },
                    };
                    // Items of a stream dropped meanwhile are dropped too.
                    inbox.is_none_or(|inbox| inbox.push(frame))
                }
                CREDIT if frame.len() == 4 => {
                    if let Some(Slot::Up(credit)) = shared.slot(id) {
                        credit.grant(frame.get_u32_le() as usize);
                    }
                    true
                }
                REPLY => {
                    shared.reply(id, frame);
                    true
                }
                _ => false,
            };
            if !ok {
                break;
            }
            continue;
        }
        shared.reply(id, frame);
    }
    shared.closed.store(true, Ordering::Release);
    shared
        .pending
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clear();
    let streams = std::mem::take(&mut *shared.streams.lock().unwrap_or_else(|e| e.into_inner()));
    for slot in streams.into_values() {
        match slot {
            Slot::Down(inbox) => inbox.close(),
            Slot::Up(credit) => credit.close(),
        }
    }
    shared.outbox.close();
}

impl Shared {
    fn slot(&self, id: u64) -> Option<Slot> {
        self.streams
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&id)
            .cloned()
    }

    fn reply(&self, id: u64, frame: Bytes) {
        let slot = self
            .pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&id);
        if let Some(slot) = slot {
            let _ = slot.send(frame);
        }
    }

    fn stream_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed) | STREAM_BIT
    }

    fn forget(&self, id: u64) {
        self.streams
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&id);
    }
}

/// A server stream's items, received and not yet read.
struct Inbox {
    state: Mutex<InboxState>,
}

#[derive(Default)]
struct InboxState {
    items: VecDeque<Bytes>,
    /// Frame bytes received and not yet handed back as credit.
    outstanding: usize,
    closed: bool,
    waker: Option<Waker>,
}

impl Inbox {
    /// Queues an item; `false` if the server overran the window.
    fn push(&self, item: Bytes) -> bool {
        let wire = item_wire_len(item.len());
        let waker = {
            let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
            if state.closed {
                // Its reader is gone: drop the item.
                return true;
            }
            if state.outstanding + wire > WINDOW {
                return false;
            }
            state.outstanding += wire;
            state.items.push_back(item);
            state.waker.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
        true
    }

    fn close(&self) {
        let waker = {
            let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
            state.closed = true;
            state.waker.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

/// A floor server stream as the client reads it. Dropping it tells the server to stop.
pub struct FloorItems {
    id: u64,
    shared: Arc<Shared>,
    inbox: Arc<Inbox>,
    /// Items taken from the inbox in one go, read from here without a lock.
    local: VecDeque<Bytes>,
    /// Frame bytes read since credit was last handed back.
    consumed: usize,
}

impl futures::Stream for FloorItems {
    type Item = Result<Bytes, String>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if this.local.is_empty() {
            let mut state = this.inbox.state.lock().unwrap_or_else(|e| e.into_inner());
            if state.items.is_empty() {
                if state.closed {
                    return Poll::Ready(Some(Err("connection closed".into())));
                }
                state.waker = Some(cx.waker().clone());
                return Poll::Pending;
            }
            std::mem::swap(&mut state.items, &mut this.local);
        }
        let Some(item) = this.local.pop_front() else {
            return Poll::Pending;
        };
        this.consumed += item_wire_len(item.len());
        if this.consumed >= WINDOW / 2 {
            let credit = this.consumed;
            this.consumed = 0;
            {
                let mut state = this.inbox.state.lock().unwrap_or_else(|e| e.into_inner());
                state.outstanding -= credit;
            }
            this.shared
                .outbox
                .push(this.id, Some(CREDIT), &(credit as u32).to_le_bytes());
        }
        Poll::Ready(Some(Ok(item)))
    }
}

impl Drop for FloorItems {
    fn drop(&mut self) {
        self.inbox.close();
        self.shared.forget(self.id);
        self.shared.outbox.push(self.id, Some(END), &[]);
    }
}

impl BenchConn for FloorConn {
    type Buf = Bytes;

    async fn connect(addr: SocketAddr) -> Result<Self, String> {
        let stream = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
        stream.set_nodelay(true).map_err(|e| e.to_string())?;
        let (r, w) = stream.into_split();
        let shared = Arc::new(Shared {
            outbox: Outbox::new(),
            pending: Mutex::new(Pending::default()),
            streams: Mutex::new(IdMap::default()),
            next_id: AtomicU64::new(0),
            closed: AtomicBool::new(false),
        });
        tokio::spawn(shared.outbox.clone().run(w));
        tokio::spawn(read_replies(shared.clone(), r));
        Ok(FloorConn(shared))
    }

    async fn add(&self, a: u64, b: u64) -> Result<u64, String> {
        let mut args = [0u8; 16];
        args[..8].copy_from_slice(&a.to_le_bytes());
        args[8..].copy_from_slice(&b.to_le_bytes());
        let mut reply = self.call(ADD, &args).await?;
        if reply.len() != 8 {
            return Err("bad add reply".into());
        }
        Ok(reply.get_u64_le())
    }

    async fn echo(&self, data: Vec<u8>) -> Result<Bytes, String> {
        self.call(ECHO, &data).await
    }

    async fn hold(&self, ms: u64) -> Result<u64, String> {
        let mut reply = self.call(HOLD, &ms.to_le_bytes()).await?;
        if reply.len() != 8 {
            return Err("bad hold reply".into());
        }
        Ok(reply.get_u64_le())
    }
}

impl BenchStreams for FloorConn {
    type Item = Bytes;
    type Items = FloorItems;

    async fn connect(addr: SocketAddr) -> Result<Self, String> {
        <FloorConn as BenchConn>::connect(addr).await
    }

    async fn download(&self, size: usize) -> Result<FloorItems, String> {
        let shared = &self.0;
        if shared.closed.load(Ordering::Acquire) {
            return Err("connection closed".into());
        }
        let id = shared.stream_id();
        let inbox = Arc::new(Inbox {
            state: Mutex::new(InboxState::default()),
        });
        shared
            .streams
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, Slot::Down(inbox.clone()));
        shared
            .outbox
            .push(id, Some(DOWN), &(size as u64).to_le_bytes());
        Ok(FloorItems {
            id,
            shared: shared.clone(),
            inbox,
            local: VecDeque::new(),
            consumed: 0,
        })
    }

    async fn upload<S>(&self, items: S) -> Result<Uploaded, String>
    where
        S: futures::Stream<Item = Vec<u8>> + Send + 'static,
    {
        let shared = &self.0;
        if shared.closed.load(Ordering::Acquire) {
            return Err("connection closed".into());
        }
        let id = shared.stream_id();
        let credit = Arc::new(Credit::new(WINDOW));
        let (tx, rx) = oneshot::channel();
        shared
            .pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, tx);
        shared
            .streams
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, Slot::Up(credit.clone()));
        shared.outbox.push(id, Some(UP), &[]);
        let mut items = std::pin::pin!(items);
        while let Some(item) = items.next().await {
            let wire = item_wire_len(item.len());
            if credit.wait(wire).await.is_none() {
                return Err("connection closed".into());
            }
            credit.spend(wire);
            shared.outbox.push(id, Some(ITEM), &item);
        }
        shared.outbox.push(id, Some(END), &[]);
        let reply = rx.await.map_err(|_| "connection closed".to_string());
        shared.forget(id);
        let mut reply = reply?;
        if reply.len() != 24 {
            return Err("bad upload reply".into());
        }
        Ok(Uploaded {
            items: reply.get_u64_le(),
            bytes: reply.get_u64_le(),
            wrong: reply.get_u64_le(),
        })
    }
}
