//! Sealed chunks beside the TLS records.
//!
//! A chunk leaves its client sealed (AES-256-GCM under the swarm's data key), and whoever
//! receives one checks it against its id, the BLAKE3 hash of the sealed bytes, before using
//! or storing it (`swarmfs_core::verify_chunk`, `ChunkStore::put`). Sending it inside TLS as
//! well encrypts and authenticates every byte a second time, on both ends, and copies it
//! twice more: on one machine that was most of the difference between a put and a bare TCP
//! pipe. So once the hello has proven both ends (protocol 9 on), a frame whose payload is a
//! whole sealed chunk (a `PutChunk` request, a `Chunk` answer) sends that payload as a *unit*
//! on the TCP stream between two TLS records, just before the frame itself; the frame
//! travels in TLS as every frame does and says that its payload went beside it.
//!
//! What TLS still covers: every message, the chunk ids and the binding of a payload to its
//! message; a payload changed on the way fails its receiver's hash check, and a unit where a
//! record should be fails TLS. What an observer of the network sees that it did not before:
//! the sealed bytes of the chunks (from which it can compute their ids), so which chunks move
//! between which nodes, not what they hold.
//!
//! Below TLS the stream is then a sequence of TLS records, `type (20-23) | version (2) |
//! length (2) | body`, and units, `0xFF | flags (1) | length (u32 BE) | payload`. [`Wire`]
//! is the stream under rustls: it hands rustls the records one at a time and reads a unit
//! into memory of its own, where the frame after it takes it from ([`Beside::take`]). The
//! writer queues a unit ([`Beside::send`]) after flushing TLS, so the unit follows whatever
//! was written before it and precedes its frame.

use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{ready, Context, Poll, Waker};

use bytes::{Buf, BufMut, Bytes};
use swarmfs_proto::MAX_FRAME_LEN;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The first byte of a unit; TLS records start with 20 to 23.
const UNIT: u8 = 0xFF;
/// Unit flag: the payload is read into memory starting on a block boundary (a chunk a peer
/// writes to disk straight from there; see `swarmfs_core::direct`).
const ALIGNED: u8 = 1;
const UNIT_HEADER: usize = 6;
const RECORD_HEADER: usize = 5;
const BLOCK: usize = 4096;
/// Bytes read off the stream at a time, when not straight into a unit's payload.
const IN_BUFFER: usize = 64 << 10;

/// Payloads at least this long go beside TLS when the frame allows it: below, the unit's own
/// header and write cost more than they save.
pub const BESIDE_FROM: usize = 16 << 10;

#[derive(Default)]
struct Shared {
    /// Unit headers and payloads to write before any more TLS bytes.
    out: VecDeque<Bytes>,
    /// A unit's payload read off the stream, waiting for the frame after it.
    slot: Option<Bytes>,
    /// rustls wanted more while the next unit waited for the slot to empty.
    parked: Option<Waker>,
    /// Units are sent and accepted only once the hello has proven the other end.
    enabled: bool,
}

/// One connection's units, shared by its [`Wire`], its writer and its frame reader.
#[derive(Clone, Default)]
pub struct Beside(Arc<Mutex<Shared>>);

impl Beside {
    fn shared(&self) -> std::sync::MutexGuard<'_, Shared> {
        self.0.lock().expect("beside lock")
    }

    /// After the hello: units may cross this connection from now on.
    pub fn enable(&self) {
        self.shared().enabled = true;
    }

    pub fn enabled(&self) -> bool {
        self.shared().enabled
    }

    /// Queues `payload` as a unit, written before the next TLS bytes. The caller has flushed
    /// everything it wrote before (so the unit follows it) and writes the frame next.
    pub fn send(&self, payload: Bytes, aligned: bool) {
        let mut head = [0u8; UNIT_HEADER];
        head[0] = UNIT;
        head[1] = if aligned { ALIGNED } else { 0 };
        head[2..6].copy_from_slice(&(payload.len() as u32).to_be_bytes());
        let mut s = self.shared();
        s.out.push_back(Bytes::copy_from_slice(&head));
        s.out.push_back(payload);
    }

    /// The payload of the unit that came just before a frame saying so.
    pub fn take(&self) -> Option<Bytes> {
        let mut s = self.shared();
        let payload = s.slot.take();
        if let Some(w) = s.parked.take() {
            w.wake();
        }
        payload
    }
}

enum Reading {
    /// At the start of a record or unit.
    Boundary,
    /// Inside a record: this many of its bytes still to hand rustls.
    Record(usize),
    /// Inside a unit: its payload so far (from `start`) and its length.
    Unit { buf: Vec<u8>, start: usize, len: usize },
}

/// The stream under rustls (see the module's documentation).
pub struct Wire<T> {
    io: T,
    beside: Beside,
    inbuf: Vec<u8>,
    /// Where the bytes of `inbuf` not handed out yet start.
    head: usize,
    reading: Reading,
}

impl<T> Wire<T> {
    pub fn new(io: T) -> (Wire<T>, Beside) {
        let beside = Beside::default();
        let wire = Wire { io, beside: beside.clone(), inbuf: Vec::new(), head: 0, reading: Reading::Boundary };
        (wire, beside)
    }

    fn buffered(&self) -> &[u8] {
        &self.inbuf[self.head..]
    }

    fn consume(&mut self, n: usize) {
        self.head += n;
        if self.head == self.inbuf.len() {
            self.inbuf.clear();
            self.head = 0;
        }
    }
}

fn invalid(why: &'static str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, why)
}

impl<T: AsyncRead + Unpin> Wire<T> {
    /// Reads until at least `n` bytes are buffered; false at a clean end of the stream
    /// (nothing buffered).
    fn poll_fill(&mut self, cx: &mut Context<'_>, n: usize) -> Poll<io::Result<bool>> {
        while self.buffered().len() < n {
            if self.head > 0 {
                self.inbuf.drain(..self.head);
                self.head = 0;
            }
            self.inbuf.reserve(IN_BUFFER);
            let room = self.inbuf.capacity() - self.inbuf.len();
            let got =
                ready!(tokio_util::io::poll_read_buf(Pin::new(&mut self.io), cx, &mut (&mut self.inbuf).limit(room)))?;
            if got == 0 {
                return match self.buffered().is_empty() {
                    true => Poll::Ready(Ok(false)),
                    false => Poll::Ready(Err(io::ErrorKind::UnexpectedEof.into())),
                };
            }
        }
        Poll::Ready(Ok(true))
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Wire<T> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, out: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            match &mut this.reading {
                Reading::Record(0) => this.reading = Reading::Boundary,
                Reading::Record(left) => {
                    let left = *left;
                    if this.buffered().is_empty() && !ready!(this.poll_fill(cx, 1))? {
                        return Poll::Ready(Err(io::ErrorKind::UnexpectedEof.into()));
                    }
                    let n = left.min(this.buffered().len()).min(out.remaining());
                    out.put_slice(&this.buffered()[..n]);
                    this.consume(n);
                    this.reading = Reading::Record(left - n);
                    return Poll::Ready(Ok(()));
                }
                Reading::Boundary => {
                    if !ready!(this.poll_fill(cx, RECORD_HEADER.min(UNIT_HEADER)))? {
                        return Poll::Ready(Ok(())); // the end of the stream, between records
                    }
                    if this.buffered()[0] != UNIT {
                        let h = this.buffered();
                        let body = u16::from_be_bytes([h[3], h[4]]) as usize;
                        this.reading = Reading::Record(RECORD_HEADER + body);
                        continue;
                    }
                    if !ready!(this.poll_fill(cx, UNIT_HEADER))? {
                        return Poll::Ready(Err(io::ErrorKind::UnexpectedEof.into()));
                    }
                    {
                        let mut s = this.beside.shared();
                        if !s.enabled {
                            return Poll::Ready(Err(invalid("a payload beside TLS before the hello")));
                        }
                        // One unit waits at a time, as one frame's payload did.
                        if s.slot.is_some() {
                            s.parked = Some(cx.waker().clone());
                            return Poll::Pending;
                        }
                    }
                    let h = this.buffered();
                    let len = u32::from_be_bytes([h[2], h[3], h[4], h[5]]) as usize;
                    if len > MAX_FRAME_LEN as usize {
                        return Poll::Ready(Err(invalid("a payload beside TLS over the frame limit")));
                    }
                    let align = if h[1] & ALIGNED != 0 { BLOCK } else { 1 };
                    this.consume(UNIT_HEADER);
                    // The capacity never grows (reads stop at `len`), so the start stays put.
                    let mut buf: Vec<u8> = Vec::with_capacity(len + align - 1);
                    let start = buf.as_ptr().align_offset(align);
                    buf.resize(start, 0);
                    this.reading = Reading::Unit { buf, start, len };
                }
                Reading::Unit { buf, start, len } => {
                    let want = *start + *len - buf.len();
                    if want > 0 {
                        let from_buffer = want.min(this.inbuf.len() - this.head);
                        if from_buffer > 0 {
                            buf.extend_from_slice(&this.inbuf[this.head..this.head + from_buffer]);
                            this.consume(from_buffer);
                            continue;
                        }
                        // Straight from the stream into the payload: no copy on the way.
                        let got =
                            ready!(tokio_util::io::poll_read_buf(Pin::new(&mut this.io), cx, &mut buf.limit(want)))?;
                        if got == 0 {
                            return Poll::Ready(Err(io::ErrorKind::UnexpectedEof.into()));
                        }
                        continue;
                    }
                    let (buf, start) = (std::mem::take(buf), *start);
                    let payload = match start {
                        0 => Bytes::from(buf),
                        _ => Bytes::from(buf).slice(start..),
                    };
                    this.beside.shared().slot = Some(payload);
                    this.reading = Reading::Boundary;
                }
            }
        }
    }
}

impl<T: AsyncWrite + Unpin> Wire<T> {
    /// Writes the queued units out.
    fn poll_units(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        loop {
            let (first, second) = {
                let s = self.beside.shared();
                match s.out.front() {
                    None => return Poll::Ready(Ok(())),
                    Some(f) => (f.clone(), s.out.get(1).cloned().unwrap_or_default()),
                }
            };
            let slices = [io::IoSlice::new(&first), io::IoSlice::new(&second)];
            let mut n = ready!(Pin::new(&mut self.io).poll_write_vectored(cx, &slices))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            let mut s = self.beside.shared();
            while n > 0 {
                let front = s.out.front_mut().expect("written from it");
                let k = n.min(front.len());
                front.advance(k);
                n -= k;
                if front.is_empty() {
                    s.out.pop_front();
                }
            }
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Wire<T> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        ready!(this.poll_units(cx))?;
        Pin::new(&mut this.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        ready!(this.poll_units(cx))?;
        Pin::new(&mut this.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_units(cx))?;
        Pin::new(&mut this.io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_units(cx))?;
        Pin::new(&mut this.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn records_pass_through_whole_and_a_unit_between_them_waits_for_its_frame() {
        let (a, b) = tokio::io::duplex(1 << 10);
        let (mut tx, sent) = Wire::new(a);
        let (mut rx, got) = Wire::new(b);
        let record = |body: &[u8]| [&[23u8, 3, 3][..], &(body.len() as u16).to_be_bytes()[..], body].concat();
        let payload = Bytes::from((0..100_000u32).map(|i| (i % 251) as u8).collect::<Vec<u8>>());
        sent.enable();
        got.enable();
        let writer = tokio::spawn(async move {
            tx.write_all(&record(b"before")).await.unwrap();
            tx.flush().await.unwrap();
            sent.send(payload.clone(), true);
            tx.write_all(&record(b"after")).await.unwrap();
            tx.shutdown().await.unwrap();
            payload
        });
        let mut first = vec![0u8; 11];
        rx.read_exact(&mut first).await.unwrap();
        assert_eq!(first, record(b"before"));
        assert!(got.take().is_none(), "the unit is not read before the reader gets past it");
        let mut second = Vec::new();
        rx.read_to_end(&mut second).await.unwrap();
        assert_eq!(second, record(b"after"), "records come whole, the unit left out");
        let payload = writer.await.unwrap();
        let unit = got.take().expect("the unit's payload");
        assert_eq!(unit, payload);
        assert_eq!(unit.as_ptr().align_offset(BLOCK), 0, "an aligned unit starts on a block");
    }

    #[tokio::test]
    async fn a_unit_before_the_hello_is_refused() {
        let (a, b) = tokio::io::duplex(1 << 10);
        let (mut tx, sent) = Wire::new(a);
        let (mut rx, _got) = Wire::new(b);
        sent.send(Bytes::from_static(b"too early"), false);
        tx.flush().await.unwrap();
        let err = rx.read(&mut [0u8; 16]).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    }

    #[tokio::test]
    async fn a_second_unit_waits_until_the_first_is_taken() {
        let (a, b) = tokio::io::duplex(1 << 16);
        let (mut tx, sent) = Wire::new(a);
        let (mut rx, got) = Wire::new(b);
        sent.enable();
        got.enable();
        sent.send(Bytes::from_static(b"one"), false);
        sent.send(Bytes::from_static(b"two"), false);
        tx.write_all(&[23, 3, 3, 0, 1, 7]).await.unwrap();
        tx.flush().await.unwrap();
        let mut byte = [0u8; 6];
        let read = tokio::spawn(async move {
            rx.read_exact(&mut byte).await.unwrap();
            byte
        });
        // The reader takes the first unit, then parks on the second: nothing else to read.
        let one = loop {
            if let Some(one) = got.take() {
                break one;
            }
            tokio::task::yield_now().await;
        };
        assert_eq!(one, &b"one"[..]);
        let byte = read.await.unwrap();
        assert_eq!(byte, [23, 3, 3, 0, 1, 7]);
        assert_eq!(got.take().as_deref(), Some(&b"two"[..]));
    }

    /// A unit longer than any frame may be closes the connection before anything is
    /// allocated for it; one cut short by the end of the stream is an error, not a payload.
    #[tokio::test]
    async fn a_unit_over_the_frame_limit_or_cut_short_is_refused() {
        for (len, sent) in [(MAX_FRAME_LEN + 1, 0usize), (1000, 10)] {
            let (mut a, b) = tokio::io::duplex(1 << 12);
            let (mut rx, got) = Wire::new(b);
            got.enable();
            let mut unit = vec![UNIT, 0];
            unit.extend_from_slice(&len.to_be_bytes());
            unit.extend(std::iter::repeat_n(9u8, sent));
            a.write_all(&unit).await.unwrap();
            drop(a);
            let err = rx.read(&mut [0u8; 16]).await.unwrap_err();
            let want = if sent == 0 { io::ErrorKind::InvalidData } else { io::ErrorKind::UnexpectedEof };
            assert_eq!(err.kind(), want, "unit of {len} bytes, {sent} sent: {err}");
            assert!(got.take().is_none());
        }
    }
}
