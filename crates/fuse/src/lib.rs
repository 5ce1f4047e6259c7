//! The swarm as a FUSE filesystem.
//!
//! # Layout
//! - [`inodes`]: inode numbers <-> remote paths, kept right across renames and unlinks.
//! - [`file`]: an open file: base manifest, locally staged dirty chunks, read/write/truncate
//!   at any offset, and the flush that uploads only the chunks that changed.
//! - `compaction`: chunks whose small writes piled up, stored whole again off the fsync
//!   path and swapped in by a later flush.
//! - [`staging`]: where an open file's writes wait for upload: in memory while small, in a
//!   sparse file once they grow.
//! - [`pending`]: records of staged writes a stopped mount left, finished by the next one.
//! - [`journal`]: small staged writes while their flush is under way, for the same.
//! - `attrs`: `setattr`, and directory attributes answered by the mount itself for the rest
//!   of their second.
//! - [`fs`]: shared state (inodes, open files, cache) and helpers (attributes, errnos);
//!   `ops.rs`: the `fuser::Filesystem` operations. Whatever waits runs as a tokio task so a
//!   slow upload never holds up the rest of the mount.
//!
//! Consistency is close-to-open: a file's manifest is fetched when it is opened, and what a
//! writer has closed (or fsynced) is committed to the tracker before close returns.

mod attrs;
mod compaction;
mod creating;
pub mod file;
pub mod fs;
pub mod inodes;
pub mod journal;
mod ops;
pub mod pending;
pub mod staging;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use swarmfs_client::{Client, Policy};

pub use fs::SwarmFs;

#[derive(Clone, Debug)]
pub struct MountOptions {
    pub replicas: usize,
    /// Fewest copies of every chunk for a flush to succeed; `None` means all `replicas`.
    pub min_replicas: Option<usize>,
    pub policy: Policy,
    pub chunk_size: u32,
    /// Files up to this many bytes are kept in their manifest, not in chunks (0: none; at
    /// most [`swarmfs_core::MAX_INLINE`]).
    pub inline_max: usize,
    /// Most bytes of decrypted chunks kept in memory.
    pub cache_bytes: usize,
    /// Where dirty chunks are staged until they are uploaded.
    pub staging_dir: PathBuf,
    /// Let other local users use the mount (FUSE `allow_other`); permissions are then
    /// enforced by the kernel from each entry's mode and owner.
    pub allow_other: bool,
    /// Mount read-only (a read-only member, or asked for).
    pub read_only: bool,
    /// What `mount` and /proc/mounts show as the source: `swarmfs:` and the home, so two
    /// swarms mounted on one machine are told apart.
    pub fs_name: String,
}

/// Mounts the swarm at `mountpoint` and serves it until it is unmounted (`fusermount3 -u`,
/// or [`unmount`] from another thread). Staged writes are flushed before this returns.
pub fn mount(
    client: Arc<Client>,
    rt: tokio::runtime::Handle,
    mountpoint: &Path,
    opts: MountOptions,
) -> std::io::Result<()> {
    serve(SwarmFs::new(client, rt, opts)?, mountpoint)
}

/// Serves an already built filesystem (keep its [`SwarmFs::flusher`] first) until unmounted.
pub fn serve(fs: SwarmFs, mountpoint: &Path) -> std::io::Result<()> {
    let allow_other = fs.allow_other();
    let read_only = fs.read_only();
    let fs_name = fs.fs_name();
    let mut config = fuser::Config::default();
    config.mount_options = vec![
        fuser::MountOption::FSName(fs_name),
        fuser::MountOption::Subtype("swarmfs".into()),
        if read_only { fuser::MountOption::RO } else { fuser::MountOption::RW },
        fuser::MountOption::NoAtime,
        // The kernel checks mode and ownership, as on a local file system.
        fuser::MountOption::DefaultPermissions,
    ];
    if allow_other {
        // fuser turns this into the `allow_other` mount option.
        config.acl = fuser::SessionACL::All;
    }
    let inner = fs.inner.clone();
    let session = fuser::Session::new(fs, mountpoint, &config)?;
    let _ = inner.kernel.set(session.notifier());
    session.run()
}

/// Asks the kernel to unmount `mountpoint`; the serving [`mount`] call then returns. A mount
/// still in use is detached lazily: it disappears from the tree at once and is served until
/// the last open file is closed.
pub fn unmount(mountpoint: &Path) -> std::io::Result<()> {
    let attempts: [(&str, &[&str]); 3] =
        [("fusermount3", &["-u"]), ("fusermount3", &["-u", "-z"]), ("umount", &["-l"])];
    for (cmd, args) in attempts {
        let ok = std::process::Command::new(cmd)
            .args(args)
            .arg(mountpoint)
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if ok {
            return Ok(());
        }
    }
    Err(std::io::Error::other(format!("could not unmount {}", mountpoint.display())))
}
