//! Creates answered before the tracker has the entry.
//!
//! A program writing many small files (`open(O_CREAT)`, write, close, over and over) waited
//! for four tracker or peer round trips one after another per file: the kernel's lookup of
//! the new name, the create, the chunk's put and the commit. A create without O_EXCL now
//! answers at once with the attributes it asked for, and its tracker call runs while the
//! program writes; by the time the close commits, it has landed.
//!
//! The call is held for [`HOLD`] first. A small file is written and closed in well under
//! that, and its close then makes the entry and commits the content in one call
//! (`CommitNewFile`, one transaction) instead of waiting for the create's round trip before
//! its own: the close took the create's call and the commit's one after the other, as the
//! program's loop did. A file still open when the hold is up has its call sent then, so
//! other mounts see the name within [`HOLD`] and a round trip of the open.
//!
//! Order is kept where it can be seen: whatever this mount asks of the tracker next about
//! names (a flush's commit, setattr, mkdir, unlink, rename, a listing, fsyncdir, the
//! unmount) first sends the calls held and waits for the creates in flight
//! ([`Creating::settled`]), so the tracker sees this mount's changes in the order its
//! programs made them, and a listing shows the files created before it. A close that makes
//! its own file's entry does not wait for the other files' creates: names of different
//! files were never ordered among themselves (their calls run at once), and it holds its
//! create's turn until its commit lands, so a listing or unmount still waits for it. A
//! lookup or stat of the new file needs nothing from the tracker: while it is open, its open
//! state answers. Other mounts see the file once its call lands, within [`HOLD`] and a round
//! trip of the open, and always by its close, as close-to-open promises.
//!
//! What stays as it was: an O_EXCL create (a lock file: it must fail at open if the name is
//! taken) and every create until this mount's member has had one confirmed (a member that may
//! not write learns so at open, not at close) call the tracker before answering, as do creates
//! past [`IN_FLIGHT_MAX`] in flight.
//!
//! The call carries the time the open answered with (`Request::Create`'s `time_ms`), and the
//! tracker stamps the entry with it, so every stat after the open, here or on another mount,
//! agrees with the first. (Answering with the mount's clock while the tracker used its own
//! made a new file's ctime move by a fraction of a millisecond once the entry landed, which
//! pjdfstest caught; waiting for the tracker's times instead cost a round trip at the fstat
//! most programs make right after an open.)
//!
//! A call can still fail after the open succeeded: another mount created the same name in
//! the moment between the kernel's lookup and the call (the close's commit then replaces that
//! file, as the last writer's close does), the parent was removed by another mount, or the
//! tracker was out of reach. The file's next flush (its close or an fsync), or a rename,
//! unlink or setattr of it by this mount, then creates it again first and reports what stops
//! it, so a close never claims a file the tracker does not have.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fuser::Errno;
use swarmfs_client::{Client, ClientError, NewOwner};
use swarmfs_core::Manifest;
use swarmfs_proto::{ChunkPlacement, EntryInfo, RemotePath};
use tokio::sync::{watch, OwnedRwLockReadGuard, RwLock};
use tracing::{debug, warn};

use crate::fs::errno_of;

/// Creates whose tracker call may be in flight at once; past this a create waits for its
/// call, which bounds what an unmount has to wait for.
pub(crate) const IN_FLIGHT_MAX: u32 = 64;

/// How long a create answered early holds its call for its close to make the entry with the
/// commit. Creating, writing and closing a 4 KiB file takes about a tenth of this.
pub(crate) const HOLD: Duration = Duration::from_millis(2);

/// What a create asked the tracker for: made again by the file's next flush if it failed.
#[derive(Clone, Debug)]
pub(crate) struct NewFile {
    pub path: RemotePath,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// The mtime and ctime the open answered with, which the entry takes.
    pub time_ms: i64,
}

/// A create answered early whose call has not gone yet, with its turn.
pub(crate) struct HeldCreate {
    new: NewFile,
    turn: OwnedRwLockReadGuard<()>,
}

pub(crate) struct Creating {
    /// Each call in flight holds it shared; [`Creating::settled`] takes it alone, which waits
    /// for all of them.
    order: Arc<RwLock<()>>,
    /// Calls that failed other than "already exists", by inode.
    failed: Mutex<HashMap<u64, NewFile>>,
    /// Creates whose call is held (see [`HOLD`]), by inode.
    held: Mutex<HashMap<u64, HeldCreate>>,
    /// Bumped to send every held call at once.
    hurry: watch::Sender<u64>,
    /// Set once the tracker confirmed a create of this mount.
    proven: AtomicBool,
    /// An injected fault for the tests: this many calls that make an early create's entry
    /// (its own call, or the commit that makes it) fail as if the tracker had gone away in
    /// the moment before, a window too narrow to hit otherwise.
    faults: AtomicU32,
}

/// The variable that sets [`Creating::faults`] when the mount starts.
pub(crate) const FAIL_CALLS_VAR: &str = "SWARMFS_TEST_FAIL_EARLY_CREATES";

impl Default for Creating {
    fn default() -> Self {
        Creating {
            order: Arc::new(RwLock::with_max_readers((), IN_FLIGHT_MAX)),
            failed: Mutex::new(HashMap::new()),
            held: Mutex::new(HashMap::new()),
            hurry: watch::Sender::new(0),
            proven: AtomicBool::new(false),
            faults: AtomicU32::new(std::env::var(FAIL_CALLS_VAR).ok().and_then(|v| v.parse().ok()).unwrap_or(0)),
        }
    }
}

impl Creating {
    /// A turn for a create that answers before its call lands, if this one may: not O_EXCL,
    /// this mount's creates proven, fewer than [`IN_FLIGHT_MAX`] in flight, nobody waiting
    /// in [`Creating::settled`].
    pub(crate) fn early_turn(&self, flags: i32) -> Option<OwnedRwLockReadGuard<()>> {
        if flags & libc::O_EXCL != 0 || !self.proven.load(Ordering::Relaxed) {
            return None;
        }
        self.order.clone().try_read_owned().ok()
    }

    /// The tracker confirmed a create: later ones may answer early.
    pub(crate) fn confirmed(&self) {
        self.proven.store(true, Ordering::Relaxed);
    }

    /// Makes the entry on the tracker for a create already answered (`turn` from
    /// [`Creating::early_turn`], given back when the call is done).
    pub(crate) async fn call(&self, client: &Client, ino: u64, new: NewFile, turn: OwnedRwLockReadGuard<()>) {
        let r = match self.injected_fault() {
            Some(e) => Err(e),
            None => client.create_file_at(&new.path, new.mode, new.uid, new.gid, new.time_ms).await,
        };
        match r {
            Ok(_) => {}
            // Made by another mount since the kernel's lookup: this file's close replaces it.
            Err(e) if errno_of(&e) == Errno::EEXIST => {
                debug!(path = %new.path, "created meanwhile by another mount; the close replaces it")
            }
            Err(e) => {
                warn!(path = %new.path, "create failed after its open answered ({e}); the next flush or change of it makes it again");
                self.failed.lock().expect("failed creates").insert(ino, new);
            }
        }
        drop(turn);
    }

    /// One of the injected faults, if any are left (see [`Creating::faults`]).
    fn injected_fault(&self) -> Option<ClientError> {
        let left = self.faults.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1)).is_ok();
        left.then(|| ClientError::Usage(format!("{FAIL_CALLS_VAR}: an injected failure")))
    }

    /// Holds the call of `ino`'s create answered early (`turn` from
    /// [`Creating::early_turn`]), from now until [`Creating::call_when_due`] sends it or the
    /// file's flush takes it ([`Creating::landing`]). Returns what `call_when_due` needs.
    pub(crate) fn hold(&self, ino: u64, new: NewFile, turn: OwnedRwLockReadGuard<()>) -> watch::Receiver<u64> {
        let hurry = self.hurry.subscribe();
        self.held.lock().expect("held creates").insert(ino, HeldCreate { new, turn });
        hurry
    }

    /// `ino`'s create, if still held, taken from its hold. A flush takes it only once its
    /// upload is done, so a long upload does not keep the name from other mounts.
    fn take_held(&self, ino: u64) -> Option<HeldCreate> {
        self.held.lock().expect("held creates").remove(&ino)
    }

    /// Sends `ino`'s held create after [`HOLD`], or as soon as something needs the creates
    /// settled, unless the file's flush took it meanwhile.
    pub(crate) async fn call_when_due(&self, client: &Client, ino: u64, mut hurry: watch::Receiver<u64>) {
        tokio::select! {
            _ = tokio::time::sleep(HOLD) => {}
            _ = hurry.changed() => {}
        }
        if let Some(HeldCreate { new, turn }) = self.take_held(ino) {
            self.call(client, ino, new, turn).await;
        }
    }

    /// Returns once every create answered before now has its call done, the held ones sent
    /// at once.
    pub(crate) async fn settled(&self) {
        self.hurry.send_modify(|n| *n += 1);
        drop(self.order.write().await);
    }

    /// What a flush of `ino` (now at `path`) waits for before it commits: its own create if
    /// it is still held then (the commit makes the entry), else the creates in flight
    /// ([`Creating::ensure`]).
    pub(crate) fn landing<'a>(&'a self, client: &'a Client, ino: u64, path: Option<&'a RemotePath>) -> Landing<'a> {
        Landing { creating: Some((self, client)), ino, path }
    }

    /// Whether `ino`'s create answered early failed and is not made again yet.
    pub(crate) fn failed(&self, ino: u64) -> bool {
        self.failed.lock().expect("failed creates").contains_key(&ino)
    }

    /// Before a flush of `ino` commits: waits for the creates in flight and, if this file's
    /// call failed, makes the entry now (at `path`, where the file is now), with the times
    /// its open answered with.
    pub(crate) async fn ensure(&self, client: &Client, ino: u64, path: Option<&RemotePath>) -> Result<(), ClientError> {
        self.settled().await;
        let Some(new) = self.failed.lock().expect("failed creates").remove(&ino) else {
            return Ok(());
        };
        let Some(path) = path else {
            return Ok(()); // unlinked meanwhile: nothing to commit under a name
        };
        match client.create_file_at(path, new.mode, new.uid, new.gid, new.time_ms).await {
            Ok(_) => Ok(()),
            Err(e) if errno_of(&e) == Errno::EEXIST => Ok(()),
            Err(e) => {
                self.failed.lock().expect("failed creates").insert(ino, new);
                Err(e)
            }
        }
    }
}

/// What a flush waits for before its commit (see [`Creating::landing`]).
pub(crate) struct Landing<'a> {
    /// `None`: no create to wait for (a file the last mount of this home left staged).
    creating: Option<(&'a Creating, &'a Client)>,
    ino: u64,
    path: Option<&'a RemotePath>,
}

impl<'a> Landing<'a> {
    /// Nothing to wait for (a file the last mount of this home left staged).
    pub(crate) fn none() -> Landing<'a> {
        Landing { creating: None, ino: 0, path: None }
    }

    /// For a flush that commits nothing: the create lands (a held one is sent now).
    pub(crate) async fn land(self) -> Result<(), ClientError> {
        let Some((creating, client)) = self.creating else { return Ok(()) };
        if let Some(HeldCreate { new, turn }) = creating.take_held(self.ino) {
            creating.call(client, self.ino, new, turn).await;
        }
        creating.ensure(client, self.ino, self.path).await
    }

    /// Right before a commit: hands over the file's create if it is still held (the commit
    /// makes the entry: [`NewEntry::commit`]), else waits for the creates in flight.
    pub(crate) async fn before_commit(self) -> Result<Option<NewEntry<'a>>, ClientError> {
        let Some((creating, client)) = self.creating else { return Ok(None) };
        match creating.take_held(self.ino) {
            Some(held) => Ok(Some(NewEntry { creating, ino: self.ino, held })),
            None => creating.ensure(client, self.ino, self.path).await.map(|()| None),
        }
    }
}

/// A held create that a commit makes along with the file's content (`CommitNewFile`).
pub(crate) struct NewEntry<'a> {
    creating: &'a Creating,
    ino: u64,
    held: HeldCreate,
}

impl NewEntry<'_> {
    /// Commits `manifest` (whole) at `path`, making the entry with the mode and owner the
    /// create asked for; the create's turn is held until it is done. If it fails, the
    /// file's next flush or change makes the entry first, as after a failed call.
    pub(crate) async fn commit(
        self,
        client: &Client,
        path: &RemotePath,
        manifest: &Manifest,
        placements: Vec<ChunkPlacement>,
        replicas: usize,
    ) -> Result<(EntryInfo, [u8; 32]), ClientError> {
        let NewEntry { creating, ino, held: HeldCreate { new, turn } } = self;
        let owner = NewOwner { mode: new.mode, uid: new.uid, gid: new.gid };
        let committed = match creating.injected_fault() {
            Some(e) => Err(e),
            None => client.commit(path, manifest, placements, Some(manifest.mtime_ms), replicas, Some(owner)).await,
        };
        if let Err(e) = &committed {
            warn!(path = %new.path, "commit making the entry failed ({e}); the next flush or change of it makes it again");
            creating.failed.lock().expect("failed creates").insert(ino, new);
        }
        drop(turn);
        committed
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::FutureExt;

    #[tokio::test]
    async fn creates_answer_early_only_once_proven_without_o_excl_and_within_the_bound() {
        let c = Creating::default();
        assert!(c.early_turn(libc::O_CREAT).is_none(), "not before the tracker confirmed one");
        c.confirmed();
        assert!(c.early_turn(libc::O_CREAT | libc::O_EXCL).is_none(), "an O_EXCL create waits for its call");
        let turns: Vec<_> = (0..IN_FLIGHT_MAX).map(|_| c.early_turn(libc::O_CREAT).expect("a turn")).collect();
        assert!(c.early_turn(libc::O_CREAT).is_none(), "past {IN_FLIGHT_MAX} in flight a create waits");
        drop(turns);
        assert!(c.early_turn(libc::O_CREAT).is_some());
    }

    #[tokio::test]
    async fn settled_waits_for_every_call_in_flight_and_holds_new_early_answers_meanwhile() {
        let c = Arc::new(Creating::default());
        c.confirmed();
        let (first, second) = (c.early_turn(0).unwrap(), c.early_turn(0).unwrap());
        let waiter = tokio::spawn({
            let c = c.clone();
            async move { c.settled().await }
        });
        // The waiter queues behind the two calls; a create arriving now waits for its call.
        tokio::task::yield_now().await;
        assert!(c.early_turn(0).is_none(), "no early answer while a settle waits");
        drop(first);
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished(), "one call is still in flight");
        drop(second);
        tokio::time::timeout(std::time::Duration::from_secs(5), waiter).await.expect("settled").unwrap();
        assert!(c.settled().now_or_never().is_some(), "nothing in flight: at once");
        assert!(c.early_turn(0).is_some());
    }
}
