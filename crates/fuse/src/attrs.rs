//! Attributes: changes to them (`setattr`) and the directory attributes a mount answers
//! with itself.

use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime};

use fuser::{Errno, FileAttr, INodeNo, TimeOrNow};
use swarmfs_proto::EntryInfo;

use crate::fs::{errno_of, file_errno, log_err, ms_of, time_of, Inner, TTL};

/// Directory attributes this mount may answer with itself for [`TTL`] after the tracker gave
/// them. The kernel drops a directory's attributes after every create or unlink in it and asks
/// for them again before the next one (its permission check), so a loop creating files paid a
/// tracker round trip per file for attributes this mount had just seen. This mount's own
/// creates and removals in a directory move its times here, as the tracker moved them; any
/// other change it makes forgets the directory. Changes by other mounts show within [`TTL`] of
/// the tracker's answer, as they did when the kernel alone cached it.
///
/// A tracker answer that left before one of this mount's changes is not kept (`changes`
/// moved meanwhile): it could predate the change. The kernel drops such a late answer
/// itself (its attribute version), so only this cache needed the check.
#[derive(Default)]
pub(crate) struct DirAttrs {
    dirs: HashMap<u64, (EntryInfo, Instant)>,
    /// Counts this mount's changes to directories.
    pub(crate) changes: u64,
}

/// Past this many directories, the expired ones are dropped.
const DIR_ATTRS_KEPT: usize = 4096;

impl DirAttrs {
    /// The attributes of directory `ino` and how long they stay fresh, if they still are.
    pub(crate) fn fresh(&self, ino: u64) -> Option<(EntryInfo, Duration)> {
        let (e, at) = self.dirs.get(&ino)?;
        let left = TTL.checked_sub(at.elapsed()).filter(|d| !d.is_zero())?;
        Some((e.clone(), left))
    }

    /// Keeps the tracker's answer `e`, asked for when `changes` was `asked_at`.
    pub(crate) fn keep(&mut self, ino: u64, e: &EntryInfo, asked_at: u64) {
        if self.changes != asked_at {
            return;
        }
        if self.dirs.len() >= DIR_ATTRS_KEPT {
            self.dirs.retain(|_, (_, at)| at.elapsed() < TTL);
        }
        self.dirs.insert(ino, (e.clone(), Instant::now()));
    }

    /// This mount created or removed an entry in directory `ino` (`subdirs`: by how many its
    /// subdirectories changed, which its link count follows).
    pub(crate) fn changed(&mut self, ino: u64, subdirs: i32) {
        self.changes += 1;
        if let Some((e, _)) = self.dirs.get_mut(&ino) {
            let now = ms_of(SystemTime::now());
            (e.mtime_ms, e.ctime_ms) = (now, now);
            e.nlink = e.nlink.saturating_add_signed(subdirs);
        }
    }

    pub(crate) fn forget(&mut self, ino: u64) {
        self.changes += 1;
        self.dirs.remove(&ino);
    }

    pub(crate) fn forget_all(&mut self) {
        self.changes += 1;
        self.dirs.clear();
    }
}

impl Inner {
    /// `setattr`: a truncation (uploaded at once when no handle is open), then mode, owner
    /// and times in one tracker call; returns the attributes as they are now.
    #[allow(clippy::too_many_arguments)] // the kernel's setattr fields, as fuser hands them over
    pub(crate) async fn set_attrs(
        &self,
        ino: u64,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: bool,
        mtime: Option<TimeOrNow>,
    ) -> Result<(FileAttr, Duration), Errno> {
        let path = match self.path(INodeNo(ino)) {
            Ok(p) => {
                // The creates in flight land first (and this file's, if its call failed).
                self.settled_at(&p).await?;
                p
            }
            // ftruncate on a file unlinked while open: only its local state changes.
            Err(e) => {
                let f = self.open_file(ino).ok_or(e)?;
                let mut st = f.lock().await;
                if let Some(size) = size {
                    st.truncate(&self.client, &self.cache, size)
                        .await
                        .map_err(|e| log_err("truncate", &e, file_errno(&e)))?;
                }
                return Ok((self.open_attr(ino, &st), TTL));
            }
        };
        // Permission to chmod/chown/utimens was checked by the kernel
        // (default_permissions) against the owner and mode we report.
        let mtime_ms = mtime.map(|t| match t {
            TimeOrNow::SpecificTime(t) => ms_of(t),
            TimeOrNow::Now => ms_of(SystemTime::now()),
        });
        if let Some(size) = size {
            let f = self.load(ino).await?;
            {
                let mut st = f.lock().await;
                st.truncate(&self.client, &self.cache, size)
                    .await
                    .map_err(|e| log_err("truncate", &e, file_errno(&e)))?;
                if st.opens == 0 {
                    let p = self.inodes.lock().expect("inodes").path(ino);
                    let landed = self.creating.landing(&self.client, ino, p.as_ref());
                    st.flush(&self.client, &self.cache, p.as_ref(), &self.opts, &self.journal, true, landed)
                        .await
                        .map_err(|e| log_err("truncate", &e, file_errno(&e)))?;
                }
            }
            self.close_if_unused(ino);
        }
        // An atime-only change stores no atime (the mount is noatime) but, as any
        // attribute change, moves ctime: set_attr always does.
        if mode.is_some() || uid.is_some() || gid.is_some() || mtime_ms.is_some() || atime {
            let e = self
                .client
                .set_attr(&path, mode.map(|m| m & 0o7777), uid, gid, mtime_ms)
                .await
                .map_err(|e| log_err("setattr", &e, errno_of(&e)))?;
            if let Some(f) = self.open_file(ino) {
                let mut st = f.lock().await;
                st.mode = e.mode;
                if let Some(t) = mtime_ms {
                    st.mtime = time_of(t);
                }
                st.entry = EntryInfo { size: st.size, ..e };
            }
        }
        self.dir_attrs.lock().expect("dir attrs").forget(ino);
        self.stat(&path).await
    }
}
