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
//! A spare holds nothing: a crash leaves at most a spare that was not yet emptied, which
//! [`Spares::open`] empties.

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

pub struct Spares {
    dir: PathBuf,
    state: Mutex<State>,
}

struct State {
    ready: Vec<PathBuf>,
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
}

fn is_spare(name: &str) -> bool {
    name.strip_prefix(PREFIX).is_some_and(|n| n.parse::<u64>().is_ok())
}

impl Spares {
    /// Takes stock of `dir` (the store's `tmp/`) as the store opens: spares are kept (each
    /// emptied if a crash left it with bytes in it), every other file there is a crash's
    /// leftover and is removed.
    pub fn open(dir: &Path) -> std::io::Result<Spares> {
        let (mut ready, mut next) = (Vec::new(), 0);
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
                File::options().write(true).open(&path)?.set_len(0)?;
            }
            ready.push(path);
        }
        let state = State {
            ready,
            next,
            window_start: Instant::now(),
            puts_this_window: 0,
            puts_last_window: 0,
            last_busy: None,
        };
        Ok(Spares { dir: dir.to_path_buf(), state: Mutex::new(state) })
    }

    /// A spare for a put to write into, if one is ready. Counted as a put either way.
    pub fn take(&self) -> Option<PathBuf> {
        let mut st = self.state.lock().expect("spares lock");
        let now = Instant::now();
        st.roll(now);
        st.puts_this_window += 1;
        st.last_busy = Some(now);
        st.ready.pop()
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
            if st.ready.len() >= MAX_SPARES {
                return Ok(false);
            }
            st.name(&self.dir)
        };
        fs::rename(path, &spare)?;
        // Emptied after the rename: a crash in between leaves a spare with bytes in it
        // (emptied when the store opens), never an empty chunk file.
        File::options().write(true).open(&spare)?.set_len(0)?;
        self.state.lock().expect("spares lock").ready.push(spare);
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
        want.saturating_sub(st.ready.len())
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

    /// Creates up to `n` spares; returns how many were made.
    pub fn make(&self, n: usize) -> std::io::Result<usize> {
        for made in 0..n {
            let path = {
                let mut st = self.state.lock().expect("spares lock");
                if st.ready.len() >= MAX_SPARES {
                    return Ok(made);
                }
                st.name(&self.dir)
            };
            File::create(&path)?;
            self.state.lock().expect("spares lock").ready.push(path);
        }
        Ok(n)
    }

    pub fn ready(&self) -> usize {
        self.state.lock().expect("spares lock").ready.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spares_follow_the_recent_puts_and_beyond_a_reserve_are_made_only_when_puts_and_reads_pause() {
        let dir = tempfile::tempdir().unwrap();
        let s = Spares::open(dir.path()).unwrap();
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
        assert!(taken.exists() && fs::metadata(&taken).unwrap().len() == 0);
        // Two windows without puts: the demand is gone.
        s.state.lock().unwrap().window_start = Instant::now() - 2 * WINDOW;
        s.state.lock().unwrap().last_busy = Some(Instant::now() - QUIET);
        assert_eq!(s.wanted(), 0);
    }

    #[test]
    fn a_recycled_file_is_emptied_and_a_crash_left_spare_is_emptied_on_open() {
        let dir = tempfile::tempdir().unwrap();
        let tmp = dir.path().join("tmp");
        fs::create_dir(&tmp).unwrap();
        let s = Spares::open(&tmp).unwrap();
        let chunk = dir.path().join("chunk");
        fs::write(&chunk, vec![7u8; 10_000]).unwrap();
        assert!(s.recycle(&chunk).unwrap());
        assert!(!chunk.exists());
        let spare = s.take().unwrap();
        assert_eq!(fs::metadata(&spare).unwrap().len(), 0, "a recycled chunk file keeps no bytes");
        // A crash between the rename and the truncation.
        fs::write(&spare, b"left over").unwrap();
        fs::write(tmp.join("x.123"), b"a crash's temp file").unwrap();
        let s = Spares::open(&tmp).unwrap();
        assert_eq!(s.ready(), 1, "only spare.N files are spares");
        assert_eq!(fs::metadata(&spare).unwrap().len(), 0);
        let next = s.make(1).map(|_| s.take().unwrap()).unwrap();
        assert_ne!(next, spare, "new spares are named past the ones found");
    }
}
