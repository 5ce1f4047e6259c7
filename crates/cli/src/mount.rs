//! `swarmfs mount`: the swarm as a FUSE filesystem, in the foreground.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use clap::Args;
use swarmfs_client::{Client, Policy, PutOptions};
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::home::Home;
use crate::nodes::{parse_chunk_size, parse_replicas, parse_size};
use crate::Cli;

#[derive(Args, Clone)]
pub struct MountArgs {
    /// An existing empty directory.
    pub mountpoint: PathBuf,
    /// Copies of each chunk written through the mount.
    #[arg(long, env = "SWARMFS_REPLICAS", default_value_t = PutOptions::DEFAULT_REPLICAS, value_parser = parse_replicas)]
    pub replicas: usize,
    /// Fewest copies of every chunk for a close or fsync to succeed (default: --replicas).
    #[arg(long, env = "SWARMFS_MIN_REPLICAS", value_parser = parse_replicas)]
    pub min_replicas: Option<usize>,
    /// Chunk size for files created through the mount.
    #[arg(long, env = "SWARMFS_CHUNK_SIZE", default_value = "1M", value_parser = parse_chunk_size)]
    pub chunk_size: u32,
    /// Placement policy: rendezvous, least-used or lowest-latency.
    #[arg(long, env = "SWARMFS_PLACEMENT", default_value = "rendezvous")]
    pub placement: Policy,
    /// Memory for decrypted chunks read through the mount.
    #[arg(long, env = "SWARMFS_CACHE", default_value = "64M", value_parser = parse_size)]
    pub cache: u64,
    /// Let other local users use the mount; the kernel enforces each file's mode and owner.
    #[arg(long, env = "SWARMFS_ALLOW_OTHER")]
    pub allow_other: bool,
    /// Serve every chunk read through the mount to other members, as a cached source (as
    /// `get --serve`), until unmounted; at most --serve-capacity of them are kept.
    #[arg(long, env = "SWARMFS_SERVE")]
    pub serve: bool,
    /// Disk kept for chunks served with --serve; once full, later reads are not kept.
    #[arg(long, env = "SWARMFS_SERVE_CAPACITY", default_value = "1G", value_parser = parse_size)]
    pub serve_capacity: u64,
    /// Address to serve on with --serve (port 0 picks a free port).
    #[arg(long, env = "SWARMFS_SERVE_LISTEN", default_value = "127.0.0.1:0")]
    pub listen: String,
    /// Address others dial to reach this node with --serve (default: the listen address).
    #[arg(long, env = "SWARMFS_ADVERTISE")]
    pub advertise: Option<String>,
}

impl MountArgs {
    pub fn defaults(mountpoint: PathBuf) -> MountArgs {
        MountArgs {
            mountpoint,
            replicas: PutOptions::DEFAULT_REPLICAS,
            min_replicas: None,
            chunk_size: swarmfs_core::DEFAULT_CHUNK_SIZE,
            placement: Policy::default(),
            cache: 64 << 20,
            allow_other: false,
            serve: false,
            serve_capacity: 1 << 30,
            listen: "127.0.0.1:0".into(),
            advertise: None,
        }
    }
}

pub async fn run(cli: &Cli, a: &MountArgs) -> Result<()> {
    let (stop, again) = crate::nodes::shutdown_on_signals();
    serve(&cli.home_dir(), &a.mountpoint, a, stop, again).await
}

/// Mounts and serves until the filesystem is unmounted from outside or `stop` is cancelled
/// (then it unmounts itself). Staged writes are uploaded before it returns, unless `again` is
/// cancelled meanwhile: what is left then stays staged for the next mount of this home.
pub async fn serve(
    home_dir: &Path,
    mountpoint: &Path,
    a: &MountArgs,
    stop: CancellationToken,
    again: CancellationToken,
) -> Result<()> {
    let home = Home::load(home_dir)?;
    if home.token.data_key.is_none() {
        return Err(crate::Refused(format!(
            "{} holds a peer token: mounting needs a member token",
            home.dir.display()
        ))
        .into());
    }
    if !mountpoint.is_dir() {
        bail!("{}: not a directory", mountpoint.display());
    }
    let t = &home.token;
    let client = Client::connect(home.client_swarm()?, &t.tracker_addr, t.tracker_id, t.data_key.clone())
        .await
        .with_context(|| format!("cannot reach the tracker at {}", t.tracker_addr))?;
    let opts = swarmfs_fuse::MountOptions {
        replicas: a.replicas,
        min_replicas: a.min_replicas,
        policy: a.placement,
        chunk_size: a.chunk_size,
        cache_bytes: a.cache as usize,
        staging_dir: home.dir.join("staging"),
        allow_other: a.allow_other,
        // A read-only member's mount is read-only: writes fail with EROFS in the kernel (the
        // tracker refuses them anyway).
        read_only: t.member.as_ref().is_some_and(|m| m.read_only),
    };
    let client = Arc::new(client);
    let seeder = if a.serve {
        let (swarm, dir) = (home.client_swarm()?, &home.dir);
        let s = crate::seed::Seeder::start(
            client.clone(),
            swarm,
            dir,
            t.tracker_id,
            &a.listen,
            a.advertise.as_deref(),
            Some(a.serve_capacity),
        )
        .await?;
        info!(addr = %s.addr, "serving chunks read through the mount to other members");
        Some(s)
    } else {
        None
    };
    let rt = tokio::runtime::Handle::current();
    let mp = mountpoint.to_path_buf();
    let fs = swarmfs_fuse::SwarmFs::new(client, rt, opts).context("preparing the staging directory")?;
    let flusher = fs.flusher();
    let mut session = tokio::task::spawn_blocking({
        let mp = mp.clone();
        move || swarmfs_fuse::serve(fs, &mp)
    });
    info!(mountpoint = %mp.display(), "mounted; Ctrl-C or `fusermount3 -u {}` unmounts", mp.display());
    // Writes a previous mount of this home left staged go up first; cut short by a stop, they
    // stay staged (their records are removed only after the commit).
    let left_over = flusher.upload_left_over();
    tokio::pin!(left_over);
    let mut left_over_done = false;
    let result = loop {
        tokio::select! {
            r = &mut session => break r,
            _ = &mut left_over, if !left_over_done => left_over_done = true,
            _ = stop.cancelled() => break stop_mount(&flusher, &mp, &mut session, &again).await?,
        }
    };
    if let Some(s) = seeder {
        let served = s.stop().await;
        info!(served_bytes = served, "stopped serving");
    }
    result.context("mount task")?.with_context(|| format!("mounting {}", mp.display()))?;
    info!("unmounted {}", mp.display());
    Ok(())
}

/// Uploads what open files have staged (a second signal cuts that short and keeps the rest
/// for the next mount), then unmounts and waits for the FUSE session to end.
async fn stop_mount(
    flusher: &swarmfs_fuse::fs::Flusher,
    mp: &Path,
    session: &mut tokio::task::JoinHandle<std::io::Result<()>>,
    again: &CancellationToken,
) -> Result<Result<std::io::Result<()>, tokio::task::JoinError>> {
    // Upload before unmounting: a busy mount is only detached lazily, and its files may stay
    // open for a long time.
    let flushing = flusher.flush_all();
    tokio::pin!(flushing);
    let kept = loop {
        tokio::select! {
            kept = &mut flushing => break kept,
            _ = again.cancelled(), if !flusher.is_stopping() => flusher.stop_uploading(),
        }
    };
    if !kept.is_empty() {
        tracing::warn!(
            "{} file(s) not uploaded; mount this home again to upload them: {}",
            kept.len(),
            kept.join(", ")
        );
    }
    let mp2 = mp.to_path_buf();
    tokio::task::spawn_blocking(move || swarmfs_fuse::unmount(&mp2)).await?.context("unmounting")?;
    // A file still open keeps a lazily unmounted session alive until it is closed, and its
    // close uploads what it staged: wait for that, unless told (again) to stop now. A close
    // cut short that way gets EIO and keeps its writes for the next mount.
    tokio::select! {
        r = &mut *session => return Ok(r),
        _ = again.cancelled() => flusher.stop_uploading(),
    }
    // Cut-short closes keep their writes within moments; then stop, whether or not every
    // application has closed its files.
    match tokio::time::timeout(std::time::Duration::from_secs(2), &mut *session).await {
        Ok(r) => Ok(r),
        Err(_) => {
            tracing::warn!("stopping without waiting for files still open on the mount");
            Ok(Ok(Ok(())))
        }
    }
}
