//! Streams inside calls, with flow control.
//!
//! A method may return a [`Stream`] of items, take one as its last argument, or both. Each
//! item travels as its own frame (`StreamItem`), interleaved with every other call on the
//! connection, and the stream closes with a `StreamEnd` that says whether it ended normally
//! or with a framework error. Application errors travel as items: a stream of
//! `Result<T, MyError>`.
//!
//! # Flow control
//!
//! Each direction of each stream has a window of bytes (256 KiB by default). The sender may
//! send an item only while the item's whole frame fits in its remaining credit; every frame
//! it sends uses up its length. The receiver hands credit back (`Credit` frames) as the
//! application *consumes* items, not as they arrive. So a slow consumer holds at most one
//! window of items in memory, exactly, and a fast producer is simply not polled for its next
//! item until there is room: it is slowed, never dropped. A sender that ignores its window
//! is a protocol violation and loses its connection.
//!
//! An item's frame may take at most half the window ([`max_item_len`]). The receiver hands
//! credit back once half a window has been consumed (fewer credit frames than one per
//! item), so a sender waiting for room for an item of at most that size always gets it once
//! the reader has caught up. A larger item ends its stream with [`Error::MessageTooLarge`]
//! (naming the limit), and the connection and its other calls carry on; to stream larger
//! items, raise the window on both sides.
//!
//! The [`StreamTable`] of a connection routes incoming stream frames to the right
//! [`Inbound`] buffer and credit to the right [`Outbound`] sender; both ends of a connection
//! use the same machinery.

use std::collections::VecDeque;
use std::fmt;
use std::future::poll_fn;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context as TaskContext, Poll, Waker};

use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::codec::{Bincode, Codec};
use crate::error::{Error, ProtocolError};
use crate::frame::PREFIX_LEN;
use crate::ids::PeerIdMap;
use crate::message::{Header, Status, STREAM_ITEM_HEADER_LEN};
use crate::payload;
use crate::sync::lock;
use crate::writer::WriteQueue;

/// Bytes of stream frames a receiver buffers before the sender must wait: 256 KiB.
pub const DEFAULT_WINDOW: usize = 256 * 1024;

/// The largest frame (length prefix included) one stream item may take with a window of
/// `window` bytes: half of it (see the [module docs](self)).
///
/// ```
/// assert_eq!(rpc_core::stream::max_item_len(rpc_core::stream::DEFAULT_WINDOW), 128 * 1024);
/// ```
pub const fn max_item_len(window: usize) -> usize {
    window / 2
}

type BoxedItems<T> = Pin<Box<dyn futures::Stream<Item = Result<T, Error>> + Send>>;

/// A stream of items inside a call.
///
/// As a handler's return value it is what the server sends; as an argument it is what the
/// client sends. Whoever receives one reads `Result<T, rpc::Error>` items: an `Err` means
/// the stream broke (connection lost, deadline passed, the producer panicked) and is the
/// last item.
///
/// ```
/// use futures::StreamExt;
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let numbers = rpc::Stream::iter(1..=3u32);
/// let got: Vec<u32> = numbers.map(|item| item.unwrap()).collect().await;
/// assert_eq!(got, [1, 2, 3]);
/// # }
/// ```
pub struct Stream<T> {
    items: BoxedItems<T>,
}

impl<T> fmt::Debug for Stream<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Stream")
    }
}

impl<T: Send + 'static> Stream<T> {
    /// Sends every item of `items`.
    pub fn new(items: impl futures::Stream<Item = T> + Send + 'static) -> Self {
        Stream {
            items: Box::pin(items.map(Ok)),
        }
    }

    /// Sends items until the first `Err`, which ends the stream with that framework error.
    pub fn from_results(
        items: impl futures::Stream<Item = Result<T, Error>> + Send + 'static,
    ) -> Self {
        Stream {
            items: Box::pin(items),
        }
    }

    /// Sends the items of an iterator.
    pub fn iter<I>(items: I) -> Self
    where
        I: IntoIterator<Item = T>,
        I::IntoIter: Send + 'static,
    {
        Stream::new(futures::stream::iter(items))
    }

    /// A stream with no items.
    pub fn empty() -> Self {
        Stream::new(futures::stream::empty())
    }
}

impl<T> futures::Stream for Stream<T> {
    type Item = Result<T, Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Option<Self::Item>> {
        self.items.as_mut().poll_next(cx)
    }
}

/// The streams of one connection, by call id.
#[derive(Debug, Default)]
pub struct StreamTable {
    state: Mutex<TableState>,
    /// Inbound streams opened so far, ever: a reader compares it before and after starting
    /// a call to learn whether the call receives a stream, without a lookup.
    inbound_opened: AtomicU64,
}

#[derive(Debug, Default)]
struct TableState {
    /// By call id: on a server, ids the peer picked (hence the keyed hash).
    inbound: PeerIdMap<u64, Arc<Inbound>>,
    outbound: PeerIdMap<u64, Arc<Outbound>>,
    /// Streams opened before their reader, kept for it (also once they ended); usually empty.
    early: PeerIdMap<u64, Arc<Inbound>>,
    closed: Option<Error>,
}

impl StreamTable {
    /// Starts receiving call `id`'s stream, with a window of `window` bytes; if it was
    /// opened early ([`open_inbound_early`](Self::open_inbound_early)), returns that buffer,
    /// with what it holds (and its end, if that arrived).
    pub fn open_inbound(&self, id: u64, window: usize) -> Arc<Inbound> {
        let mut state = lock(&self.state);
        if !state.early.is_empty() {
            if let Some(early) = state.early.remove(&id) {
                return early;
            }
        }
        // Counted once per call: an early buffer was counted when it opened.
        self.inbound_opened.fetch_add(1, Ordering::Relaxed);
        let inbound = Arc::new(Inbound::new(window));
        match &state.closed {
            Some(err) => inbound.finish(Err(err.clone())),
            None => {
                state.inbound.insert(id, inbound.clone());
            }
        }
        inbound
    }

    /// Starts receiving call `id`'s stream before its reader exists (a server does, for a call
    /// that waits behind a tower layer before its handler is picked): what arrives meanwhile
    /// is kept for the [`open_inbound`](Self::open_inbound) that comes next, if any. The
    /// buffer goes when the call's streams are [removed](Self::remove).
    pub fn open_inbound_early(&self, id: u64, window: usize) {
        let inbound = self.open_inbound(id, window);
        lock(&self.state).early.insert(id, inbound);
    }

    /// Starts sending call `id`'s stream; the peer's window starts at `window` bytes.
    pub fn open_outbound(&self, id: u64, window: usize) -> Arc<Outbound> {
        let outbound = Arc::new(Outbound::new(window));
        let mut state = lock(&self.state);
        match &state.closed {
            Some(err) => outbound.fail(err.clone()),
            None => {
                state.outbound.insert(id, outbound.clone());
            }
        }
        outbound
    }

    /// How many inbound streams this table has opened, ever.
    pub fn inbound_opened(&self) -> u64 {
        self.inbound_opened.load(Ordering::Relaxed)
    }

    /// Whether call `id` has started sending a stream.
    pub fn is_sending(&self, id: u64) -> bool {
        lock(&self.state).outbound.contains_key(&id)
    }

    /// Forgets call `id`'s streams (the call is over). A sender still waiting for credit
    /// fails; a receiver still reading sees the stream cancelled.
    pub fn remove(&self, id: u64) {
        let (inbound, outbound) = {
            let mut state = lock(&self.state);
            if !state.early.is_empty() {
                state.early.remove(&id);
            }
            (state.inbound.remove(&id), state.outbound.remove(&id))
        };
        if let Some(inbound) = inbound {
            inbound.finish(Err(Error::Cancelled));
        }
        if let Some(outbound) = outbound {
            outbound.fail(Error::Cancelled);
        }
    }

    /// Forgets call `id`'s sending side only (its request stream is done), leaving a reply
    /// stream it may also have untouched.
    pub fn forget_outbound(&self, id: u64) {
        lock(&self.state).outbound.remove(&id);
    }

    /// Whether call `id` has a stream this side is receiving.
    pub fn is_receiving(&self, id: u64) -> bool {
        lock(&self.state).inbound.contains_key(&id)
    }

    /// Like [`remove`](Self::remove), with `err` as what the receiver reads and the sender
    /// gets instead of `Cancelled` (one call failed, say with `MessageTooLarge`). Returns
    /// whether call `id` had a stream.
    pub fn fail(&self, id: u64, err: Error) -> bool {
        let (inbound, outbound) = {
            let mut state = lock(&self.state);
            (state.inbound.remove(&id), state.outbound.remove(&id))
        };
        let found = inbound.is_some() || outbound.is_some();
        if let Some(inbound) = inbound {
            inbound.finish(Err(err.clone()));
        }
        if let Some(outbound) = outbound {
            outbound.fail(err);
        }
        found
    }

    /// How many streams are open, both directions together.
    pub fn len(&self) -> usize {
        let state = lock(&self.state);
        state.inbound.len() + state.outbound.len()
    }

    /// Whether no stream is open.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Routes a received stream frame (item, end, credit) to its stream and returns `None`;
    /// hands any other message back, with its body. `frame_len` is the whole frame as the sender counted
    /// it against its window, length prefix included: [`frame::wire_len`](crate::frame::wire_len).
    /// `sender` names the peer's side in errors that end a stream (`"the server's stream"`).
    pub fn route(
        &self,
        header: Header,
        body: Bytes,
        frame_len: usize,
        sender: &dyn fmt::Display,
    ) -> Result<Option<(Header, Bytes)>, ProtocolError> {
        match header {
            Header::StreamItem { id } => self.on_item(id, body, frame_len)?,
            Header::StreamEnd { id, status } => self.on_end(id, status, sender),
            Header::Credit { id, bytes } => self.on_credit(id, bytes),
            other => return Ok(Some((other, body))),
        }
        Ok(None)
    }

    /// Routes a received item. Items for streams nobody reads any more are dropped; an item
    /// beyond the granted window is a protocol violation.
    fn on_item(&self, id: u64, item: Bytes, frame_len: usize) -> Result<(), ProtocolError> {
        // Pushed under the table's lock (the table's, then the buffer's: the only order the
        // two are ever taken in), so no reference is counted up and down per item.
        let waker = match lock(&self.state).inbound.get(&id) {
            Some(inbound) => inbound.push(id, item, frame_len)?,
            None => return Ok(()),
        };
        if let Some(waker) = waker {
            waker.wake();
        }
        Ok(())
    }

    /// Routes a received end of stream.
    fn on_end(&self, id: u64, status: Status, method: &dyn fmt::Display) {
        let inbound = lock(&self.state).inbound.remove(&id);
        if let Some(inbound) = inbound {
            inbound.finish(match status {
                Status::Ok => Ok(()),
                Status::Error { code, message } => Err(Error::from_remote(code, message, method)),
            });
        }
    }

    /// Routes received credit.
    fn on_credit(&self, id: u64, bytes: u32) {
        let outbound = lock(&self.state).outbound.get(&id).cloned();
        if let Some(outbound) = outbound {
            outbound.grant(bytes as usize);
        }
    }

    /// The connection is gone: every stream fails with `err`, and so does every stream
    /// opened from now on.
    pub fn close(&self, err: Error) {
        let (inbound, outbound) = {
            let mut state = lock(&self.state);
            state.closed.get_or_insert(err.clone());
            state.early.clear();
            (
                std::mem::take(&mut state.inbound),
                std::mem::take(&mut state.outbound),
            )
        };
        for inbound in inbound.into_values() {
            inbound.finish(Err(err.clone()));
        }
        for outbound in outbound.into_values() {
            outbound.fail(err.clone());
        }
    }
}

/// Items received for one stream, waiting for the application to read them.
#[derive(Debug)]
pub struct Inbound {
    window: usize,
    state: Mutex<InboundState>,
}

#[derive(Debug, Default)]
struct InboundState {
    items: VecDeque<(Bytes, usize)>,
    /// Frame bytes received and not yet handed back as credit. The sender may only send
    /// while its own count of this is under the window, and its count is never smaller.
    outstanding: usize,
    end: Option<Result<(), Error>>,
    waker: Option<Waker>,
}

impl Inbound {
    fn new(window: usize) -> Self {
        Inbound {
            window,
            state: Mutex::default(),
        }
    }

    /// Buffers an item; returns the reader's waker, for the caller to wake once it has
    /// let go of its locks.
    fn push(&self, id: u64, item: Bytes, frame_len: usize) -> Result<Option<Waker>, ProtocolError> {
        let mut state = lock(&self.state);
        // A sender may send a frame only if all of it fits in its credit.
        if state.outstanding + frame_len > self.window {
            return Err(ProtocolError::CreditExceeded {
                id,
                buffered: state.outstanding + frame_len,
                window: self.window,
            });
        }
        state.outstanding += frame_len;
        state.items.push_back((item, frame_len));
        Ok(state.waker.take())
    }

    fn finish(&self, end: Result<(), Error>) {
        let waker = {
            let mut state = lock(&self.state);
            if state.end.is_none() {
                state.end = Some(end);
            }
            state.waker.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

/// What a reader found: items (moved into its own queue), the end, or nothing yet.
enum Taken {
    Items,
    End(Result<(), Error>),
    Pending,
}

impl Inbound {
    /// Moves every item received so far into `ready` (which is empty), under one lock: the
    /// reader then consumes them without touching the lock again. They stay counted as
    /// outstanding until [`release`](Self::release) hands their credit back.
    fn poll_take(&self, cx: &mut TaskContext<'_>, ready: &mut VecDeque<(Bytes, usize)>) -> Taken {
        let mut state = lock(&self.state);
        if !state.items.is_empty() {
            std::mem::swap(&mut state.items, ready);
            return Taken::Items;
        }
        match state.end.take() {
            Some(end) => {
                // Leave an Ok end behind so later polls keep returning the end.
                state.end = Some(Ok(()));
                Taken::End(end)
            }
            None => {
                state.waker = Some(cx.waker().clone());
                Taken::Pending
            }
        }
    }

    /// `bytes` of items were consumed and are handed back as credit: the sender may send
    /// that much more.
    fn release(&self, bytes: usize) {
        let mut state = lock(&self.state);
        state.outstanding = state.outstanding.saturating_sub(bytes);
    }
}

/// Reads a received stream as `T` items, handing credit back as they are read.
pub struct Receiver<T> {
    id: u64,
    inbound: Arc<Inbound>,
    /// Items taken from `inbound` in one batch, not yet read.
    ready: VecDeque<(Bytes, usize)>,
    /// Frame bytes read since credit was last handed back.
    consumed: usize,
    queue: Arc<WriteQueue>,
    done: bool,
    /// Runs when the receiver is dropped before the stream ended, or an item does not decode
    /// (the client cancels the call; the server has nothing to do).
    on_abandon: Option<Box<dyn FnOnce() + Send>>,
    _item: std::marker::PhantomData<fn() -> T>,
}

impl<T> fmt::Debug for Receiver<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Receiver")
            .field("id", &self.id)
            .field("done", &self.done)
            .finish()
    }
}

impl<T> Receiver<T> {
    /// Reads `inbound`, sending credit for call `id` on `queue`.
    pub fn new(id: u64, inbound: Arc<Inbound>, queue: Arc<WriteQueue>) -> Self {
        Receiver {
            id,
            inbound,
            ready: VecDeque::new(),
            consumed: 0,
            queue,
            done: false,
            on_abandon: None,
            _item: std::marker::PhantomData,
        }
    }

    /// Runs `f` if this receiver is dropped before its stream ended, or gives up on it because
    /// an item does not decode.
    pub fn on_abandon(mut self, f: impl FnOnce() + Send + 'static) -> Self {
        self.on_abandon = Some(Box::new(f));
        self
    }
}

impl<T> Drop for Receiver<T> {
    fn drop(&mut self) {
        if !self.done {
            if let Some(f) = self.on_abandon.take() {
                f();
            }
        }
    }
}

impl<T: DeserializeOwned> futures::Stream for Receiver<T> {
    type Item = Result<T, Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Option<Self::Item>> {
        // Every field is Unpin.
        let this = self.get_mut();
        if this.done {
            return Poll::Ready(None);
        }
        loop {
            if let Some((item, len)) = this.ready.pop_front() {
                this.consume(len);
                let decoded = Bincode.decode_shared(&item).map_err(Error::from);
                if decoded.is_err() {
                    // The stream cannot be read on: give it up now, as a drop would, so the
                    // peer stops sending and its buffer is released.
                    this.done = true;
                    if let Some(abandon) = this.on_abandon.take() {
                        abandon();
                    }
                }
                return Poll::Ready(Some(decoded));
            }
            match this.inbound.poll_take(cx, &mut this.ready) {
                Taken::Items => continue,
                Taken::End(Ok(())) => {
                    this.done = true;
                    return Poll::Ready(None);
                }
                Taken::End(Err(err)) => {
                    this.done = true;
                    return Poll::Ready(Some(Err(err)));
                }
                Taken::Pending => return Poll::Pending,
            }
        }
    }
}

impl<T> Receiver<T> {
    /// Counts an item's `len` frame bytes as read, and hands credit back in batches of half
    /// a window: fewer frames, and the sender still never stalls while the reader keeps up.
    fn consume(&mut self, len: usize) {
        self.consumed += len;
        if self.consumed >= self.inbound.window / 2 {
            let credit = u32::try_from(self.consumed).unwrap_or(u32::MAX);
            self.consumed -= credit as usize;
            self.inbound.release(credit as usize);
            // Best effort: if the connection is gone, the next poll reports it.
            let _ = self.queue.push_control(&Header::Credit {
                id: self.id,
                bytes: credit,
            });
        }
    }
}

/// The sending side of one stream: how much the peer still has room for.
#[derive(Debug)]
pub struct Outbound {
    /// The receiver's window: the most credit there can be.
    window: usize,
    state: Mutex<OutboundState>,
}

#[derive(Debug)]
struct OutboundState {
    /// Bytes the receiver has room for. Signed so that a peer granting more than it took
    /// back cannot wrap it; such a peer only gets more data sent to it.
    credit: i64,
    failed: Option<Error>,
    waker: Option<Waker>,
}

impl Outbound {
    fn new(window: usize) -> Self {
        Outbound {
            window,
            state: Mutex::new(OutboundState {
                credit: i64::try_from(window).unwrap_or(i64::MAX),
                failed: None,
                waker: None,
            }),
        }
    }

    fn grant(&self, bytes: usize) {
        let waker = {
            let mut state = lock(&self.state);
            state.credit = state
                .credit
                .saturating_add(i64::try_from(bytes).unwrap_or(i64::MAX));
            state.waker.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    fn fail(&self, err: Error) {
        let waker = {
            let mut state = lock(&self.state);
            state.failed.get_or_insert(err);
            state.waker.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    /// Takes `bytes` of credit if the peer has room for them and the stream has not failed.
    fn try_use_credit(&self, bytes: usize) -> bool {
        let mut state = lock(&self.state);
        let bytes = i64::try_from(bytes).unwrap_or(i64::MAX);
        if state.failed.is_some() || state.credit < bytes {
            return false;
        }
        state.credit -= bytes;
        true
    }

    fn use_credit(&self, bytes: usize) {
        let mut state = lock(&self.state);
        state.credit = state
            .credit
            .saturating_sub(i64::try_from(bytes).unwrap_or(i64::MAX));
    }

    /// Waits until the peer has room for `bytes` more bytes of frames (at least 1).
    async fn room(&self, bytes: usize) -> Result<(), Error> {
        let bytes = i64::try_from(bytes.max(1)).unwrap_or(i64::MAX);
        poll_fn(|cx| {
            let mut state = lock(&self.state);
            if let Some(err) = &state.failed {
                return Poll::Ready(Err(err.clone()));
            }
            if state.credit >= bytes {
                return Poll::Ready(Ok(()));
            }
            state.waker = Some(cx.waker().clone());
            Poll::Pending
        })
        .await
    }
}

/// Sends `items` as call `id`'s stream: each item once the peer has room for all of its
/// frame, then the end. The producer is not polled for an item before the peer has room
/// for more, and an encoded item waits (alone) for room for the whole of it.
///
/// An item whose frame exceeds [`max_item_len`] ends the stream with
/// [`Error::MessageTooLarge`], which is also returned.
pub async fn send<T: Serialize + Send>(
    queue: &WriteQueue,
    id: u64,
    outbound: &Outbound,
    mut items: Stream<T>,
) -> Result<(), Error> {
    let header = Header::StreamItem { id };
    // The item is encoded before it is queued, to learn its size and wait for that much
    // credit; reused from item to item. Its large payloads are spliced, not copied.
    let mut encoded = BytesMut::new();
    let mut splices = Vec::new();
    let max = max_item_len(outbound.window);
    loop {
        outbound.room(1).await?;
        match items.next().await {
            Some(Ok(item)) => {
                // Usually the peer and the queue have room: the item is encoded straight
                // into the queue and its credit taken there, under one lock. Otherwise
                // (no room yet, too large, an error), the path below finds out which and
                // does what it says.
                let pushed = queue.try_push_if(
                    &header,
                    |buf| Bincode.encode(&item, buf),
                    |len| len <= max && outbound.try_use_credit(len),
                );
                if let Ok(Some(_)) = pushed {
                    continue;
                }
                encoded.clear();
                splices.clear();
                let (encoded_item, spliced) =
                    payload::splicing(&mut splices, || Bincode.encode(&item, &mut encoded));
                encoded_item?;
                let len = PREFIX_LEN + STREAM_ITEM_HEADER_LEN + encoded.len() + spliced;
                if len > max {
                    let err = Error::MessageTooLarge { len, max };
                    let status = Status::from_error(&err);
                    queue.push_control(&Header::StreamEnd { id, status })?;
                    return Err(err);
                }
                outbound.room(len).await?;
                let sent = queue
                    .send(&header, |buf| {
                        payload::append_spliced(buf, &encoded, &mut splices);
                        Ok(())
                    })
                    .await?;
                outbound.use_credit(sent);
            }
            Some(Err(err)) => {
                let status = Status::from_error(&err);
                queue.push_control(&Header::StreamEnd { id, status })?;
                return Ok(());
            }
            None => {
                let status = Status::Ok;
                queue.push_control(&Header::StreamEnd { id, status })?;
                return Ok(());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Method;
    use futures::StreamExt;

    #[tokio::test]
    async fn items_arrive_in_order_and_credit_flows_back_as_they_are_read() {
        let queue = Arc::new(WriteQueue::new(1 << 20, 1 << 20));
        let table = StreamTable::default();
        let inbound = table.open_inbound(1, 300);
        for i in 0..10u32 {
            let mut body = bytes::BytesMut::new();
            Bincode.encode(&i, &mut body).expect("encode");
            table.on_item(1, body.freeze(), 20).expect("within window");
        }
        table.on_end(1, Status::Ok, &Method::new("S", "m"));
        let got: Vec<u32> = Receiver::<u32>::new(1, inbound, queue.clone())
            .map(|item| item.expect("item"))
            .collect()
            .await;
        assert_eq!(got, (0..10).collect::<Vec<_>>());
        assert!(queue.queued_bytes() > 0, "credit frames were queued");
    }

    #[tokio::test]
    async fn credit_goes_back_exactly_for_what_was_read_and_reopens_the_window() {
        let queue = Arc::new(WriteQueue::new(1 << 20, 1 << 20));
        let table = StreamTable::default();
        let inbound = table.open_inbound(1, 100);
        let item = || {
            let mut body = bytes::BytesMut::new();
            Bincode.encode(&7u32, &mut body).expect("encode");
            body.freeze()
        };
        for _ in 0..5 {
            table.on_item(1, item(), 20).expect("within the window");
        }
        assert!(table.on_item(1, item(), 20).is_err(), "the window is full");
        let _ = table.open_inbound(2, 100);
        let mut rx = Receiver::<u32>::new(1, inbound, queue.clone());
        // Two items read (40 bytes): under half the window, no credit yet.
        for _ in 0..2 {
            assert_eq!(rx.next().await.expect("item").expect("decodes"), 7);
        }
        assert_eq!(queue.queued_bytes(), 0, "no credit before half a window");
        assert!(table.on_item(1, item(), 20).is_err(), "still full");
        // The third makes 60: that much credit goes back, and 60 bytes fit again.
        assert_eq!(rx.next().await.expect("item").expect("decodes"), 7);
        let mut frames = crate::frame::FrameDecoder::new(1 << 20);
        let mut buf = queue.take_queued_for_test();
        let frame = tokio_util::codec::Decoder::decode(&mut frames, &mut buf)
            .expect("frame")
            .expect("one frame");
        let (header, _) = crate::message::decode_frame(frame).expect("header");
        assert_eq!(header, Header::Credit { id: 1, bytes: 60 });
        assert!(buf.is_empty(), "one credit frame");
        for _ in 0..3 {
            table
                .on_item(1, item(), 20)
                .expect("within the window again");
        }
        assert!(table.on_item(1, item(), 1).is_err(), "and no more");
    }

    #[tokio::test]
    async fn items_sent_with_room_take_exactly_their_frames_of_credit() {
        let queue = Arc::new(WriteQueue::new(1 << 20, 1 << 20));
        let table = StreamTable::default();
        let outbound = table.open_outbound(1, 1000);
        send(&queue, 1, &outbound, Stream::iter(0..10u32))
            .await
            .expect("sent");
        let end = crate::frame::PREFIX_LEN + 1 + 8 + 1;
        let items = queue.queued_bytes() - end;
        assert_eq!(lock(&outbound.state).credit, 1000 - items as i64);
        // The queue holds the ten items in order, then the end.
        let mut frames = crate::frame::FrameDecoder::new(1 << 20);
        let mut buf = queue.take_queued_for_test();
        for n in 0..10u32 {
            let frame = tokio_util::codec::Decoder::decode(&mut frames, &mut buf)
                .expect("frame")
                .expect("an item");
            let (header, body) = crate::message::decode_frame(frame).expect("header");
            assert_eq!(header, Header::StreamItem { id: 1 });
            assert_eq!(Bincode.decode_shared::<u32>(&body).expect("decodes"), n);
        }
        let frame = tokio_util::codec::Decoder::decode(&mut frames, &mut buf)
            .expect("frame")
            .expect("the end");
        let (header, _) = crate::message::decode_frame(frame).expect("header");
        assert_eq!(
            header,
            Header::StreamEnd {
                id: 1,
                status: Status::Ok
            }
        );
    }

    #[tokio::test]
    async fn an_item_that_does_not_decode_ends_the_stream_and_abandons_it() {
        let queue = Arc::new(WriteQueue::new(1 << 20, 1 << 20));
        let table = StreamTable::default();
        let inbound = table.open_inbound(1, 300);
        // Not a bincode `String`: a length of 5 with no bytes behind it.
        table
            .on_item(1, Bytes::from_static(&[5]), 20)
            .expect("within window");
        let abandoned = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = abandoned.clone();
        let mut rx = Receiver::<String>::new(1, inbound, queue).on_abandon(move || {
            flag.store(true, std::sync::atomic::Ordering::SeqCst);
        });
        assert!(matches!(rx.next().await, Some(Err(Error::Codec(_)))));
        assert!(
            abandoned.load(std::sync::atomic::Ordering::SeqCst),
            "the peer must be told to stop"
        );
        assert!(rx.next().await.is_none());
    }

    #[tokio::test]
    async fn a_sender_beyond_its_window_is_refused() {
        let table = StreamTable::default();
        let _inbound = table.open_inbound(1, 100);
        let item = || Bytes::from_static(b"x");
        assert!(table.on_item(1, item(), 60).is_ok(), "within the window");
        assert!(table.on_item(1, item(), 40).is_ok(), "exactly the window");
        assert!(
            table.on_item(1, item(), 1).is_err(),
            "sent with no credit left"
        );
        let _other = table.open_inbound(2, 100);
        table.on_item(2, item(), 60).expect("within the window");
        assert!(
            table.on_item(2, item(), 41).is_err(),
            "a frame that overshoots the credit left"
        );
    }

    #[tokio::test]
    async fn an_item_larger_than_the_window_ends_its_stream_with_a_typed_error() {
        let queue = Arc::new(WriteQueue::new(1 << 20, 1 << 20));
        let table = StreamTable::default();
        let outbound = table.open_outbound(1, 64);
        let err = send(&queue, 1, &outbound, Stream::iter([vec![7u8; 100]]))
            .await
            .expect_err("too large for the window");
        assert!(
            matches!(err, Error::MessageTooLarge { len, max: 32 } if len > 100),
            "{err:?}"
        );
        // The peer learns it as the end of the stream, and nothing else was queued.
        let mut frames = crate::frame::FrameDecoder::new(1 << 20);
        let mut buf = bytes::BytesMut::new();
        buf.extend_from_slice(&queue.take_queued_for_test());
        let frame = tokio_util::codec::Decoder::decode(&mut frames, &mut buf)
            .expect("frame")
            .expect("one frame");
        let (header, _) = crate::message::decode_frame(frame).expect("header");
        assert!(
            matches!(
                header,
                Header::StreamEnd {
                    id: 1,
                    status: Status::Error { .. }
                }
            ),
            "{header:?}"
        );
        assert!(buf.is_empty(), "only the end of stream was queued");
    }

    #[tokio::test]
    async fn closing_the_table_fails_open_and_future_streams() {
        let queue = Arc::new(WriteQueue::new(1 << 20, 1 << 20));
        let table = StreamTable::default();
        let inbound = table.open_inbound(1, 100);
        table.close(Error::closed("gone"));
        let mut rx = Receiver::<u32>::new(1, inbound, queue.clone());
        assert!(matches!(
            rx.next().await,
            Some(Err(Error::ConnectionClosed { .. }))
        ));
        assert!(rx.next().await.is_none());
        let outbound = table.open_outbound(2, 100);
        assert!(send(&queue, 2, &outbound, Stream::iter([1u32]))
            .await
            .is_err());
    }

    #[tokio::test]
    async fn the_producer_is_not_polled_beyond_the_window() {
        let queue = Arc::new(WriteQueue::new(1 << 20, 1 << 20));
        let table = StreamTable::default();
        let outbound = table.open_outbound(1, 64);
        let produced = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = produced.clone();
        let items = Stream::new(futures::stream::iter(0..1000u32).inspect(move |_| {
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }));
        let sending = send(&queue, 1, &outbound, items);
        tokio::pin!(sending);
        assert!(futures::poll!(sending.as_mut()).is_pending());
        let before = produced.load(std::sync::atomic::Ordering::SeqCst);
        // Each item frame is 4 + 1 + 8 + the item: about 14 bytes; 64 bytes of window.
        // Four of them fit; the fifth is taken from the producer (there was credit left)
        // and waits for room for all of its frame, and no sixth is asked for.
        assert_eq!(before, 5, "produced {before} items for a 64-byte window");
        table.on_credit(1, 1 << 20);
        sending.await.expect("sent");
        assert_eq!(produced.load(std::sync::atomic::Ordering::SeqCst), 1000);
    }
}
