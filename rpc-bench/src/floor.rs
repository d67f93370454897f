//! `floor`: the practical limit. Hand-written tokio + `LengthDelimitedCodec`, no
//! serialization: a request is `[u32 len][u64 id][u8 method][raw bytes]`, a reply
//! `[u32 len][u64 id][raw bytes]`. Each side has one writer per connection that takes every
//! frame queued so far and writes them with one `write_all`; it yields once before taking
//! them, so every caller that is ready joins the same write. The server answers `add` and
//! `echo` inline in its reader (no task per call); `hold` gets a task, since it waits.
//! TCP_NODELAY on both ends.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use futures::StreamExt;
use tokio::io::AsyncWriteExt;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::sync::{oneshot, Notify};
use tokio_util::codec::{FramedRead, LengthDelimitedCodec};

use crate::BenchConn;

const ADD: u8 = 0;
const ECHO: u8 = 1;
const HOLD: u8 = 2;
const MAX_FRAME: usize = 64 * 1024 * 1024;
const READ_CAPACITY: usize = 64 * 1024;

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

/// Accepts connections; one reader task and one writer task per connection.
pub async fn serve() -> Result<(), String> {
    let listener = crate::bind_and_announce()
        .await
        .map_err(|e| e.to_string())?;
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
            _ => break,
        }
    }
    outbox.close();
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

type Pending = HashMap<u64, oneshot::Sender<Bytes>, BuildHasherDefault<IdHasher>>;

struct Shared {
    outbox: Arc<Outbox>,
    pending: Mutex<Pending>,
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
    while let Some(Ok(frame)) = frames.next().await {
        if frame.len() < 8 {
            break;
        }
        let mut frame = frame.freeze();
        let id = frame.get_u64_le();
        let slot = shared
            .pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&id);
        if let Some(slot) = slot {
            let _ = slot.send(frame);
        }
    }
    shared.closed.store(true, Ordering::Release);
    shared
        .pending
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clear();
    shared.outbox.close();
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
