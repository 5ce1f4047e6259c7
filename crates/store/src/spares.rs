//! Spare files: empty files in the store's `tmp/`, made ahead of the puts that write into
//! them, and deleted chunk files kept for the same use.
//!
//! Why: every put writes a new file, and allocating an inode is not free. On ext4 without a
//! journal (this project's test VM) it was the largest part of a put: the allocator skips
//! every inode freed in the last minutes, reading its inode block to see when it was freed,
//! so a store that has just collected garbage paid about 1 ms of CPU per new chunk file
//! (a peer serving fsyncs on a mount spent half its CPU there). Elsewhere it is a few tens
//! of microseconds, still paid while the writer waits for its acknowledgement.
//!
//! So a put takes a spare when there is one; a deleted chunk file becomes a spare (renamed,
//! then emptied) rather than being unlinked, which also stops the pile of freed inodes from
//! growing; and [`Spares::make`] creates more when the store has been quiet for a moment
//! (the peer's `spares` worker), as many as the puts of the last minute or two, at most
//! [`MAX_SPARES`]. A store nobody writes to keeps none beyond what deletions left. Reads
//! keep the store busy too: making spares while a download is served cost that download's
//! peers twice their CPU (after many files were deleted, each new inode is the ~1 ms above).
//! While puts keep arriving, a [`RESERVE`] is still made beside them: the same inodes a put
//! would allocate itself, but not while its writer waits (an fsync on a mount waited about
//! 0.3 ms of its ~1 ms pack upload for the temp file to be created).
//!
//! A spare's name is durable before a put relies on it: [`Spares::make`] fsyncs `tmp/` after
//! each batch it creates, and a recycled file waits (unnamed, [`Spare::named`] false) until
//! the next batch's fsync covers it. A put into a named spare is acknowledged once its data
//! is fdatasynced and renamed into place, without fsyncing the chunk's directory (one flush
//! of the disk fewer per put, about an eighth of a small put's time on this VM): should the
//! rename not survive a crash, the bytes are still under the spare's durable name, and
//! [`Spares::open`] hands every spare holding bytes to the store, which puts it back under
//! the hash of what it holds. A crash in the middle of a put leaves a spare with part of a
//! chunk: that is stored under its own hash too, which no file refers to, and the tracker
//! collects it as an orphan. A recycled file is emptied under a `dead.N` name before it
//! becomes `spare.N`, so a crash never turns a deleted chunk into a spare with bytes;
//! [`Spares::open`] removes `dead.N` files.

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// At most this many spare files per store (empty inodes: no blocks).
pub const MAX_SPARES: usize = 1024;
/// Beyond the [`RESERVE`], spares are made only after this long without a put or a read,
/// so making them never competes with the puts they are for, nor with serving.
pub const QUIET: Duration = Duration::from_millis(500);
/// Spares kept ready while puts arrive (when the recent puts want that many).
pub const RESERVE: usize = 16;
/// How soon the worker looks again while puts arrive: a reserve lasts a busy store some
/// tens of milliseconds.
pub const REFILL: Duration = Duration::from_millis(20);
/// Demand is counted per window; the larger of this window's and the last one's puts is
/// the number of spares kept ready.
const WINDOW: Duration = Duration::from_secs(60);
const PREFIX: &str = "spare.";
const DEAD_PREFIX: &str = "dead.";

pub struct Spares {
    dir: PathBuf,
    state: Mutex<State>,
}

/// A spare handed to a put.
pub struct Spare {
    pub path: PathBuf,
    /// Whether its name is durable (see the module's notes): a put into it need not fsync
    /// the directory it is renamed into.
    pub named: bool,
}

struct State {
    /// Spares whose names are durable.
    ready: Vec<PathBuf>,
    /// Recycled files, emptied, whose names the next fsync of `tmp/` makes durable.
    unnamed: Vec<PathBuf>,
    /// The number the next spare file is named by.
    next: u64,
    window_start: Instant,
    puts_this_window: usize,
    puts_last_window: usize,
    /// The last put or read.
    last_busy: Option<Instant>,
}

impl State {
    fn roll(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.window_start);
        if elapsed >= WINDOW {
            self.puts_last_window = if elapsed >= 2 * WINDOW { 0 } else { self.puts_this_window };
            self.puts_this_window = 0;
            self.window_start = now;
        }
    }

    fn target(&self) -> usize {
        self.puts_this_window.max(self.puts_last_window).min(MAX_SPARES)
    }

    fn name(&mut self, dir: &Path) -> PathBuf {
        self.next += 1;
        dir.join(format!("{PREFIX}{}", self.next))
    }

    fn count(&self) -> usize {
        self.ready.len() + self.unnamed.len()
    }
}

fn is_spare(name: &str) -> bool {
    name.strip_prefix(PREFIX).is_some_and(|n| n.parse::<u64>().is_ok())
}

fn fsync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

impl Spares {
    /// Takes stock of `dir` (the store's `tmp/`) as the store opens: empty spares are kept,
    /// spares holding bytes are returned for the store to put back in place (a put whose
    /// rename a crash undid), every other file there is a crash's leftover and is removed.
    pub fn open(dir: &Path) -> std::io::Result<(Spares, Vec<PathBuf>)> {
        let (mut ready, mut next, mut filled) = (Vec::new(), 0, Vec::new());
        for e in fs::read_dir(dir)? {
            let e = e?;
            let name = e.file_name();
            let Some(n) = name.to_str().filter(|n| is_spare(n)) else {
                let _ = fs::remove_file(e.path());
                continue;
            };
            if !e.file_type()?.is_file() {
                continue;
            }
            next = next.max(n[PREFIX.len()..].parse::<u64>().unwrap_or(0));
            let path = e.path();
            if e.metadata()?.len() > 0 {
                filled.push(path);
            } else {
                ready.push(path);
            }
        }
        // The names found are durable from here on, whatever a crash left unsynced.
        fsync_dir(dir)?;
        let state = State {
            ready,
            unnamed: Vec::new(),
            next,
            window_start: Instant::now(),
            puts_this_window: 0,
            puts_last_window: 0,
            last_busy: None,
        };
        Ok((Spares { dir: dir.to_path_buf(), state: Mutex::new(state) }, filled))
    }

    /// A spare for a put to write into, if one is ready (a named one first). Counted as a
    /// put either way.
    pub fn take(&self) -> Option<Spare> {
        let mut st = self.state.lock().expect("spares lock");
        let now = Instant::now();
        st.roll(now);
        st.puts_this_window += 1;
        st.last_busy = Some(now);
        match st.ready.pop() {
            Some(path) => Some(Spare { path, named: true }),
            None => st.unnamed.pop().map(|path| Spare { path, named: false }),
        }
    }

    /// A read was served: no spares are made for [`QUIET`].
    pub fn busy(&self) {
        self.state.lock().expect("spares lock").last_busy = Some(Instant::now());
    }

    /// Keeps the file at `path` (a chunk file being deleted) as a spare: true when it was
    /// moved and emptied, false when there are enough spares (the caller deletes it).
    pub fn recycle(&self, path: &Path) -> std::io::Result<bool> {
        let spare = {
            let mut st = self.state.lock().expect("spares lock");
            if st.count() >= MAX_SPARES {
                return Ok(false);
            }
            st.name(&self.dir)
        };
        let number = &spare.file_name().and_then(|n| n.to_str()).unwrap_or_default()[PREFIX.len()..];
        let dead = self.dir.join(format!("{DEAD_PREFIX}{number}"));
        // Emptied under another name first: a crash in between leaves a `dead.N` (removed
        // when the store opens), never an empty chunk file nor a spare with a chunk's bytes.
        fs::rename(path, &dead)?;
        File::options().write(true).open(&dead)?.set_len(0)?;
        fs::rename(&dead, &spare)?;
        self.state.lock().expect("spares lock").unnamed.push(spare);
        Ok(true)
    }

    /// How many spares to make now: what the recent puts want beyond those ready, at most
    /// up to the [`RESERVE`] while puts or reads are arriving (within [`QUIET`]).
    pub fn wanted(&self) -> usize {
        let mut st = self.state.lock().expect("spares lock");
        let now = Instant::now();
        st.roll(now);
        let busy = st.last_busy.is_some_and(|t| now.saturating_duration_since(t) < QUIET);
        let want = if busy { st.target().min(RESERVE) } else { st.target() };
        want.saturating_sub(st.count())
    }

    /// Recycled spares waiting for [`Spares::make`] to make their names durable.
    pub fn unnamed(&self) -> usize {
        self.state.lock().expect("spares lock").unnamed.len()
    }

    /// How soon to look again for spares to make: soon while the store is busy and has had
    /// puts this minute (the reserve runs out), after [`QUIET`] otherwise.
    pub fn recheck(&self) -> Duration {
        let st = self.state.lock().expect("spares lock");
        let putting = st.puts_this_window > 0 && st.last_busy.is_some_and(|t| t.elapsed() < QUIET);
        if putting {
            REFILL
        } else {
            QUIET
        }
    }

    /// Creates up to `n` spares, then fsyncs `tmp/` once, which names them and the recycled
    /// ones waiting (see the module's notes); returns how many were made.
    pub fn make(&self, n: usize) -> std::io::Result<usize> {
        let mut made = Vec::new();
        for _ in 0..n {
            let path = {
                let mut st = self.state.lock().expect("spares lock");
                if st.count() + made.len() >= MAX_SPARES {
                    break;
                }
                st.name(&self.dir)
            };
            File::create(&path)?;
            made.push(path);
        }
        // Taken out while the fsync runs: a put meanwhile creates its own file.
        let recycled = std::mem::take(&mut self.state.lock().expect("spares lock").unnamed);
        if made.is_empty() && recycled.is_empty() {
            return Ok(0);
        }
        let synced = fsync_dir(&self.dir);
        let mut st = self.state.lock().expect("spares lock");
        match synced {
            Ok(()) => {
                st.ready.extend(recycled);
                st.ready.extend(made.iter().cloned());
                Ok(made.len())
            }
            Err(e) => {
                st.unnamed.extend(recycled);
                st.unnamed.extend(made);
                Err(e)
            }
        }
    }

    /// Spares a put can take, named or not.
    pub fn ready(&self) -> usize {
        self.state.lock().expect("spares lock").count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spares_follow_the_recent_puts_and_beyond_a_reserve_are_made_only_when_puts_and_reads_pause() {
        let dir = tempfile::tempdir().unwrap();
        let (s, _) = Spares::open(dir.path()).unwrap();
        assert_eq!(s.wanted(), 0, "a store nobody wrote to wants none");
        assert_eq!(s.recheck(), QUIET);
        for _ in 0..RESERVE + 5 {
            assert!(s.take().is_none());
        }
        assert_eq!(s.wanted(), RESERVE, "puts just arrived: only the reserve is made meanwhile");
        assert_eq!(s.recheck(), REFILL, "and looked after soon");
        s.state.lock().unwrap().last_busy = Some(Instant::now() - QUIET);
        assert_eq!(s.wanted(), RESERVE + 5, "as many as the puts of the last minute");
        assert_eq!(s.recheck(), QUIET);
        assert_eq!(s.make(RESERVE).unwrap(), RESERVE);
        s.busy();
        assert_eq!(s.wanted(), 0, "a read was just served: nothing beyond the reserve is made meanwhile");
        s.state.lock().unwrap().last_busy = Some(Instant::now() - QUIET);
        assert_eq!(s.wanted(), 5, "quiet again");
        assert_eq!(s.make(5).unwrap(), 5);
        assert_eq!(s.wanted(), 0);
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), RESERVE + 5);
        let taken = s.take().unwrap();
        assert!(taken.named, "made and fsynced: its name is durable");
        assert!(taken.path.exists() && fs::metadata(&taken.path).unwrap().len() == 0);
        // Two windows without puts: the demand is gone.
        s.state.lock().unwrap().window_start = Instant::now() - 2 * WINDOW;
        s.state.lock().unwrap().last_busy = Some(Instant::now() - QUIET);
        assert_eq!(s.wanted(), 0);
    }

    #[test]
    fn a_recycled_file_is_emptied_and_named_by_the_next_batch_and_spares_holding_bytes_are_handed_back_on_open() {
        let dir = tempfile::tempdir().unwrap();
        let tmp = dir.path().join("tmp");
        fs::create_dir(&tmp).unwrap();
        let (s, filled) = Spares::open(&tmp).unwrap();
        assert!(filled.is_empty());
        let chunk = dir.path().join("chunk");
        fs::write(&chunk, vec![7u8; 10_000]).unwrap();
        assert!(s.recycle(&chunk).unwrap());
        assert!(!chunk.exists());
        assert_eq!(s.unnamed(), 1, "its name is not durable yet");
        assert_eq!(s.make(0).unwrap(), 0, "a batch of none still fsyncs for the recycled one");
        assert_eq!(s.unnamed(), 0);
        let spare = s.take().unwrap();
        assert!(spare.named);
        assert_eq!(fs::metadata(&spare.path).unwrap().len(), 0, "a recycled chunk file keeps no bytes");
        // Taken before a batch named it: a put into it must fsync the chunk's directory.
        fs::write(&chunk, b"another").unwrap();
        assert!(s.recycle(&chunk).unwrap());
        assert!(!s.take().unwrap().named);
        // A crash: a put's bytes left in a spare (its rename lost), a recycling cut short,
        // some other temp file.
        fs::write(&spare.path, b"a chunk").unwrap();
        fs::write(tmp.join("dead.77"), vec![7u8; 100]).unwrap();
        fs::write(tmp.join("x.123"), b"a crash's temp file").unwrap();
        let (s, filled) = Spares::open(&tmp).unwrap();
        assert_eq!(filled, vec![spare.path.clone()], "the spare holding bytes goes back to the store");
        assert!(!tmp.join("dead.77").exists() && !tmp.join("x.123").exists());
        assert_eq!(s.ready(), 1, "the empty spare is kept: {:?}", fs::read_dir(&tmp).unwrap().count());
        let next = s.make(1).map(|_| s.take().unwrap()).unwrap();
        assert!(next.path != spare.path, "new spares are named past the ones found");
    }
}
