//! `put -r` and `get -r`: a whole directory tree in one process, several files at once over
//! the same connections (a process per file costs a TLS handshake with the tracker and each
//! peer, and a start-up, for every file).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use futures_util::stream::{self, StreamExt};
use serde_json::json;
use swarmfs_client::Progress;
use swarmfs_proto::{EntryKind, RemotePath};

use crate::files::{connect, human, rate, GetArgs, PutArgs};
use crate::progress::Bar;
use crate::Cli;

/// Files transferred at once by default: enough to keep the tracker and every peer busy with
/// small files, few enough that big ones stay within the client's memory bound (each file
/// holds its own window of chunks).
pub const DEFAULT_JOBS: usize = 16;

/// Many files' progress on one bar: the bar's length is the whole tree's size, set once, so
/// each file's own start is ignored.
struct TreeProgress<'a> {
    bar: &'a Bar,
}

impl Progress for TreeProgress<'_> {
    fn advance(&self, bytes: u64) {
        self.bar.advance(bytes);
    }
    fn warn(&self, message: &str) {
        self.bar.warn(message);
    }
}

/// A file of the tree: where it is on each side, and its size.
struct TreeFile {
    local: PathBuf,
    remote: RemotePath,
    size: u64,
}

/// The directories (parents first) and regular files under `root`, mapped below `dest`.
/// Anything else (symbolic links, FIFOs, devices) is skipped with a warning, as it has no
/// file to upload.
fn walk_local(root: &Path, dest: &RemotePath, bar: &Bar) -> Result<(Vec<RemotePath>, Vec<TreeFile>)> {
    let mut dirs = vec![dest.clone()];
    let mut files = Vec::new();
    let mut todo = vec![(root.to_path_buf(), dest.clone())];
    while let Some((dir, remote)) = todo.pop() {
        let mut entries: Vec<_> = std::fs::read_dir(&dir)
            .with_context(|| format!("put -r: reading {}", dir.display()))?
            .collect::<std::io::Result<_>>()
            .with_context(|| format!("put -r: reading {}", dir.display()))?;
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let path = e.path();
            let Some(name) = e.file_name().to_str().map(str::to_owned) else {
                bar.warn(&format!("skipping {}: its name is not UTF-8", path.display()));
                continue;
            };
            let meta = std::fs::symlink_metadata(&path).with_context(|| format!("put -r: {}", path.display()))?;
            let target = remote.join(&name).with_context(|| format!("put -r: {}", path.display()))?;
            if meta.is_dir() {
                dirs.push(target.clone());
                todo.push((path, target));
            } else if meta.is_file() {
                files.push(TreeFile { local: path, remote: target, size: meta.len() });
            } else {
                bar.warn(&format!("skipping {}: not a regular file or directory", path.display()));
            }
        }
    }
    Ok((dirs, files))
}

/// Runs `op` on every file, `jobs` at once; the failures it returns, by name.
async fn each_file<'a, Fut>(
    files: &'a [TreeFile],
    jobs: usize,
    op: impl FnMut(&'a TreeFile) -> Fut,
) -> Vec<(String, anyhow::Error)>
where
    Fut: std::future::Future<Output = Option<(String, anyhow::Error)>>,
{
    stream::iter(files).map(op).buffer_unordered(jobs.max(1)).filter_map(|x| async move { x }).collect().await
}

/// What a tree transfer did, for the summary line and `--json`.
struct Done {
    files: usize,
    bytes: u64,
    failed: Vec<(String, anyhow::Error)>,
    secs: f64,
}

impl Done {
    /// Prints each failure and the summary of `command` (put or get); the first failure
    /// (with the count) becomes the command's error, so its exit code is that failure's.
    fn finish(mut self, cli: &Cli, command: &str, quiet: bool) -> Result<()> {
        for (path, e) in &self.failed {
            errln!("{command} {path}: {e:#}");
        }
        let verb = if command == "put" { "stored" } else { "fetched" };
        let ok = self.files - self.failed.len();
        if cli.json {
            let failed: Vec<_> =
                self.failed.iter().map(|(p, e)| json!({ "path": p, "error": format!("{e:#}") })).collect();
            outln!(
                "{}",
                json!({ "files": self.files, "ok": ok, "bytes": self.bytes, "seconds": self.secs,
                        "files_per_s": ok as f64 / self.secs.max(1e-9), "failed": failed })
            );
        } else if !quiet || !self.failed.is_empty() {
            errln!(
                "{verb} {ok} of {} files, {}{}",
                self.files,
                human(self.bytes),
                rate(self.bytes, self.secs).map(|r| format!(", {r}")).unwrap_or_default()
            );
        }
        if self.failed.is_empty() {
            return Ok(());
        }
        let n = self.failed.len();
        let (path, first) = self.failed.swap_remove(0);
        Err(first.context(format!("{n} of {} files failed; the first: {path}", self.files)))
    }
}

pub async fn put(cli: &Cli, a: &PutArgs) -> Result<()> {
    let opts = a.options()?;
    let dest = RemotePath::parse(&a.remote)?;
    let meta = std::fs::metadata(&a.local).with_context(|| format!("put -r {}", a.local.display()))?;
    if !meta.is_dir() {
        return Err(crate::UsageError(format!("put -r: {} is not a directory", a.local.display())).into());
    }
    let bar = Bar::new("put", !a.quiet && !cli.json);
    let (dirs, files) = walk_local(&a.local, &dest, &bar)?;
    let client = connect(cli).await?;
    let started = Instant::now();
    for d in &dirs {
        client.mkdir(d, true).await.with_context(|| format!("put -r: mkdir {d}"))?;
    }
    bar.start(files.iter().map(|f| f.size).sum());
    let progress = TreeProgress { bar: &bar };
    let bytes = AtomicU64::new(0);
    let failed = each_file(&files, a.jobs, |f| {
        let (client, opts, progress, bytes) = (&client, &opts, &progress, &bytes);
        async move {
            let r = async {
                let report = client.put(&f.local, &f.remote, opts, progress).await?;
                if a.preserve {
                    use std::os::unix::fs::MetadataExt;
                    let m = std::fs::metadata(&f.local)?;
                    let mtime_ms = m.mtime() * 1000 + m.mtime_nsec() / 1_000_000;
                    client.set_attr(&f.remote, Some(m.mode() & 0o7777), None, None, Some(mtime_ms)).await?;
                }
                bytes.fetch_add(report.size, Ordering::Relaxed);
                Ok::<_, anyhow::Error>(())
            }
            .await;
            r.err().map(|e| (f.local.display().to_string(), e))
        }
    })
    .await;
    bar.finish();
    let done = Done { files: files.len(), bytes: bytes.into_inner(), failed, secs: started.elapsed().as_secs_f64() };
    done.finish(cli, "put", a.quiet)
}

/// The directories (parents first, mapped below `dest`) and files under the remote `root`.
async fn walk_remote(
    client: &swarmfs_client::Client,
    root: &RemotePath,
    dest: &Path,
) -> Result<(Vec<PathBuf>, Vec<TreeFile>)> {
    let mut dirs = vec![dest.to_path_buf()];
    let mut files = Vec::new();
    let mut todo = vec![(root.clone(), dest.to_path_buf())];
    while let Some((dir, local)) = todo.pop() {
        let entries = client.list(&dir).await.with_context(|| format!("get -r: listing {dir}"))?;
        for e in entries {
            let remote = RemotePath::parse(&e.path)?;
            let name = remote.name();
            // A name that would step out of the destination is never one the tracker makes
            // (paths are checked there); refuse it anyway rather than write outside.
            if name.is_empty() || name == "." || name == ".." || name.contains('/') {
                bail!("get -r: {dir} lists an entry named {name:?}, which cannot be a local file name");
            }
            let target = local.join(name);
            match e.kind {
                EntryKind::Dir => {
                    dirs.push(target.clone());
                    todo.push((remote, target));
                }
                _ => files.push(TreeFile { local: target, remote, size: e.size }),
            }
        }
    }
    Ok((dirs, files))
}

pub async fn get(cli: &Cli, a: &GetArgs) -> Result<()> {
    if a.serve || a.seed {
        return Err(
            crate::UsageError("get -r does not serve (--serve, --seed): get the files one by one".into()).into()
        );
    }
    let root = RemotePath::parse(&a.remote)?;
    let client = connect(cli).await?;
    let started = Instant::now();
    let entry = client.stat(&root).await.with_context(|| format!("get -r {root}"))?;
    if entry.kind != EntryKind::Dir {
        return Err(crate::UsageError(format!("get -r: {root} is not a directory")).into());
    }
    let (dirs, files) = walk_remote(&client, &root, &a.local).await?;
    for d in &dirs {
        std::fs::create_dir_all(d).with_context(|| format!("get -r: mkdir {}", d.display()))?;
    }
    let bar = Bar::new("get", !a.quiet && !cli.json);
    bar.start(files.iter().map(|f| f.size).sum());
    let progress = TreeProgress { bar: &bar };
    let bytes = AtomicU64::new(0);
    let failed = each_file(&files, a.jobs, |f| {
        let (client, progress, bytes) = (&client, &progress, &bytes);
        async move {
            // `get` into a directory puts the file inside it (like cp); in a tree a
            // directory where a file belongs is in the way.
            if f.local.is_dir() {
                let e = anyhow::anyhow!("{}: is a directory, where the file {} belongs", f.local.display(), f.remote);
                return Some((f.remote.to_string(), e));
            }
            match client.get(&f.remote, &f.local, progress).await {
                Ok(r) => {
                    bytes.fetch_add(r.size, Ordering::Relaxed);
                    None
                }
                Err(e) => Some((f.remote.to_string(), anyhow::Error::from(e))),
            }
        }
    })
    .await;
    bar.finish();
    let done = Done { files: files.len(), bytes: bytes.into_inner(), failed, secs: started.elapsed().as_secs_f64() };
    done.finish(cli, "get", a.quiet)
}
