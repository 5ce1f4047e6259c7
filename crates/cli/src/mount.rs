//! `swarmfs mount`: the swarm as a FUSE filesystem, in the foreground.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use clap::Args;
use swarmfs_client::{Client, Policy, PutOptions};
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::home::Home;
use crate::nodes::{parse_chunk_size, parse_inline_max, parse_replicas, parse_size};
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
    /// Files up to this size are kept in their (sealed) manifest on the tracker instead of
    /// in chunks on the peers: a close of a small file is one commit (0 keeps none; at most 64K).
    #[arg(long, env = "SWARMFS_INLINE_MAX", default_value = "4K", value_parser = parse_inline_max)]
    pub inline_max: usize,
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
    /// Mount read-only (a read-only member's mount always is).
    #[arg(long, short = 'r', env = "SWARMFS_READ_ONLY")]
    pub read_only: bool,
    /// Run in the background: return once mounted; the mount logs to HOME/mount.log unless
    /// --log-file says otherwise. Unmount with `fusermount3 -u MOUNTPOINT` (or umount).
    #[arg(long, short = 'd', env = "SWARMFS_DAEMON")]
    pub daemon: bool,
    /// Mount options, comma-separated, as /etc/fstab and mount(8) give them: ro, rw,
    /// allow_other, replicas=N, min_replicas=N, cache=SIZE, chunk_size=SIZE, inline_max=SIZE;
    /// generic ones (defaults, auto, noauto, user, users, nouser, _netdev, nofail, dev,
    /// nodev, suid, nosuid, exec, noexec, x-*, comment=*) are accepted and ignored.
    #[arg(short = 'o', value_name = "OPTIONS", env = "SWARMFS_MOUNT_OPTIONS")]
    pub options: Option<String>,
    /// The source name shown by `mount` and in /proc/mounts (default `swarmfs:HOME`).
    #[arg(long, env = "SWARMFS_FS_NAME")]
    pub fs_name: Option<String>,
}

impl MountArgs {
    pub fn defaults(mountpoint: PathBuf) -> MountArgs {
        MountArgs {
            mountpoint,
            replicas: PutOptions::DEFAULT_REPLICAS,
            min_replicas: None,
            chunk_size: swarmfs_core::DEFAULT_CHUNK_SIZE,
            inline_max: swarmfs_core::DEFAULT_INLINE_MAX,
            placement: Policy::default(),
            cache: 64 << 20,
            allow_other: false,
            serve: false,
            serve_capacity: 1 << 30,
            listen: "127.0.0.1:0".into(),
            advertise: None,
            read_only: false,
            daemon: false,
            options: None,
            fs_name: None,
        }
    }

    /// Applies `-o` options onto the flags; an option it does not know is a usage error.
    fn apply_options(&mut self) -> Result<()> {
        let Some(options) = self.options.clone() else { return Ok(()) };
        let usage = |m: String| anyhow::Error::from(crate::UsageError(m));
        for opt in options.split(',').map(str::trim).filter(|o| !o.is_empty()) {
            let (name, value) = match opt.split_once('=') {
                Some((n, v)) => (n, Some(v)),
                None => (opt, None),
            };
            let need = |v: Option<&'_ str>| match v {
                Some(v) => Ok(v.to_string()),
                None => Err(usage(format!("mount option {name} needs a value ({name}=...)"))),
            };
            match name {
                "ro" => self.read_only = true,
                "rw" => self.read_only = false,
                "allow_other" => self.allow_other = true,
                "replicas" => self.replicas = parse_replicas(&need(value)?).map_err(usage)?,
                "min_replicas" => self.min_replicas = Some(parse_replicas(&need(value)?).map_err(usage)?),
                "cache" => self.cache = parse_size(&need(value)?).map_err(usage)?,
                "chunk_size" => self.chunk_size = parse_chunk_size(&need(value)?).map_err(usage)?,
                "inline_max" => self.inline_max = parse_inline_max(&need(value)?).map_err(usage)?,
                "defaults" | "auto" | "noauto" | "user" | "users" | "nouser" | "_netdev" | "nofail" | "dev"
                | "nodev" | "suid" | "nosuid" | "exec" | "noexec" | "comment" => {}
                n if n.starts_with("x-") => {}
                other => return Err(usage(format!("unknown mount option {other:?} (see swarmfs mount --help)"))),
            }
        }
        Ok(())
    }
}

pub async fn run(cli: &Cli, a: &MountArgs) -> Result<()> {
    let mut a = a.clone();
    a.apply_options()?;
    if a.daemon {
        return in_background(cli, &a).await;
    }
    let (stop, again) = crate::nodes::shutdown_on_signals();
    serve(&cli.home_dir(), &a.mountpoint, &a, stop, again).await
}

/// `mount -d`: runs this same mount again, without `-d`, in a new session with its log in a
/// file, and returns once the mountpoint is mounted (or with the child's error if it ended
/// first). A re-run instead of a fork: the async runtime's threads do not survive a fork.
async fn in_background(cli: &Cli, a: &MountArgs) -> Result<()> {
    use std::os::unix::process::CommandExt;
    let home = cli.home_dir();
    let mountpoint = a.mountpoint.canonicalize().with_context(|| format!("{}", a.mountpoint.display()))?;
    let log = cli.log_file.clone().unwrap_or_else(|| home.join("mount.log"));
    let mut args: Vec<std::ffi::OsString> =
        vec!["mount".into(), mountpoint.clone().into(), "--home".into(), home.clone().into()];
    args.extend([
        "--replicas".into(),
        a.replicas.to_string().into(),
        "--chunk-size".into(),
        a.chunk_size.to_string().into(),
        "--inline-max".into(),
        a.inline_max.to_string().into(),
    ]);
    args.extend(["--cache".into(), a.cache.to_string().into(), "--placement".into(), a.placement.to_string().into()]);
    if let Some(m) = a.min_replicas {
        args.extend(["--min-replicas".into(), m.to_string().into()]);
    }
    for (on, flag) in [(a.allow_other, "--allow-other"), (a.read_only, "--read-only"), (a.serve, "--serve")] {
        if on {
            args.push(flag.into());
        }
    }
    if a.serve {
        args.extend([
            "--serve-capacity".into(),
            a.serve_capacity.to_string().into(),
            "--listen".into(),
            a.listen.clone().into(),
        ]);
        if let Some(adv) = &a.advertise {
            args.extend(["--advertise".into(), adv.into()]);
        }
    }
    if let Some(name) = &a.fs_name {
        args.extend(["--fs-name".into(), name.into()]);
    }
    args.extend(["--log-file".into(), log.clone().into()]);
    if let Some(filter) = &cli.log {
        args.extend(["--log".into(), filter.into()]);
    }
    // Its last words (`error: ...`) go to stderr, not the log sink: append them to the log too,
    // so a mount that fails is explained below.
    let stderr = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log)
        .with_context(|| format!("cannot open the log file {}", log.display()))?;
    let mut command = std::process::Command::new(std::env::current_exe().context("locating the swarmfs binary")?);
    command
        .args(&args)
        .env_remove("SWARMFS_DAEMON")
        .env_remove("SWARMFS_MOUNT_OPTIONS")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(stderr)
        // Its own process group: the terminal's Ctrl-C and the caller's job control do not
        // reach it (no fork and setsid here: they take unsafe code, which the workspace denies).
        .process_group(0);
    let mut child = command.spawn().context("starting the mount in the background")?;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        if is_mounted(&mountpoint) {
            info!(pid = child.id(), log = %log.display(), "mounted {} in the background", mountpoint.display());
            return Ok(());
        }
        if let Some(status) = child.try_wait()? {
            let said = std::fs::read_to_string(&log).unwrap_or_default();
            let last = said.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("no log line");
            bail!("the mount ended before it was ready ({status}): {last} (log: {})", log.display());
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            bail!("the mount was not ready within a minute (log: {})", log.display());
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// When this binary runs as mount(8)'s helper (installed as `/sbin/mount.fuse.swarmfs`, so
/// that `mount -t fuse.swarmfs` and /etc/fstab work): mount(8) calls it as `mount.fuse.swarmfs
/// SOURCE MOUNTPOINT [-o OPTIONS] [-n] [-s] [-f] [-v]`, SOURCE being the member's home. The
/// arguments of the `swarmfs mount -d` that does it, or `None` when not run as the helper.
/// `-f` (fake) gives `Some(None)`: nothing to do.
pub fn helper_args(argv: &[std::ffi::OsString]) -> Option<Result<Option<Vec<std::ffi::OsString>>, String>> {
    let name = Path::new(argv.first()?).file_name()?.to_string_lossy().into_owned();
    if name != "mount.fuse.swarmfs" && name != "mount.swarmfs" {
        return None;
    }
    let mut positional = Vec::new();
    let mut options = Vec::new();
    let mut it = argv[1..].iter().map(|a| a.to_string_lossy().into_owned());
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "-o" => match it.next() {
                Some(o) => options.push(o),
                None => return Some(Err("-o needs options".into())),
            },
            "-f" => return Some(Ok(None)),
            "-n" | "-s" | "-v" => {}
            o if o.starts_with("-o") => options.push(o[2..].to_string()),
            o if o.starts_with('-') => return Some(Err(format!("unknown argument {o}"))),
            _ => positional.push(arg),
        }
    }
    let [source, mountpoint] = positional.as_slice() else {
        return Some(Err(format!("usage: {name} HOME MOUNTPOINT [-o OPTIONS] (HOME: a member's swarmfs home)")));
    };
    let home = source.strip_prefix("swarmfs:").unwrap_or(source);
    let mut args: Vec<std::ffi::OsString> = vec!["swarmfs".into(), "mount".into(), mountpoint.into(), "--home".into()];
    args.extend([home.into(), "-d".into(), "--fs-name".into(), format!("swarmfs:{home}").into()]);
    if !options.is_empty() {
        args.extend(["-o".into(), options.join(",").into()]);
    }
    Some(Ok(Some(args)))
}

/// Whether a swarmfs FUSE file system is mounted at `mountpoint` (canonical).
fn is_mounted(mountpoint: &Path) -> bool {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else { return false };
    let want = mountpoint.to_string_lossy();
    // id parent major:minor root MOUNTPOINT options [optional...] - FSTYPE SOURCE superoptions;
    // the type is `fuse` (or `fuse.swarmfs` where the subtype is kept), the source ours.
    info.lines().any(|l| {
        let at = l.split(' ').nth(4).is_some_and(|m| m == want);
        let mut after = l.split(" - ").nth(1).unwrap_or("").split(' ');
        let fstype = after.next().unwrap_or("");
        let source = after.next().unwrap_or("");
        at && (fstype == "fuse" || fstype == "fuse.swarmfs") && source.starts_with("swarmfs")
    })
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
    let client = Client::connect(home.client_swarm()?, &t.tracker_addrs, t.tracker_id, t.data_key.clone())
        .await
        .with_context(|| format!("cannot reach the tracker at {}", t.tracker_addrs.join(" or ")))?;
    let opts = swarmfs_fuse::MountOptions {
        replicas: a.replicas,
        min_replicas: a.min_replicas,
        policy: a.placement,
        chunk_size: a.chunk_size,
        inline_max: a.inline_max,
        cache_bytes: a.cache as usize,
        staging_dir: home.dir.join("staging"),
        allow_other: a.allow_other,
        // A read-only member's mount is read-only: writes fail with EROFS in the kernel (the
        // tracker refuses them anyway).
        read_only: a.read_only || t.member.as_ref().is_some_and(|m| m.read_only),
        fs_name: a.fs_name.clone().unwrap_or_else(|| format!("swarmfs:{}", home.dir.display())),
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
