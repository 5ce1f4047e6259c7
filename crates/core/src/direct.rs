//! Chunk-sized file I/O that bypasses the page cache (O_DIRECT).
//!
//! Used where whole chunks move between the network and a file that nobody reads back soon
//! through this machine's cache: a storage peer's chunk files (written once, fsynced, read
//! back whole and rarely; readers cache what they read) and a `get`'s output file. Copying
//! those bytes through the page cache cost a storage peer half its CPU in a put, and a
//! download client more than its decryption and hashing together (profiles in
//! ARCHITECTURE.md, "Where the CPU goes"); on a VM it also costs wildly different amounts
//! from one run to the next. Direct I/O moves the bytes between the disk and one reused,
//! aligned buffer per thread instead; the copy between that buffer and the caller's is a
//! memcpy between hot buffers, and a write from bytes already block-aligned (a chunk a peer
//! received: the frame reader puts big request payloads on a block boundary) has none.
//!
//! File systems that refuse O_DIRECT (EINVAL) get ordinary buffered I/O. A part shorter than
//! a block (a file's tail) cannot be written direct: it goes through the page cache.

use std::cell::RefCell;
use std::fs::File;
use std::io::{self, Read, Seek};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;
use std::sync::Mutex;

use bytes::Bytes;
use rustix::fs::OFlags;

/// Alignment of direct I/O buffers, offsets and lengths (the largest logical block size in
/// common use).
const ALIGN: usize = 4096;
/// Bytes per direct read or write: the size of each thread's buffer.
const PIECE: usize = 1 << 20;
/// Files smaller than this are read and written buffered: copying a few KiB costs nothing,
/// while a direct write waits for the disk before the fsync that follows it does.
const SMALL: usize = 64 << 10;

/// `PIECE` bytes (or `n`) aligned to `ALIGN`: the aligned part of a slightly larger vector
/// (no unsafe allocation needed).
struct Aligned(Vec<u8>);

impl Aligned {
    fn new() -> Aligned {
        Aligned::of(PIECE)
    }

    fn of(n: usize) -> Aligned {
        Aligned(vec![0u8; n + ALIGN])
    }

    fn bytes(&mut self) -> &mut [u8] {
        let start = self.0.as_ptr().align_offset(ALIGN);
        let n = self.0.len() - ALIGN;
        &mut self.0[start..start + n]
    }
}

thread_local! {
    /// Reused by every direct I/O on this (blocking) thread, so its pages are touched once;
    /// freed when the thread ends.
    static BUFFER: RefCell<Option<Aligned>> = const { RefCell::new(None) };
}

fn with_buffer<R>(f: impl FnOnce(&mut [u8]) -> R) -> R {
    BUFFER.with(|b| {
        let mut b = b.borrow_mut();
        f(b.get_or_insert_with(Aligned::new).bytes())
    })
}

/// Buffers of [`read_all_shared`] whose bytes have been dropped, kept for the next read: a
/// fresh buffer costs a page fault per 4 KiB as the disk fills it, a kept one nothing.
static KEPT: Mutex<Vec<Aligned>> = Mutex::new(Vec::new());
/// At most this many buffers are kept (8 MiB): about as many as a peer serving a download
/// has chunks on their way out at once.
const KEPT_MAX: usize = 8;
/// Each holds a piece and a block more: a sealed chunk of a piece's plaintext (nonce and
/// tag added) still fits.
const SHARED: usize = PIECE + ALIGN;

/// A file read into an [`Aligned`] buffer, as the owner of the [`Bytes`] that
/// [`read_all_shared`] returns: the buffer goes back to [`KEPT`] when they are dropped.
struct Shared {
    buf: Option<Aligned>,
    len: usize,
}

impl AsRef<[u8]> for Shared {
    fn as_ref(&self) -> &[u8] {
        let buf = self.buf.as_ref().expect("taken only in drop");
        let start = buf.0.as_ptr().align_offset(ALIGN);
        &buf.0[start..start + self.len]
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        let mut kept = KEPT.lock().unwrap_or_else(|p| p.into_inner());
        if kept.len() < KEPT_MAX {
            kept.extend(self.buf.take());
        }
    }
}

fn set_direct(f: &File, on: bool) -> io::Result<bool> {
    let flags = rustix::fs::fcntl_getfl(f)?;
    let want = if on { flags | OFlags::DIRECT } else { flags - OFlags::DIRECT };
    match rustix::fs::fcntl_setfl(f, want) {
        Ok(()) => Ok(true),
        Err(rustix::io::Errno::INVAL) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

fn refused(e: &io::Error) -> bool {
    e.raw_os_error() == Some(rustix::io::Errno::INVAL.raw_os_error())
}

/// Opens `path` (an existing file) for direct writes, if its file system allows them.
pub fn open_for_direct_writes(path: &Path) -> Option<File> {
    std::fs::OpenOptions::new().write(true).custom_flags(OFlags::DIRECT.bits() as i32).open(path).ok()
}

/// Gives the new file `f` its `len` bytes on disk before chunks are written into it, so a
/// full disk fails the download at once rather than part-way, and direct writes land in
/// allocated (unwritten) blocks: ext4 then lets several run at once under its shared inode
/// lock, where writes that allocate take it exclusively and queue behind one another. A
/// file system without fallocate only gets its length set.
pub fn preallocate(f: &File, len: u64) -> io::Result<()> {
    match rustix::fs::fallocate(f, rustix::fs::FallocateFlags::empty(), 0, len) {
        Ok(()) => Ok(()),
        Err(e) if e == rustix::io::Errno::NOSPC => Err(e.into()),
        Err(_) => f.set_len(len),
    }
}

/// Writes the whole blocks of `bytes` at the aligned `offset` through `d` (a descriptor in
/// O_DIRECT mode), a piece at a time through this thread's buffer; returns how many bytes it
/// wrote. A refusal part-way (a block size above ALIGN) stops it early, not with an error:
/// the caller writes the rest buffered.
fn write_blocks(d: &File, bytes: &[u8], offset: u64) -> io::Result<usize> {
    let direct_len = bytes.len() / ALIGN * ALIGN;
    let mut done = 0;
    // Bytes already in aligned memory (a chunk a peer received: see swarmfs_net's frame
    // reader) go to the disk from where they are.
    if bytes.as_ptr().align_offset(ALIGN) == 0 {
        return match d.write_all_at(&bytes[..direct_len], offset) {
            Err(e) if !refused(&e) => Err(e),
            Err(_) => Ok(0),
            Ok(()) => Ok(direct_len),
        };
    }
    let r = with_buffer(|buf| {
        while done < direct_len {
            let n = (direct_len - done).min(PIECE);
            buf[..n].copy_from_slice(&bytes[done..done + n]);
            d.write_all_at(&buf[..n], offset + done as u64)?;
            done += n;
        }
        Ok::<_, io::Error>(())
    });
    match r {
        Err(e) if !refused(&e) => Err(e),
        _ => Ok(done),
    }
}

/// Writes `bytes` at `offset`: the whole blocks through `direct` (a descriptor of the same
/// file opened with [`open_for_direct_writes`]) when the offset is block-aligned and there
/// are at least 64 KiB, the rest (a tail, or everything) through `buffered`.
pub fn write_at(direct: Option<&File>, buffered: &File, bytes: &[u8], offset: u64) -> io::Result<()> {
    let done = match direct.filter(|_| offset.is_multiple_of(ALIGN as u64) && bytes.len() >= SMALL) {
        Some(d) => write_blocks(d, bytes, offset)?,
        None => 0,
    };
    buffered.write_all_at(&bytes[done..], offset + done as u64)
}

/// Writes all of `bytes` to the new, empty file `f` from offset 0 (O_DIRECT is switched on
/// for the whole blocks and off again: `f` must not be shared meanwhile).
pub fn write_all(f: &File, bytes: &[u8]) -> io::Result<()> {
    let mut done = 0;
    if bytes.len() >= SMALL && set_direct(f, true)? {
        let r = write_blocks(f, bytes, 0);
        set_direct(f, false)?;
        done = r?;
    }
    f.write_all_at(&bytes[done..], done as u64)
}

/// Reads the whole file `f` of `size` bytes.
pub fn read_all(f: &mut File, size: usize) -> io::Result<Vec<u8>> {
    let mut out = Vec::with_capacity(size);
    if size >= SMALL && set_direct(f, true)? {
        let r = with_buffer(|buf| {
            // Whole pieces at aligned offsets; a short read ends the file (or, unaligned,
            // leaves the rest to the buffered read below).
            loop {
                let n = f.read_at(buf, out.len() as u64)?;
                out.extend_from_slice(&buf[..n]);
                if n < PIECE || out.len() >= size {
                    return Ok::<_, io::Error>(());
                }
            }
        });
        set_direct(f, false)?;
        match r {
            Ok(()) => {}
            Err(e) if refused(&e) => {}
            Err(e) => return Err(e),
        }
    }
    // The rest (all of it without direct I/O), to the end whatever `size` said.
    f.seek(io::SeekFrom::Start(out.len() as u64))?;
    f.read_to_end(&mut out)?;
    Ok(out)
}

/// Reads the whole file `f` of `size` bytes, as [`read_all`] does, but a file of a chunk's
/// size or less that can be read direct is read into a buffer the returned bytes point into, not
/// copied out of one: on a peer serving a download that copy was 6 % of its CPU.
pub fn read_all_shared(f: &mut File, size: usize) -> io::Result<Bytes> {
    if !(SMALL..SHARED).contains(&size) || !set_direct(f, true)? {
        return read_all(f, size).map(Bytes::from);
    }
    let kept = KEPT.lock().unwrap_or_else(|p| p.into_inner()).pop();
    let mut buf = kept.unwrap_or_else(|| Aligned::of(SHARED));
    let r = f.read_at(buf.bytes(), 0);
    set_direct(f, false)?;
    match r {
        // A short read is the end of the file.
        Ok(n) if n < SHARED => Ok(Bytes::from_owner(Shared { buf: Some(buf), len: n })),
        // Longer than `size` said (it changed meanwhile), or refused part-way: the general path.
        Ok(_) => read_all(f, size).map(Bytes::from),
        Err(e) if refused(&e) => read_all(f, size).map(Bytes::from),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn direct_writes_and_reads_round_trip_every_length_around_blocks_and_pieces() {
        let dir = tempfile::tempdir().unwrap();
        let around_shared = [SHARED - 1, SHARED, SHARED + 1];
        for len in [0, 1, ALIGN + 16, SMALL - 1, SMALL, SMALL + 16, PIECE, PIECE + 16, 3 * PIECE + ALIGN + 7]
            .into_iter()
            .chain(around_shared)
        {
            let data: Vec<u8> = (0..len).map(|i| (i * 7 % 251) as u8).collect();
            let path = dir.path().join(format!("f{len}"));
            let f = File::create(&path).unwrap();
            write_all(&f, &data).unwrap();
            f.sync_data().unwrap();
            assert_eq!(std::fs::read(&path).unwrap(), data, "written, length {len}");
            // The same bytes from block-aligned memory (no copy on the way).
            let mut aligned: Vec<u8> = Vec::with_capacity(len + ALIGN);
            let start = aligned.as_ptr().align_offset(ALIGN);
            aligned.resize(start, 0);
            aligned.extend_from_slice(&data);
            let f = File::create(&path).unwrap();
            write_all(&f, &aligned[start..]).unwrap();
            assert_eq!(std::fs::read(&path).unwrap(), data, "written from aligned memory, length {len}");
            let mut f = File::open(&path).unwrap();
            assert_eq!(read_all(&mut f, len).unwrap(), data, "read back, length {len}");
            let shared = read_all_shared(&mut File::open(&path).unwrap(), len).unwrap();
            assert_eq!(shared, data, "read back into a shared buffer, length {len}");
            // A size hint that is wrong still reads the file to its end.
            let mut f = File::open(&path).unwrap();
            assert_eq!(read_all(&mut f, len / 2).unwrap(), data, "short hint, length {len}");
            let shared = read_all_shared(&mut File::open(&path).unwrap(), len / 2).unwrap();
            assert_eq!(shared, data, "short hint, shared buffer, length {len}");
        }
    }

    #[test]
    fn shared_reads_outlive_their_file_and_keep_a_bounded_number_of_buffers() {
        let dir = tempfile::tempdir().unwrap();
        // A sealed chunk: a piece of plaintext, a nonce and a tag.
        let data: Vec<u8> = (0..PIECE + 28).map(|i| (i * 13 % 251) as u8).collect();
        let path = dir.path().join("chunk");
        write_all(&File::create(&path).unwrap(), &data).unwrap();
        let reads: Vec<Bytes> =
            (0..KEPT_MAX + 4).map(|_| read_all_shared(&mut File::open(&path).unwrap(), data.len()).unwrap()).collect();
        std::fs::remove_file(&path).unwrap();
        assert!(reads.iter().all(|r| *r == data), "every read holds the file's bytes after it is gone");
        drop(reads);
        let kept = KEPT.lock().unwrap().len();
        assert!(kept <= KEPT_MAX, "{kept} buffers kept, at most {KEPT_MAX}");
    }

    #[test]
    fn positioned_writes_fill_a_file_in_any_order_aligned_or_not() {
        let dir = tempfile::tempdir().unwrap();
        for piece in [PIECE, 17 * ALIGN + 5, 1000] {
            let total = 5 * piece + 77;
            let data: Vec<u8> = (0..total).map(|i| (i * 13 % 251) as u8).collect();
            let path = dir.path().join(format!("p{piece}"));
            let buffered = std::fs::OpenOptions::new().write(true).create(true).truncate(true).open(&path).unwrap();
            buffered.set_len(total as u64).unwrap();
            let direct = open_for_direct_writes(&path);
            assert!(direct.is_some(), "the test's file system takes O_DIRECT");
            for i in [3usize, 0, 5, 1, 4, 2] {
                let (start, end) = (i * piece, ((i + 1) * piece).min(total));
                write_at(direct.as_ref(), &buffered, &data[start..end], start as u64).unwrap();
            }
            drop((direct, buffered));
            assert_eq!(std::fs::read(&path).unwrap(), data, "piece {piece}");
        }
    }
}
