//! The one writer per connection.
//!
//! Every task that has something to send (callers on the client, handlers on the server)
//! encodes its frame straight into one shared buffer under a short lock. A single writer
//! loop takes the whole buffer, swaps in an empty one, and writes it with one `write_all`:
//! however many frames became ready meanwhile, they cost one syscall. Before taking the
//! buffer the writer yields once, so that tasks woken at the same moment add their frames to
//! the same write instead of each getting a write of their own.
//!
//! The buffer is bounded: producers call [`WriteQueue::ready`] first, which waits while the
//! buffer holds more than the high-water mark, so a peer that stops reading slows its
//! producers down instead of growing memory. Control messages (cancel, go-away) skip that
//! wait; they are small and must not be stuck behind data.
//!
//! A large [`Payload`](crate::Payload) is not copied into the buffer: its frame holds its
//! length, and its bytes are recorded as a *splice* at that position, to be written from
//! their own memory with a vectored write (see [`payload`](mod@crate::payload)). The queue
//! counts spliced bytes as queued bytes everywhere: in the frame's length, against the
//! frame limit, the high-water mark and the budget.

use std::io::IoSlice;
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::BytesMut;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::Notify;

use serde::Serialize;

use crate::budget::Budget;
use crate::codec::{Bincode, Codec, CodecError};
use crate::error::Error;
use crate::message::{encode_frame_spliced, Header};
use crate::payload::{self, Splice};

/// Buffers above this capacity are dropped after a write instead of kept for reuse, so one
/// huge message does not pin its memory for the rest of the connection. Up to it, a
/// connection that keeps sending large messages reuses its buffers instead of growing a new
/// one (copying as it doubles) for every message.
const KEEP_CAPACITY: usize = 4 * 1024 * 1024;
const INITIAL_CAPACITY: usize = 8 * 1024;

/// Frames waiting to be written, shared by producers and the writer loop.
#[derive(Debug)]
pub struct WriteQueue {
    state: Mutex<State>,
    writer_wake: Notify,
    space: Notify,
    max_frame_len: usize,
    high_water: usize,
    /// Bytes queued by every connection of a server together, when it keeps a total: a
    /// producer waits while it is full, as it does above this queue's own high water.
    budget: Option<Arc<Budget>>,
}

#[derive(Debug)]
struct State {
    buf: BytesMut,
    /// Payloads written from their own memory, at positions in `buf`, in order.
    splices: Vec<Splice>,
    /// The bytes of `splices`: queued as much as those of `buf`.
    spliced: usize,
    /// Bytes taken from the budget and not given back: queued, or being written.
    charged: usize,
    closing: bool,
    failed: Option<Error>,
    /// Counts the buffers the writer has taken: the frames in `buf` belong to this batch.
    batch: u64,
    /// The batch whose frames were thrown away, never written, when the queue failed.
    dropped: Option<u64>,
}

/// Which write a queued frame goes out with; see [`WriteQueue::never_written`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Batch(u64);

impl WriteQueue {
    /// A queue for frames up to `max_frame_len` bytes, whose producers wait while more than
    /// `high_water` bytes are buffered.
    pub fn new(max_frame_len: usize, high_water: usize) -> Self {
        WriteQueue {
            state: Mutex::new(State {
                buf: BytesMut::with_capacity(INITIAL_CAPACITY),
                splices: Vec::new(),
                spliced: 0,
                charged: 0,
                closing: false,
                failed: None,
                batch: 0,
                dropped: None,
            }),
            writer_wake: Notify::new(),
            space: Notify::new(),
            max_frame_len,
            high_water,
            budget: None,
        }
    }

    /// Also counts this queue's bytes in `budget`, a total over many queues, and makes
    /// producers wait while that total is full.
    pub fn with_budget(mut self, budget: Arc<Budget>) -> Self {
        self.budget = Some(budget);
        self
    }

    /// Whether a producer must wait: this queue is above its high water, or the total it
    /// counts in is full.
    fn must_wait(&self, state: &State) -> bool {
        state.queued() >= self.high_water || self.budget.as_ref().is_some_and(|b| b.is_full())
    }

    /// Gives `bytes` back to the budget, once they are written or thrown away.
    fn uncharge(&self, state: &mut State, bytes: usize) {
        if let Some(budget) = &self.budget {
            let bytes = bytes.min(state.charged);
            state.charged -= bytes;
            budget.give(bytes);
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while encoding (a user's Serialize impl) rolls its frame back before the
        // lock is released, so the state behind a poisoned lock is still consistent.
        crate::sync::lock(&self.state)
    }

    /// Appends one frame now, without waiting for room, and returns its length.
    ///
    /// Fails if the connection is closing or broken, or the frame is too large; in every
    /// failure case nothing is queued.
    pub fn push(
        &self,
        header: &Header,
        body: impl FnOnce(&mut BytesMut) -> Result<(), CodecError>,
    ) -> Result<usize, Error> {
        let state = self.open()?;
        self.append(state, header, body)
    }

    /// Appends a control frame (a header with no body: cancel, credit, go-away, end of
    /// stream) now, without waiting for room: control frames are small and must not queue
    /// behind data.
    pub fn push_control(&self, header: &Header) -> Result<usize, Error> {
        self.push(header, |_| Ok(()))
    }

    /// Answers the peer's ping with a pong now, if the buffer is below the high-water mark;
    /// otherwise skips it: the peer reads the frames already queued before the pong would
    /// have arrived, and they show it this side is alive (see [`keepalive`](crate::keepalive)).
    /// So a peer that pings without reading cannot grow the buffer.
    pub fn answer_ping(&self, payload: u64) {
        // Best effort: a closing or broken connection has nobody to answer.
        let _ = self.try_push(&Header::Pong { payload }, |_| Ok(()));
    }

    /// Like [`push_control`](Self::push_control), but waits for room first: for frames a
    /// peer could provoke without bound (the refusal of each request it sends), so a peer
    /// that does not read is slowed down instead of buffered for.
    pub async fn send_control(&self, header: &Header) -> Result<usize, Error> {
        self.send(header, |_| Ok(())).await
    }

    /// Appends one frame if the buffer is below the high-water mark, with a single lock and
    /// no waiting. Without room, hands `body` back untouched so the caller can wait with
    /// [`ready`](Self::ready) and push.
    pub fn try_push<F>(&self, header: &Header, body: F) -> Result<Result<usize, F>, Error>
    where
        F: FnOnce(&mut BytesMut) -> Result<(), CodecError>,
    {
        Ok(self.try_push_in_batch(header, body)?.map(|(len, _)| len))
    }

    /// Like [`try_push`](Self::try_push), and says which batch the frame joined, so the
    /// caller can later learn whether it was ever written ([`never_written`](Self::never_written)).
    pub fn try_push_in_batch<F>(
        &self,
        header: &Header,
        body: F,
    ) -> Result<Result<(usize, Batch), F>, Error>
    where
        F: FnOnce(&mut BytesMut) -> Result<(), CodecError>,
    {
        let state = self.open()?;
        if self.must_wait(&state) {
            return Ok(Err(body));
        }
        let batch = Batch(state.batch);
        self.append(state, header, body).map(|len| Ok((len, batch)))
    }

    /// Whether the frames of `batch` were thrown away when the connection failed, before the
    /// writer took them: none of their bytes left this process, so the peer never saw them.
    /// (A batch the writer took may have been written in part, and does not count.)
    pub fn never_written(&self, batch: Batch) -> bool {
        self.lock().dropped == Some(batch.0)
    }

    /// The state, locked, if frames may still be queued.
    fn open(&self) -> Result<MutexGuard<'_, State>, Error> {
        let state = self.lock();
        if let Some(err) = &state.failed {
            return Err(err.clone());
        }
        if state.closing {
            return Err(Error::closed("the connection is closing"));
        }
        Ok(state)
    }

    /// Encodes one frame into the locked buffer and wakes the writer if it was idle. Large
    /// payloads the body encodes with the codec are spliced.
    fn append(
        &self,
        mut guard: MutexGuard<'_, State>,
        header: &Header,
        body: impl FnOnce(&mut BytesMut) -> Result<(), CodecError>,
    ) -> Result<usize, Error> {
        let was_empty = guard.buf.is_empty();
        let (len, spliced) = Self::encode(&mut guard, header, self.max_frame_len, body)?;
        self.commit(guard, len, spliced, was_empty);
        Ok(len)
    }

    /// Like [`append`](Self::append), then asks `admit` whether a frame of the encoded length
    /// may go; if not, takes it out again and returns `None`.
    fn append_if(
        &self,
        mut guard: MutexGuard<'_, State>,
        header: &Header,
        body: impl FnOnce(&mut BytesMut) -> Result<(), CodecError>,
        admit: impl FnOnce(usize) -> bool,
    ) -> Result<Option<usize>, Error> {
        let was_empty = guard.buf.is_empty();
        let (before, splices_before) = (guard.buf.len(), guard.splices.len());
        let (len, spliced) = Self::encode(&mut guard, header, self.max_frame_len, body)?;
        if !admit(len) {
            guard.buf.truncate(before);
            guard.splices.truncate(splices_before);
            return Ok(None);
        }
        self.commit(guard, len, spliced, was_empty);
        Ok(Some(len))
    }

    /// Encodes one frame at the end of the buffer, its large payloads spliced; returns its
    /// length (spliced bytes included) and its spliced bytes. On an error nothing is left
    /// queued.
    #[inline(always)]
    fn encode(
        state: &mut State,
        header: &Header,
        max_frame_len: usize,
        body: impl FnOnce(&mut BytesMut) -> Result<(), CodecError>,
    ) -> Result<(usize, usize), Error> {
        let before = state.buf.len();
        let splices_before = state.splices.len();
        let mut spliced = 0;
        let encoded = encode_frame_spliced(&mut state.buf, header, max_frame_len, |buf| {
            let (encoded, bytes) = payload::splicing(&mut state.splices, || body(buf));
            spliced = bytes;
            encoded.map(|()| bytes)
        });
        if let Err(err) = encoded {
            state.splices.truncate(splices_before);
            return Err(err);
        }
        Ok((state.buf.len() - before + spliced, spliced))
    }

    /// Counts an encoded frame of `len` bytes (`spliced` of them spliced) as queued, and wakes
    /// the writer if the buffer was empty before it.
    #[inline(always)]
    fn commit(
        &self,
        mut state: MutexGuard<'_, State>,
        len: usize,
        spliced: usize,
        was_empty: bool,
    ) {
        state.spliced += spliced;
        if let Some(budget) = &self.budget {
            budget.take(len);
            state.charged += len;
        }
        drop(state);
        if was_empty {
            self.writer_wake.notify_one();
        }
    }

    /// Appends one frame if the buffer is below the high-water mark and `admit` accepts its
    /// encoded length (with the lock held: a stream sender takes its credit there), with a
    /// single lock and no waiting. Returns the frame's length, or `None` if nothing was
    /// queued (no room, or not admitted).
    pub fn try_push_if(
        &self,
        header: &Header,
        body: impl FnOnce(&mut BytesMut) -> Result<(), CodecError>,
        admit: impl FnOnce(usize) -> bool,
    ) -> Result<Option<usize>, Error> {
        let state = self.open()?;
        if self.must_wait(&state) {
            return Ok(None);
        }
        self.append_if(state, header, body, admit)
    }

    /// Waits until the buffer is below the high-water mark and the total it counts in has
    /// room (or the connection is gone).
    pub async fn ready(&self) -> Result<(), Error> {
        loop {
            // Created before the check: notify_waiters() reaches it from this point on.
            let notified = self.space.notified();
            // `Some` when only the total is in the way: then room comes back from any queue.
            let full_total = {
                let state = self.lock();
                if let Some(err) = &state.failed {
                    return Err(err.clone());
                }
                if state.queued() >= self.high_water {
                    None
                } else {
                    match &self.budget {
                        Some(budget) if budget.is_full() => Some(budget),
                        _ => return Ok(()),
                    }
                }
            };
            match full_total {
                Some(budget) => {
                    tokio::select! {
                        _ = notified => {}
                        _ = budget.room() => {}
                    }
                }
                None => notified.await,
            }
        }
    }

    /// Waits for room, then appends one frame.
    pub async fn send(
        &self,
        header: &Header,
        body: impl FnOnce(&mut BytesMut) -> Result<(), CodecError>,
    ) -> Result<usize, Error> {
        match self.try_push(header, body)? {
            Ok(len) => Ok(len),
            Err(body) => {
                self.ready().await?;
                self.push(header, body)
            }
        }
    }

    /// Like [`send`](Self::send), with `value` as the body, encoded with [`Bincode`]. Takes the
    /// value itself (or `&mut` to it), not a shared reference: a reference held across the
    /// wait for room would demand `T: Sync` of a future that is `Send`.
    pub async fn send_value<T: Serialize + Send>(
        &self,
        header: &Header,
        value: T,
    ) -> Result<usize, Error> {
        // Usually there is room: one lock, no waiting. (The closure, which borrows `value`,
        // is gone before any wait.)
        let pushed = self
            .try_push(header, |buf| Bincode.encode(&value, buf))?
            .ok();
        match pushed {
            Some(len) => Ok(len),
            None => {
                self.ready().await?;
                self.push(header, |buf| Bincode.encode(&value, buf))
            }
        }
    }

    /// Lets the writer finish: it writes what is queued, then returns. New pushes fail.
    pub fn close(&self) {
        self.lock().closing = true;
        self.writer_wake.notify_one();
    }

    /// Marks the connection broken: queued frames are dropped, pushes and waits fail with
    /// `err`, and the writer loop returns.
    pub fn fail(&self, err: Error) {
        {
            let mut state = self.lock();
            if state.failed.is_none() {
                state.failed = Some(err);
            }
            if !state.buf.is_empty() {
                state.dropped = Some(state.batch);
            }
            let thrown_away = state.queued();
            self.uncharge(&mut state, thrown_away);
            state.buf = BytesMut::new();
            state.splices = Vec::new();
            state.spliced = 0;
        }
        self.writer_wake.notify_one();
        self.space.notify_waiters();
    }

    /// The error the queue failed with, if it did.
    #[cfg(test)]
    pub(crate) fn failure(&self) -> Option<Error> {
        self.lock().failed.clone()
    }

    /// Takes every queued byte, as the writer would.
    #[cfg(test)]
    pub(crate) fn take_queued_for_test(&self) -> BytesMut {
        std::mem::take(&mut self.lock().buf)
    }

    /// Bytes currently waiting to be written, spliced ones included.
    #[cfg(test)]
    pub(crate) fn queued_bytes(&self) -> usize {
        self.lock().queued()
    }

    /// The writer loop: runs until [`close`](Self::close) (after writing everything queued),
    /// [`fail`](Self::fail), or a write error (which also fails the queue).
    pub async fn run<W: AsyncWrite + Unpin>(&self, mut io: W) -> Result<(), Error> {
        // Empty until the first write hands it the buffer that was written: a connection
        // that stays idle holds one buffer, not two.
        let mut out = BytesMut::new();
        let mut out_splices = Vec::new();
        loop {
            let notified = self.writer_wake.notified();
            let (has_data, closing) = {
                let state = self.lock();
                if let Some(err) = &state.failed {
                    return Err(err.clone());
                }
                (!state.buf.is_empty(), state.closing)
            };
            if !has_data && closing {
                // The peer sees a clean end of stream; an error here changes nothing.
                let _ = io.shutdown().await;
                return Ok(());
            }
            if !has_data {
                notified.await;
                continue;
            }
            // Let every task that is ready right now add its frame to this write.
            tokio::task::yield_now().await;
            let spliced = {
                let mut state = self.lock();
                std::mem::swap(&mut state.buf, &mut out);
                std::mem::swap(&mut state.splices, &mut out_splices);
                state.batch += 1;
                std::mem::take(&mut state.spliced)
            };
            self.space.notify_waiters();
            let written = async {
                if out_splices.is_empty() {
                    io.write_all(&out).await?;
                } else {
                    write_spliced(&mut io, &out, &out_splices).await?;
                }
                io.flush().await
            }
            .await;
            // The payloads' memory goes as soon as it is written.
            out_splices.clear();
            // Only a queue that counts in a budget has anything to give back: the others
            // (every client's) take no second lock per write.
            if self.budget.is_some() {
                self.uncharge(&mut self.lock(), out.len() + spliced);
            }
            if let Err(err) = written {
                let err = Error::closed_by_io("write failed", err);
                self.fail(err.clone());
                return Err(err);
            }
            if out.capacity() > KEEP_CAPACITY {
                out = BytesMut::with_capacity(INITIAL_CAPACITY);
            } else {
                out.clear();
            }
        }
    }
}

impl State {
    /// Bytes queued, spliced ones included.
    #[inline]
    fn queued(&self) -> usize {
        self.buf.len() + self.spliced
    }
}

/// The most buffers one vectored write is given (Linux takes up to 1024).
const MAX_IOVECS: usize = 64;

/// Writes `buf` with `splices` inserted at their positions, with vectored writes, until all
/// of it is written. Streams without vectored writes (some TLS streams) are given one
/// buffer at a time, which is what their `write_vectored` takes anyway.
async fn write_spliced<W: AsyncWrite + Unpin>(
    io: &mut W,
    buf: &[u8],
    splices: &[Splice],
) -> std::io::Result<()> {
    // The pieces in order: buf up to the first splice, the splice, buf up to the next, ...
    let piece = |index: usize| -> &[u8] {
        let k = index / 2;
        if index % 2 == 1 {
            return &splices[k].bytes;
        }
        let from = k.checked_sub(1).map_or(0, |before| splices[before].at);
        let to = splices.get(k).map_or(buf.len(), |s| s.at);
        &buf[from..to]
    };
    let pieces = 2 * splices.len() + 1;
    // The first piece not wholly written, and how much of it is.
    let (mut next, mut offset) = (0, 0);
    let mut slices = Vec::with_capacity(MAX_IOVECS.min(pieces));
    while next < pieces {
        slices.clear();
        slices.extend(
            (next..pieces)
                .map(piece)
                .enumerate()
                .map(|(i, p)| if i == 0 { &p[offset..] } else { p })
                .filter(|p| !p.is_empty())
                .take(MAX_IOVECS)
                .map(IoSlice::new),
        );
        if slices.is_empty() {
            break;
        }
        let mut written = io.write_vectored(&slices).await?;
        if written == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        while next < pieces {
            let left = piece(next).len() - offset;
            if written < left {
                offset += written;
                break;
            }
            written -= left;
            next += 1;
            offset = 0;
        }
    }
    Ok(())
}

impl Drop for WriteQueue {
    fn drop(&mut self) {
        // Bytes still queued, or taken by a writer that was aborted mid-write.
        if let Some(budget) = &self.budget {
            budget.give(crate::sync::lock(&self.state).charged);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::{FrameDecoder, PREFIX_LEN};
    use crate::message::decode_frame;
    use crate::payload::{spliced_len, SPLICE_MIN};
    use crate::Payload;
    use std::sync::Arc;
    use tokio::io::AsyncReadExt;
    use tokio_util::codec::Decoder;

    fn cancel(id: u64) -> Header {
        Header::Cancel { id }
    }

    #[test]
    fn pongs_stop_at_the_high_water_mark() {
        let queue = WriteQueue::new(1024, 64);
        // A peer that floods pings and reads nothing: the pongs fill the buffer up to the
        // mark and no further.
        for payload in 0..1000 {
            queue.answer_ping(payload);
        }
        let queued = queue.queued_bytes();
        assert!(
            queued >= 64,
            "pongs are answered below the mark ({queued} bytes)"
        );
        assert!(queued < 64 + 13, "pongs stop at the mark ({queued} bytes)");
    }

    #[tokio::test]
    async fn frames_queued_together_leave_in_one_write_and_in_order() {
        let queue = Arc::new(WriteQueue::new(1024, 1 << 20));
        for id in 0..100 {
            queue.push_control(&cancel(id)).expect("push");
        }
        queue.close();
        let (mut rx, tx) = tokio::io::duplex(1 << 20);
        queue.run(tx).await.expect("run");
        let mut bytes = Vec::new();
        rx.read_to_end(&mut bytes).await.expect("read");
        let mut buf = BytesMut::from(&bytes[..]);
        let mut decoder = FrameDecoder::new(1024);
        for id in 0..100 {
            let frame = decoder.decode(&mut buf).expect("frame").expect("complete");
            assert_eq!(decode_frame(frame).expect("header").0, cancel(id));
        }
        assert!(buf.is_empty());
    }

    #[tokio::test]
    async fn producers_wait_above_high_water_until_the_writer_drains() {
        let queue = Arc::new(WriteQueue::new(1 << 20, 1000));
        queue
            .push(&cancel(1), |b| Bincode.encode(&vec![7u8; 2000], b))
            .expect("push");
        // Above the mark: ready() must not complete yet.
        let ready = queue.ready();
        tokio::pin!(ready);
        assert!(futures::poll!(ready.as_mut()).is_pending());
        // Start the writer; once it takes the buffer, the producer may go on.
        let (mut rx, tx) = tokio::io::duplex(1 << 20);
        let writer = {
            let queue = queue.clone();
            tokio::spawn(async move { queue.run(tx).await })
        };
        ready.await.expect("room again");
        queue.close();
        writer.await.expect("join").expect("writer");
        let mut bytes = Vec::new();
        rx.read_to_end(&mut bytes).await.expect("read");
        assert!(bytes.len() > 2000);
    }

    #[tokio::test]
    async fn frames_a_failure_threw_away_are_known_as_never_written() {
        let queue = WriteQueue::new(1024, 1 << 20);
        let pushed = queue.try_push_in_batch(&cancel(1), |_| Ok(()));
        let Ok(Ok((_, batch))) = pushed else {
            panic!("room for a frame");
        };
        queue.fail(Error::closed("peer went away"));
        assert!(queue.never_written(batch));

        // A batch the writer took is not "never written", even if the connection then fails.
        let queue = WriteQueue::new(1024, 1 << 20);
        let Ok(Ok((_, batch))) = queue.try_push_in_batch(&cancel(1), |_| Ok(())) else {
            panic!("room for a frame");
        };
        queue.close();
        let (mut rx, tx) = tokio::io::duplex(1 << 16);
        queue.run(tx).await.expect("written");
        let mut bytes = Vec::new();
        rx.read_to_end(&mut bytes).await.expect("read");
        assert!(!bytes.is_empty());
        queue.fail(Error::closed("later"));
        assert!(!queue.never_written(batch));
    }

    #[tokio::test]
    async fn failure_reaches_pushers_and_waiters() {
        let queue = WriteQueue::new(1024, 0);
        queue.fail(Error::closed("peer went away"));
        assert!(matches!(
            queue.push_control(&cancel(1)),
            Err(Error::ConnectionClosed { .. })
        ));
        assert!(queue.ready().await.is_err());
    }

    /// A writer that takes at most `chunk` bytes a call, vectored or not, recording them.
    struct Trickle {
        out: Vec<u8>,
        chunk: usize,
        vectored: bool,
        calls: usize,
    }

    impl AsyncWrite for Trickle {
        fn poll_write(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
            buf: &[u8],
        ) -> std::task::Poll<std::io::Result<usize>> {
            let n = buf.len().min(self.chunk);
            self.out.extend_from_slice(&buf[..n]);
            self.calls += 1;
            std::task::Poll::Ready(Ok(n))
        }

        fn poll_write_vectored(
            mut self: std::pin::Pin<&mut Self>,
            cx: &mut std::task::Context<'_>,
            bufs: &[IoSlice<'_>],
        ) -> std::task::Poll<std::io::Result<usize>> {
            if !self.vectored {
                let first = bufs
                    .iter()
                    .find(|b| !b.is_empty())
                    .map_or(&[][..], |b| &b[..]);
                return self.poll_write(cx, first);
            }
            self.calls += 1;
            let mut left = self.chunk;
            for buf in bufs {
                let n = buf.len().min(left);
                self.out.extend_from_slice(&buf[..n]);
                left -= n;
            }
            std::task::Poll::Ready(Ok(self.chunk - left))
        }

        fn is_write_vectored(&self) -> bool {
            self.vectored
        }

        fn poll_flush(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            std::task::Poll::Ready(Ok(()))
        }

        fn poll_shutdown(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            std::task::Poll::Ready(Ok(()))
        }
    }

    /// Frames with payloads below, at and far above the splice threshold, and between them
    /// frames without any.
    fn mixed_frames() -> Vec<(Header, (u32, Payload, Payload))> {
        let payload = |len: usize, seed: u8| {
            Payload::from((0..len).map(|i| (i as u8) ^ seed).collect::<Vec<_>>())
        };
        [0, 1, SPLICE_MIN - 1, SPLICE_MIN, 1 << 20]
            .into_iter()
            .enumerate()
            .map(|(i, len)| {
                let value = (i as u32, payload(len, i as u8), payload(SPLICE_MIN, 7));
                (cancel(i as u64), value)
            })
            .collect()
    }

    /// What the frames' bytes are without splicing: bincode's plain encoding.
    fn plain_frames(frames: &[(Header, (u32, Payload, Payload))]) -> Vec<u8> {
        let mut expected = BytesMut::new();
        for (header, value) in frames {
            crate::message::encode_frame(&mut expected, header, usize::MAX, |buf| {
                Bincode.encode(value, buf)
            })
            .expect("encode");
        }
        expected.to_vec()
    }

    #[tokio::test]
    async fn spliced_payloads_go_out_as_the_bytes_a_copy_would_give() {
        let frames = mixed_frames();
        let expected = plain_frames(&frames);
        for (chunk, vectored) in [(usize::MAX, true), (1000, true), (777, false), (3, true)] {
            let queue = WriteQueue::new(2 << 20, usize::MAX);
            let mut lens = 0;
            for (header, value) in &frames {
                lens += queue
                    .push(header, |buf| Bincode.encode(value, buf))
                    .expect("push");
            }
            // Every payload of at least the threshold was spliced: the buffer holds the rest.
            {
                let state = queue.lock();
                assert_eq!(state.splices.len(), 2 * frames.len() - 3);
                assert_eq!(state.spliced, spliced_len(&state.splices));
                assert_eq!(state.buf.len() + state.spliced, expected.len());
                assert!(state.buf.len() < 5 * SPLICE_MIN);
            }
            // The lengths pushes report, and the bytes queued, count the spliced bytes.
            assert_eq!(lens, expected.len());
            assert_eq!(queue.queued_bytes(), expected.len());
            queue.close();
            let mut io = Trickle {
                out: Vec::new(),
                chunk,
                vectored,
                calls: 0,
            };
            queue.run(&mut io).await.expect("written");
            assert!(
                io.out == expected,
                "reads of {chunk} (vectored: {vectored})"
            );
            if chunk == usize::MAX {
                assert_eq!(io.calls, 1, "one vectored write for the batch");
            }
        }
    }

    #[test]
    fn the_frame_limit_counts_spliced_bytes() {
        let payload = Payload::from(vec![1u8; 100_000]);
        let queue = WriteQueue::new(100_000, usize::MAX);
        let err = queue
            .push(&cancel(1), |buf| Bincode.encode(&payload, buf))
            .expect_err("over the limit");
        let Error::MessageTooLarge { len, max } = err else {
            panic!("{err:?}");
        };
        // Prefix excluded: tag, id, varint length (252 + u32), the bytes.
        assert_eq!((len, max), (1 + 8 + 5 + 100_000, 100_000));
        // Nothing was queued, spliced or not; the next frame is whole.
        assert_eq!(queue.queued_bytes(), 0);
        assert!(queue.lock().splices.is_empty());
        let small = Payload::from(vec![2u8; 100_000 - 14]);
        let len = queue
            .push(&cancel(2), |buf| Bincode.encode(&small, buf))
            .expect("at the limit");
        assert_eq!(len, PREFIX_LEN + 100_000);
        let mut queued = queue.take_queued_for_test();
        let state = queue.lock();
        assert_eq!(state.splices.len(), 1);
        assert_eq!(state.splices[0].at, PREFIX_LEN + 1 + 8 + 5);
        // The prefix holds the frame's whole length.
        assert_eq!(&queued.split_to(PREFIX_LEN)[..], 100_000u32.to_be_bytes());
    }

    #[tokio::test]
    async fn spliced_bytes_count_against_high_water_and_budget() {
        let budget = Arc::new(Budget::new(1 << 20));
        let queue = Arc::new(WriteQueue::new(4 << 20, 64 * 1024).with_budget(budget.clone()));
        let payload = Payload::from(vec![3u8; 200_000]);
        let len = queue
            .push(&cancel(1), |buf| Bincode.encode(&payload, buf))
            .expect("push");
        assert!(len > 200_000);
        assert_eq!(budget.used(), len);
        // Above the high-water mark by its spliced bytes alone.
        assert!(queue.lock().buf.len() < 64);
        let ready = queue.ready();
        tokio::pin!(ready);
        assert!(futures::poll!(ready.as_mut()).is_pending());
        // Written: everything is given back.
        queue.close();
        let mut io = Trickle {
            out: Vec::new(),
            chunk: usize::MAX,
            vectored: true,
            calls: 0,
        };
        queue.run(&mut io).await.expect("written");
        ready.await.expect("room");
        assert_eq!(io.out.len(), len);
        assert_eq!(budget.used(), 0);

        // Thrown away by a failure: given back too.
        let queue = WriteQueue::new(4 << 20, 64 * 1024).with_budget(budget.clone());
        queue
            .push(&cancel(1), |buf| Bincode.encode(&payload, buf))
            .expect("push");
        assert!(budget.used() > 200_000);
        queue.fail(Error::closed("gone"));
        assert_eq!(budget.used(), 0);
    }

    #[test]
    fn a_frame_not_admitted_leaves_nothing_behind() {
        let budget = Arc::new(Budget::new(1 << 20));
        let queue = WriteQueue::new(4 << 20, 1 << 20).with_budget(budget.clone());
        queue.push_control(&cancel(1)).expect("push");
        let queued = queue.queued_bytes();
        let charged = budget.used();
        // Refused after encoding, a spliced payload among its bytes: all of it is taken out.
        let payload = Payload::from(vec![5u8; 100_000]);
        let mut asked = 0;
        let pushed = queue.try_push_if(
            &cancel(2),
            |buf| Bincode.encode(&payload, buf),
            |len| {
                asked = len;
                false
            },
        );
        assert_eq!(pushed.expect("no error"), None);
        assert!(asked > 100_000, "admit saw the whole frame: {asked}");
        assert_eq!(queue.queued_bytes(), queued);
        assert_eq!(budget.used(), charged);
        assert!(queue.lock().splices.is_empty());
        // Admitted: the same frame as a plain push makes, counted as one.
        let len = queue
            .try_push_if(&cancel(2), |buf| Bincode.encode(&7u32, buf), |_| true)
            .expect("no error")
            .expect("admitted");
        assert_eq!(queue.queued_bytes(), queued + len);
        assert_eq!(budget.used(), charged + len);
        let plain = WriteQueue::new(4 << 20, 1 << 20);
        plain.push_control(&cancel(1)).expect("push");
        plain
            .push(&cancel(2), |buf| Bincode.encode(&7u32, buf))
            .expect("push");
        assert_eq!(queue.take_queued_for_test(), plain.take_queued_for_test());
    }

    #[test]
    fn above_high_water_nothing_is_encoded_or_admitted() {
        let queue = WriteQueue::new(1 << 20, 10);
        queue
            .push(&cancel(1), |buf| Bincode.encode(&[0u8; 32], buf))
            .expect("push");
        let pushed = queue.try_push_if(
            &cancel(2),
            |_| panic!("encoded with no room"),
            |_| panic!("asked with no room"),
        );
        assert_eq!(pushed.expect("no error"), None);
    }

    #[tokio::test]
    async fn a_stream_items_payloads_are_spliced_too() {
        use crate::stream::StreamTable;
        let table = StreamTable::default();
        let window = 4 << 20;
        let outbound = table.open_outbound(9, window);
        let queue = WriteQueue::new(4 << 20, usize::MAX);
        let items: Vec<Payload> = [SPLICE_MIN, 1, 300_000]
            .into_iter()
            .map(|len| Payload::from(vec![len as u8; len]))
            .collect();
        let stream = crate::stream::Stream::iter(items.clone());
        crate::stream::send(&queue, 9, &outbound, stream)
            .await
            .expect("sent");
        assert_eq!(queue.lock().splices.len(), 2);
        let mut expected = BytesMut::new();
        for item in &items {
            crate::message::encode_frame(
                &mut expected,
                &Header::StreamItem { id: 9 },
                usize::MAX,
                |buf| Bincode.encode(item, buf),
            )
            .expect("encode");
        }
        queue.close();
        let mut io = Trickle {
            out: Vec::new(),
            chunk: 5000,
            vectored: true,
            calls: 0,
        };
        queue.run(&mut io).await.expect("written");
        assert!(io.out.starts_with(&expected));
    }

    #[tokio::test]
    async fn write_error_fails_the_queue() {
        let queue = WriteQueue::new(1024, 1 << 20);
        queue.push_control(&cancel(1)).expect("push");
        let (rx, tx) = tokio::io::duplex(16);
        drop(rx);
        assert!(queue.run(tx).await.is_err());
        assert!(queue.failure().is_some());
    }
}
