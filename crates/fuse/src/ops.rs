//! The FUSE operations: each hands its work to a tokio task (see [`crate::fs`]) and replies
//! from there.

use std::ffi::OsStr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use fuser::{
    AccessFlags, Errno, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, KernelConfig, LockOwner,
    OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory, ReplyDirectoryPlus, ReplyEmpty,
    ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite, Request, TimeOrNow, WriteFlags,
};
use swarmfs_core::Manifest;
use swarmfs_proto::{EntryInfo, EntryKind, PeerState, RemotePath};
use tokio::sync::Mutex as AsyncMutex;

use crate::creating::NewFile;
use crate::file::FileState;
use crate::fs::{errno_of, file_errno, file_type, log_err, ms_of, OpenDir, SwarmFs, TTL};

impl Filesystem for SwarmFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        // Larger writes mean fewer round trips through the staging code.
        let _ = config.set_max_write(1 << 20);
        let _ = config.set_max_readahead(1 << 20);
        // `ls -l` gets names and attributes in one pass (readdirplus) rather than a lookup
        // per entry; AUTO lets the kernel use plain readdir where no attributes follow.
        let plus = fuser::InitFlags::FUSE_DO_READDIRPLUS | fuser::InitFlags::FUSE_READDIRPLUS_AUTO;
        let _ = config.add_capabilities(plus);
        Ok(())
    }

    fn destroy(&mut self) {
        let inner = self.inner.clone();
        self.inner.rt.block_on(async move { inner.flush_all().await });
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let name = name.to_owned();
        self.run_here_first(|fs| async move {
            let r = async {
                let path = fs.child(parent, &name)?;
                fs.stat(&path).await
            }
            .await;
            match r {
                Ok((a, ttl)) => reply.entry(&ttl, &a, Generation(0)),
                Err(e) => reply.error(e),
            }
        });
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        self.run_here_first(|fs| async move {
            let r = async {
                match fs.path(ino) {
                    Ok(path) => fs.stat(&path).await,
                    // Unlinked while open: the file lives on for its handles (fstat works).
                    Err(e) => match fs.open_file(ino.0) {
                        Some(f) => Ok((fs.open_attr(ino.0, &*f.lock().await), TTL)),
                        None => fs.removed_dir_attr(ino.0).map(|a| (a, TTL)).ok_or(e),
                    },
                }
            }
            .await;
            match r {
                Ok((a, ttl)) => reply.attr(&ttl, &a),
                Err(e) => reply.error(e),
            }
        });
    }

    fn setattr(
        &self,
        req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let _ = req;
        self.run(|fs| async move {
            match fs.set_attrs(ino.0, mode, uid, gid, size, atime.is_some(), mtime).await {
                Ok((a, ttl)) => reply.attr(&ttl, &a),
                Err(e) => reply.error(e),
            }
        });
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        self.run_here_first(|fs| async move {
            let r = async {
                let path = fs.path(ino)?;
                fs.client.read_link(&path).await.map_err(|e| log_err("readlink", &e, errno_of(&e)))
            }
            .await;
            match r {
                Ok(t) => reply.data(t.as_bytes()),
                Err(e) => reply.error(e),
            }
        });
    }

    fn mkdir(&self, req: &Request, parent: INodeNo, name: &OsStr, mode: u32, umask: u32, reply: ReplyEntry) {
        let name = name.to_owned();
        let (uid, gid) = (req.uid(), req.gid());
        self.run(|fs| async move {
            let r = async {
                fs.creating.settled().await;
                let path = fs.child(parent, &name)?;
                fs.client
                    .create(&path, EntryKind::Dir, mode & !umask & 0o7777, uid, gid, 0, None)
                    .await
                    .map_err(|e| log_err("mkdir", &e, errno_of(&e)))?;
                fs.dir_attrs.lock().expect("dir attrs").changed(parent.0, 1);
                fs.stat(&path).await
            }
            .await;
            match r {
                Ok((a, ttl)) => reply.entry(&ttl, &a, Generation(0)),
                Err(e) => reply.error(e),
            }
        });
    }

    fn mknod(&self, req: &Request, parent: INodeNo, name: &OsStr, mode: u32, umask: u32, rdev: u32, reply: ReplyEntry) {
        let name = name.to_owned();
        let (uid, gid) = (req.uid(), req.gid());
        self.run(|fs| async move {
            let r = async {
                fs.creating.settled().await;
                let path = fs.child(parent, &name)?;
                let perm = mode & !umask & 0o7777;
                let (kind, mode) = match mode & libc::S_IFMT {
                    0 | libc::S_IFREG => (EntryKind::File, perm),
                    libc::S_IFIFO | libc::S_IFCHR | libc::S_IFBLK | libc::S_IFSOCK => {
                        (EntryKind::Special, (mode & libc::S_IFMT) | perm)
                    }
                    _ => return Err(Errno::EINVAL),
                };
                fs.client
                    .create(&path, kind, mode, uid, gid, rdev, None)
                    .await
                    .map_err(|e| log_err("mknod", &e, errno_of(&e)))?;
                fs.dir_attrs.lock().expect("dir attrs").changed(parent.0, 0);
                fs.stat(&path).await
            }
            .await;
            match r {
                Ok((a, ttl)) => reply.entry(&ttl, &a, Generation(0)),
                Err(e) => reply.error(e),
            }
        });
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let name = name.to_owned();
        self.run(|fs| async move {
            let r = async {
                let path = fs.child(parent, &name)?;
                fs.settled_at(&path).await?;
                let e = fs.client.stat(&path).await.map_err(|e| errno_of(&e))?;
                if e.kind == EntryKind::Dir {
                    return Err(Errno::EISDIR);
                }
                let mut held = fs.hold_open_files(&[&path]).await;
                fs.client.remove(&path, false).await.map_err(|e| log_err("unlink", &e, errno_of(&e)))?;
                fs.dir_attrs.lock().expect("dir attrs").changed(parent.0, 0);
                let gone = fs.inodes.lock().expect("inodes").remove(&path);
                fs.mark_unlinked(&gone, &mut held);
                Ok(())
            }
            .await;
            match r {
                Ok(()) => reply.ok(),
                Err(e) => reply.error(e),
            }
        });
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let name = name.to_owned();
        self.run(|fs| async move {
            let r = async {
                fs.creating.settled().await;
                let path = fs.child(parent, &name)?;
                let e = fs.client.stat(&path).await.map_err(|e| errno_of(&e))?;
                if e.kind != EntryKind::Dir {
                    return Err(Errno::ENOTDIR);
                }
                fs.client.remove(&path, false).await.map_err(|e| log_err("rmdir", &e, errno_of(&e)))?;
                let gone = fs.inodes.lock().expect("inodes").remove(&path);
                let mut dir_attrs = fs.dir_attrs.lock().expect("dir attrs");
                dir_attrs.changed(parent.0, -1);
                gone.iter().for_each(|&ino| dir_attrs.forget(ino));
                Ok(())
            }
            .await;
            match r {
                Ok(()) => reply.ok(),
                Err(e) => reply.error(e),
            }
        });
    }

    fn symlink(&self, req: &Request, parent: INodeNo, link_name: &OsStr, target: &Path, reply: ReplyEntry) {
        let (name, target) = (link_name.to_owned(), target.to_owned());
        let (uid, gid) = (req.uid(), req.gid());
        self.run(|fs| async move {
            let r = async {
                fs.creating.settled().await;
                let path = fs.child(parent, &name)?;
                let target = target.to_str().ok_or(Errno::EINVAL)?.to_string();
                fs.client
                    .create(&path, EntryKind::Symlink, 0o777, uid, gid, 0, Some(target))
                    .await
                    .map_err(|e| log_err("symlink", &e, errno_of(&e)))?;
                fs.dir_attrs.lock().expect("dir attrs").changed(parent.0, 0);
                fs.stat(&path).await
            }
            .await;
            match r {
                Ok((a, ttl)) => reply.entry(&ttl, &a, Generation(0)),
                Err(e) => reply.error(e),
            }
        });
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        let (name, newname) = (name.to_owned(), newname.to_owned());
        self.run(|fs| async move {
            let r = async {
                if flags.contains(RenameFlags::RENAME_EXCHANGE) {
                    return Err(Errno::EINVAL);
                }
                let from = fs.child(parent, &name)?;
                let to = fs.child(newparent, &newname)?;
                fs.settled_at(&from).await?;
                if flags.contains(RenameFlags::RENAME_NOREPLACE) && fs.client.stat(&to).await.is_ok() {
                    return Err(Errno::EEXIST);
                }
                let mut held = fs.hold_open_files(&[&from, &to]).await;
                fs.client.rename(&from, &to).await.map_err(|e| log_err("rename", &e, errno_of(&e)))?;
                // Both parents' times and perhaps link counts, and the paths below a moved
                // directory: simplest to ask the tracker again.
                fs.dir_attrs.lock().expect("dir attrs").forget_all();
                let replaced = fs.inodes.lock().expect("inodes").rename(&from, &to);
                fs.mark_unlinked(&replaced, &mut held);
                Ok(())
            }
            .await;
            match r {
                Ok(()) => reply.ok(),
                Err(e) => reply.error(e),
            }
        });
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let _ = flags;
        self.run_here_first(|fs| async move {
            let r = async {
                let f = fs.load(ino.0).await?;
                f.lock().await.opens += 1;
                Ok::<_, Errno>(fs.new_fh())
            }
            .await;
            match r {
                Ok(fh) => reply.opened(FileHandle(fh), FopenFlags::empty()),
                Err(e) => reply.error(e),
            }
        });
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        self.run_here_first(|fs| async move {
            let r = async {
                let f = fs.load(ino.0).await?;
                let mut st = f.lock().await;
                st.read(&fs.client, &fs.cache, offset, size).await.map_err(|e| log_err("read", &e, file_errno(&e)))
            }
            .await;
            match r {
                Ok(d) => reply.data(&d),
                Err(e) => reply.error(e),
            }
        });
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let data = data.to_vec();
        self.run_here_first(|fs| async move {
            let r = async {
                let f = fs.load(ino.0).await?;
                let mut st = f.lock().await;
                st.write(&fs.client, &fs.cache, offset, &data).await.map_err(|e| log_err("write", &e, file_errno(&e)))
            }
            .await;
            match r {
                Ok(()) => reply.written(data.len() as u32),
                Err(e) => reply.error(e),
            }
        });
    }

    // close(2) and fsync(2) both upload what is staged: close-to-open needs the data out
    // before close returns.
    fn flush(&self, _req: &Request, ino: INodeNo, _fh: FileHandle, _lock_owner: LockOwner, reply: ReplyEmpty) {
        self.upload_then_reply(ino, reply);
    }

    fn fsync(&self, _req: &Request, ino: INodeNo, _fh: FileHandle, _datasync: bool, reply: ReplyEmpty) {
        self.upload_then_reply(ino, reply);
    }

    fn release(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        self.run(|fs| async move {
            let r = match fs.open_file(ino.0) {
                Some(f) => {
                    // The last handle leaves the file compact (any compaction committed).
                    let last = f.lock().await.opens <= 1;
                    let r = fs.flush_file(ino.0, &f, last).await;
                    {
                        let mut st = f.lock().await;
                        st.opens = st.opens.saturating_sub(1);
                    }
                    fs.close_if_unused(ino.0);
                    r
                }
                None => Ok(()),
            };
            match r {
                Ok(()) => reply.ok(),
                Err(e) => reply.error(e),
            }
        });
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        self.run_here_first(|fs| async move {
            let r = async {
                fs.creating.settled().await;
                let path = fs.path(ino)?;
                // The directory's own entry is kept with the handle: fstat on it still works
                // after the directory is removed or renamed over (nlink 0), as on a local disk.
                let (entries, own) = tokio::join!(fs.client.list(&path), fs.client.stat(&path));
                let entries = entries.map_err(|e| log_err("readdir", &e, errno_of(&e)))?;
                let own = own.map_err(|e| log_err("readdir", &e, errno_of(&e)))?;
                let parent_ino = {
                    let mut inodes = fs.inodes.lock().expect("inodes");
                    inodes.ino(&path.parent())
                };
                let mut listing = vec![
                    (ino.0, FileType::Directory, ".".to_string(), None),
                    (parent_ino, FileType::Directory, "..".to_string(), None),
                ];
                let named: Vec<_> = {
                    let mut inodes = fs.inodes.lock().expect("inodes");
                    entries
                        .into_iter()
                        .filter_map(|e| {
                            let p = RemotePath::parse(&e.path).ok()?;
                            Some((inodes.ino(&p), p.name().to_string(), e))
                        })
                        .collect()
                };
                for (child, name, e) in named {
                    // A file open here may have writes the tracker has not seen: its entry
                    // goes to the kernel uncached, and the stat that follows asks the open
                    // state (waiting here for it would stall the listing behind an upload).
                    let ttl = if fs.open_file(child).is_some() { Duration::ZERO } else { TTL };
                    listing.push((child, file_type(&e), name, Some((fs.attr(child, &e), ttl))));
                }
                let fh = fs.new_fh();
                fs.dirs.lock().expect("dirs").insert(fh, OpenDir { ino: ino.0, listing, entry: own });
                Ok::<_, Errno>(fh)
            }
            .await;
            match r {
                Ok(fh) => reply.opened(FileHandle(fh), FopenFlags::empty()),
                Err(e) => reply.error(e),
            }
        });
    }

    fn readdir(&self, _req: &Request, _ino: INodeNo, fh: FileHandle, offset: u64, mut reply: ReplyDirectory) {
        let dirs = self.inner.dirs.lock().expect("dirs");
        let Some(OpenDir { listing, .. }) = dirs.get(&fh.0) else {
            reply.error(Errno::EBADF);
            return;
        };
        for (i, (ino, kind, name, _)) in listing.iter().enumerate().skip(offset as usize) {
            if reply.add(INodeNo(*ino), (i + 1) as u64, *kind, name) {
                break;
            }
        }
        reply.ok();
    }

    // Entries with their attributes as of opendir, cached by the kernel for TTL like a
    // lookup's; the kernel takes no entry from "." and "..", so they carry the directory's.
    fn readdirplus(&self, _req: &Request, _ino: INodeNo, fh: FileHandle, offset: u64, mut reply: ReplyDirectoryPlus) {
        let dirs = self.inner.dirs.lock().expect("dirs");
        let Some(OpenDir { listing, entry, ino: dir_ino }) = dirs.get(&fh.0) else {
            reply.error(Errno::EBADF);
            return;
        };
        let own = self.inner.attr(*dir_ino, entry);
        for (i, (ino, _, name, attr)) in listing.iter().enumerate().skip(offset as usize) {
            let (attr, ttl) = attr.as_ref().map(|(a, t)| (a, t)).unwrap_or((&own, &TTL));
            if reply.add(INodeNo(*ino), (i + 1) as u64, name, ttl, attr, Generation(0)) {
                break;
            }
        }
        reply.ok();
    }

    fn releasedir(&self, _req: &Request, _ino: INodeNo, fh: FileHandle, _flags: OpenFlags, reply: ReplyEmpty) {
        self.inner.dirs.lock().expect("dirs").remove(&fh.0);
        reply.ok();
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        self.run_here_first(|fs| async move {
            match fs.client.peers().await {
                Ok(peers) => {
                    let live = peers.iter().filter(|p| p.state == PeerState::Up);
                    let (cap, used) = live.fold((0u64, 0u64), |(c, u), p| (c + p.capacity, u + p.used));
                    // Usable space is raw space divided by the copies each byte takes.
                    let r = fs.opts.replicas.max(1) as u64;
                    let bsize = 4096u64;
                    let blocks = cap / r / bsize;
                    let free = cap.saturating_sub(used) / r / bsize;
                    reply.statfs(blocks, free, free, 1 << 32, 1 << 32, bsize as u32, 255, bsize as u32);
                }
                Err(e) => reply.error(log_err("statfs", &e, errno_of(&e))),
            }
        });
    }

    fn access(&self, _req: &Request, _ino: INodeNo, _mask: AccessFlags, reply: ReplyEmpty) {
        reply.ok();
    }

    // Hard links need an inode layer the namespace does not have (entries are paths); EPERM
    // is what link(2) answers on file systems without them, and tools such as git fall back.
    fn link(&self, _req: &Request, _ino: INodeNo, _newparent: INodeNo, _newname: &OsStr, reply: ReplyEntry) {
        reply.error(Errno::EPERM);
    }

    // Directory changes are committed to the tracker before they are acknowledged, but for
    // creates answered early (see `crate::creating`): those are waited for.
    fn fsyncdir(&self, _req: &Request, _ino: INodeNo, _fh: FileHandle, _datasync: bool, reply: ReplyEmpty) {
        self.run(|fs| async move {
            fs.creating.settled().await;
            reply.ok();
        });
    }

    // Preallocating space means nothing for chunks that live on other machines.
    fn fallocate(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _offset: u64,
        _length: u64,
        _mode: i32,
        reply: ReplyEmpty,
    ) {
        reply.error(Errno::EOPNOTSUPP);
    }

    // No extended attributes. ENOSYS (not ENOTSUP) makes the kernel remember that and stop
    // asking — it otherwise asks for security.capability before every write — and callers see
    // EOPNOTSUPP either way.
    fn getxattr(&self, _req: &Request, _ino: INodeNo, _name: &OsStr, _size: u32, reply: fuser::ReplyXattr) {
        reply.error(Errno::ENOSYS);
    }

    fn listxattr(&self, _req: &Request, _ino: INodeNo, size: u32, reply: fuser::ReplyXattr) {
        if size == 0 {
            reply.size(0);
        } else {
            reply.data(&[]);
        }
    }

    fn setxattr(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _name: &OsStr,
        _value: &[u8],
        _flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        reply.error(Errno::ENOSYS);
    }

    fn removexattr(&self, _req: &Request, _ino: INodeNo, _name: &OsStr, reply: ReplyEmpty) {
        reply.error(Errno::ENOSYS);
    }

    /// No file here takes an ioctl, but programs probe with them: Python's `open` asks
    /// whether every file it opens is a terminal. Answered as a local file system answers
    /// (not a tty), without the warning fuser's default logs for each one.
    #[allow(clippy::too_many_arguments)] // the kernel's ioctl fields, as fuser hands them over
    fn ioctl(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _flags: fuser::IoctlFlags,
        _cmd: u32,
        _in_data: &[u8],
        _out_size: u32,
        reply: fuser::ReplyIoctl,
    ) {
        reply.error(Errno::ENOTTY);
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        let name = name.to_owned();
        let (uid, gid) = (req.uid(), req.gid());
        self.run_here_first(|fs| async move {
            let r = async {
                let path = fs.child(parent, &name)?;
                let mode = mode & !umask & 0o7777;
                let now = ms_of(SystemTime::now());
                let empty = Manifest::whole(0, fs.opts.chunk_size, mode, now, Vec::new());
                // The kernel calls create only after a lookup found no such name. Usually the
                // call to the tracker runs while the program writes (see `crate::creating`).
                let early = fs.creating.early_turn(flags);
                let e = match early {
                    Some(_) => EntryInfo {
                        path: path.to_string(),
                        kind: EntryKind::File,
                        size: 0,
                        mtime_ms: now,
                        file_id: None,
                        chunks: 0,
                        mode,
                        uid,
                        gid,
                        rdev: 0,
                        ctime_ms: now,
                        nlink: 1,
                        replicas: 0,
                    },
                    // One tracker transaction: the name, mode and owner appear together.
                    None => {
                        let e = fs
                            .client
                            .create(&path, EntryKind::File, mode, uid, gid, 0, None)
                            .await
                            .map_err(|e| log_err("create", &e, errno_of(&e)))?;
                        fs.creating.confirmed();
                        e
                    }
                };
                fs.dir_attrs.lock().expect("dir attrs").changed(parent.0, 0);
                let ino = {
                    let mut inodes = fs.inodes.lock().expect("inodes");
                    inodes.remove(&path);
                    inodes.ino(&path)
                };
                if let Some(turn) = early {
                    let new = NewFile { path, mode, uid, gid, time_ms: now };
                    let hurry = fs.creating.hold(ino, new, turn);
                    let fs = fs.clone();
                    fs.rt.clone().spawn(async move { fs.creating.call_when_due(&fs.client, ino, hurry).await });
                }
                fs.files.lock().expect("files").remove(&ino);
                let st = FileState::new(empty, e.clone(), &fs.opts).map_err(|e| file_errno(&e))?;
                let f = Arc::new(AsyncMutex::new(st));
                f.lock().await.opens = 1;
                fs.files.lock().expect("files").insert(ino, f);
                Ok((fs.attr(ino, &e), fs.new_fh()))
            }
            .await;
            match r {
                Ok((a, fh)) => reply.created(&TTL, &a, Generation(0), FileHandle(fh), FopenFlags::empty()),
                Err(e) => reply.error(e),
            }
        });
    }
}
