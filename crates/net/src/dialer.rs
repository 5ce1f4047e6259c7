//! Reaching a node whichever way works: the one place a path is picked.
//!
//! A node behind NAT cannot be dialled at its advertised address; only the connections it
//! opens reach it. The tracker, which every node reaches, brokers the other two paths:
//!
//! - **direct**: dial the advertised address (a node behind the same NAT may still succeed).
//! - **punch** (TCP hole punching): the dialer asks the tracker, from a fresh local port, to
//!   meet the target (`Punch`); the tracker orders the target over its session
//!   (`Rendezvous`), the target answers from a fresh port of its own (`PunchReady`), and the
//!   tracker tells each side the public address the other's connection came from. Both then
//!   connect to each other from those same ports at once (simultaneous open): each side's
//!   outgoing SYN opens its own NAT for the other's. When the dialer is reachable itself this
//!   is the dial-back (reversal): the target's connection is the one that gets through. A NAT
//!   that maps every connection to a new port defeats it: the address the tracker saw is not
//!   the one the punch comes from.
//! - **relay**: both ends open a connection to the tracker (`Relay`, `RelayJoin`), which
//!   splices them; the two nodes' own TLS and hello run inside, so the tracker relays
//!   ciphertext of ciphertext, paced by `--relay-rate`.
//!
//! Every path ends in the same pinned TLS connection and membership proof. Each is bounded
//! in time, and the path used is logged at debug level.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use swarmfs_proto::{NodeId, Reach, RendezvousPath, Request, Response, Role};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::{mpsc, Notify, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, Instrument};

use crate::io::read_frame;
use crate::rpc::{dial_over, secure_dialer, NoService, RawStream};
use crate::{Connection, Dialer, Limits, NetError, Service, Swarm};

/// How a connection reached its node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Path {
    Direct,
    Punch,
    Relay,
}

impl Path {
    pub fn as_str(self) -> &'static str {
        match self {
            Path::Direct => "direct",
            Path::Punch => "punch",
            Path::Relay => "relay",
        }
    }
}

impl std::fmt::Display for Path {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The node that brokers punches and relays: the swarm's tracker.
#[derive(Clone, Debug)]
pub struct Rendezvous {
    pub addr: String,
    pub node: NodeId,
}

/// Connections opened by each path since start.
#[derive(Debug, Default)]
pub struct PathCounts {
    direct: AtomicU64,
    punch: AtomicU64,
    relay: AtomicU64,
}

impl PathCounts {
    fn count(&self, path: Path) {
        let c = match path {
            Path::Direct => &self.direct,
            Path::Punch => &self.punch,
            Path::Relay => &self.relay,
        };
        c.fetch_add(1, Ordering::Relaxed);
    }

    /// (direct, punch, relay)
    pub fn get(&self) -> (u64, u64, u64) {
        (self.direct.load(Ordering::Relaxed), self.punch.load(Ordering::Relaxed), self.relay.load(Ordering::Relaxed))
    }
}

/// A direct dial to a node known to be behind NAT gets this long: it only succeeds from
/// behind the same NAT, and a NAT that drops unknown SYNs would otherwise hold it for the
/// whole connect timeout.
const DIRECT_TO_NAT: Duration = Duration::from_millis(1500);
/// A direct dial to a node that is not known to be behind NAT.
const CONNECT_DIRECT: Duration = Duration::from_secs(5);
/// For a node behind NAT, the punch (and relay) start this long after the direct dial (on
/// a LAN it has answered by then), or at once when it fails.
const PUNCH_AFTER_DIRECT: Duration = Duration::from_millis(300);
/// The relay starts this long after the punch, or at once when the punch fails: a punch
/// that works connects within a round trip of both sides hearing from the tracker.
const RELAY_AFTER_PUNCH: Duration = Duration::from_secs(1);
/// The tracker's part of a punch or relay (ordering the target, its answer).
const RENDEZVOUS: Duration = Duration::from_secs(6);
/// The dialer's report of a punch's outcome gets this long (it waits for the answer, so
/// that no task outlives the punch).
const PUNCHED_REPORT: Duration = Duration::from_millis(500);
/// Simultaneous connects keep trying this long.
const PUNCH: Duration = Duration::from_secs(4);
/// Connects in a punch are retried this often while refused (a NAT without the mapping yet
/// answers a SYN with a reset instead of dropping it).
const PUNCH_RETRY: Duration = Duration::from_millis(20);
/// Relayed and punched connections a node serves at once.
const MAX_RENDEZVOUS_CONNECTIONS: usize = 256;

/// Reaches `node`: direct at `addrs`; unless the tracker found it `Direct` (or there is no
/// tracker to broker), also by hole punching and through the tracker's relay. The paths are
/// staggered, not strictly one after another (as "happy eyeballs" does for IPv6): for a node
/// behind NAT the punch starts shortly after the direct dial and the relay a second after the
/// punch, or as soon as the one before has failed; the first connection made wins and the
/// others are dropped. Returns the connection and its path; the error names every failure.
pub async fn reach(
    d: &Dialer<'_>,
    rendezvous: Option<&Rendezvous>,
    node: NodeId,
    addrs: &[String],
    reach: Reach,
    counts: &PathCounts,
) -> Result<(Connection, Path), NetError> {
    let behind_nat = reach.behind_nat();
    let brokered = rendezvous.filter(|_| reach != Reach::Direct);
    let (direct_failed, punch_failed) = (Notify::new(), Notify::new());
    let direct = async {
        let r = direct(d, node, addrs, if behind_nat { DIRECT_TO_NAT } else { CONNECT_DIRECT }).await;
        if r.is_err() {
            direct_failed.notify_one();
        }
        r
    };
    // A node behind NAT may still be on this node's LAN: the direct dial gets a head start.
    let punch = async {
        let rv = brokered.ok_or(Failure::Skipped)?;
        let head_start = if behind_nat { PUNCH_AFTER_DIRECT } else { Duration::MAX };
        start_after(head_start, &direct_failed).await;
        let r = punch(d, rv, node).await.map_err(|e| Failure::Failed(format!("punch: {e}")));
        if r.is_err() {
            punch_failed.notify_one();
        }
        r
    };
    let relay = async {
        let rv = brokered.ok_or(Failure::Skipped)?;
        let head_start = if behind_nat { PUNCH_AFTER_DIRECT } else { Duration::MAX };
        start_after(head_start, &direct_failed).await;
        // The last dialer found only the relay gets through: no head start for the punch.
        if reach != Reach::Relay {
            start_after(RELAY_AFTER_PUNCH, &punch_failed).await;
        }
        relay(d, rv, node).await.map_err(|e| Failure::Failed(format!("relay: {e}")))
    };
    tokio::pin!(direct, punch, relay);
    let (mut direct_done, mut punch_done, mut relay_done) = (false, false, false);
    let mut failures = Vec::new();
    let mut note = |f: Failure| match f {
        Failure::Failed(why) => failures.push(why),
        Failure::Skipped => {}
    };
    while !(direct_done && punch_done && relay_done) {
        tokio::select! {
            r = &mut direct, if !direct_done => {
                direct_done = true;
                match r {
                    Ok(c) => return Ok(done(c, node, Path::Direct, counts)),
                    Err(DirectError::Refused(e)) if !behind_nat || !matches!(e, NetError::WrongNode { .. }) => return Err(e),
                    Err(DirectError::Refused(e)) => note(Failure::Failed(format!("direct: {e}"))),
                    Err(DirectError::Failed(why)) => why.into_iter().for_each(|w| note(Failure::Failed(w))),
                }
            }
            r = &mut punch, if !punch_done => {
                punch_done = true;
                match r {
                    Ok(c) => return Ok(done(c, node, Path::Punch, counts)),
                    Err(f) => note(f),
                }
            }
            r = &mut relay, if !relay_done => {
                relay_done = true;
                match r {
                    Ok(c) => return Ok(done(c, node, Path::Relay, counts)),
                    Err(f) => note(f),
                }
            }
        }
    }
    Err(unreachable(node, failures))
}

enum Failure {
    /// Not tried (no tracker to broker it, or the node is known to be directly reachable).
    Skipped,
    Failed(String),
}

enum DirectError {
    /// The node answered and refused us (not a member, another protocol version, or another
    /// node at that address): no other path gets further.
    Refused(NetError),
    /// What went wrong at each address.
    Failed(Vec<String>),
}

/// Dials `addrs` in order, each within `limit`.
async fn direct(d: &Dialer<'_>, node: NodeId, addrs: &[String], limit: Duration) -> Result<Connection, DirectError> {
    let mut failures = Vec::new();
    for addr in addrs {
        match tokio::time::timeout(limit, crate::rpc::dial_serving::<NoService>(d, addr, node, None)).await {
            Ok(Ok((c, _events))) => return Ok(c),
            Ok(Err(e @ (NetError::NotMember(_) | NetError::Version { .. } | NetError::WrongNode { .. }))) => {
                return Err(DirectError::Refused(e))
            }
            Ok(Err(e)) => failures.push(format!("direct to {addr}: {e}")),
            Err(_) => failures.push(format!("direct to {addr}: timed out")),
        }
    }
    if failures.is_empty() {
        failures.push("direct: no address to dial".into());
    }
    Err(DirectError::Failed(failures))
}

/// Waits `head_start`, or less if `earlier` is notified first.
async fn start_after(head_start: Duration, earlier: &Notify) {
    if head_start == Duration::MAX {
        earlier.notified().await;
        // Let the next one waiting on the same failure go too.
        earlier.notify_one();
        return;
    }
    tokio::select! {
        _ = tokio::time::sleep(head_start) => {}
        _ = earlier.notified() => earlier.notify_one(),
    }
}

fn done(c: Connection, node: NodeId, path: Path, counts: &PathCounts) -> (Connection, Path) {
    counts.count(path);
    // A path other than direct is rare and worth an operator's eye; direct is the norm.
    match path {
        Path::Direct => debug!(node = %node.short(), %path, "connected"),
        _ => info!(node = %node.short(), %path, "reached a node behind NAT"),
    }
    (c, path)
}

fn unreachable(node: NodeId, failures: Vec<String>) -> NetError {
    let tried = if failures.is_empty() { "no address to dial".to_string() } else { failures.join("; ") };
    NetError::Unreachable { node: node.short(), tried }
}

fn parse_addr(addr: &str) -> Result<SocketAddr, NetError> {
    addr.parse().map_err(|_| NetError::Refused(format!("{addr:?} is not an IP address and port")))
}

/// A TCP socket on `local` that another socket may share (SO_REUSEADDR and SO_REUSEPORT):
/// a punch connects from the port its tracker leg uses, while that leg is still open.
fn shared_port_socket(local: SocketAddr) -> std::io::Result<TcpSocket> {
    let s = if local.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
    s.set_reuseaddr(true)?;
    s.set_reuseport(true)?;
    s.bind(local)?;
    Ok(s)
}

/// A connection to the tracker from a fresh local port that a punch can reuse; the port.
async fn tracker_leg_from_fresh_port(d: &Dialer<'_>, rv: &Rendezvous) -> Result<(Connection, SocketAddr), NetError> {
    let tracker = parse_addr(&rv.addr)?;
    let any: SocketAddr = if tracker.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" }.parse().expect("static");
    let socket = shared_port_socket(any)?;
    let local = socket.local_addr()?;
    let tcp = tokio::time::timeout(RENDEZVOUS, socket.connect(tracker))
        .await
        .map_err(|_| NetError::Timeout("connecting to the tracker"))?
        .map_err(|source| NetError::Connect { addr: rv.addr.clone(), source })?;
    tcp.set_nodelay(true)?;
    let (conn, _events) = dial_over::<NoService, _>(tcp, tracker, d, &rv.addr, rv.node, None).await?;
    Ok((conn, local))
}

/// Connects from `local` to `remote` until the other side's simultaneous connect meets it
/// or `limit` passes.
async fn simultaneous_open(local: SocketAddr, remote: SocketAddr, limit: Duration) -> Result<TcpStream, NetError> {
    let deadline = tokio::time::Instant::now() + limit;
    let mut last: Option<std::io::Error> = None;
    while tokio::time::Instant::now() < deadline {
        let socket = shared_port_socket(local)?;
        match tokio::time::timeout_at(deadline, socket.connect(remote)).await {
            Ok(Ok(tcp)) => {
                tcp.set_nodelay(true)?;
                return Ok(tcp);
            }
            Ok(Err(e)) => {
                last = Some(e);
                tokio::time::sleep(PUNCH_RETRY).await;
            }
            Err(_) => break,
        }
    }
    Err(match last {
        Some(source) => NetError::Connect { addr: remote.to_string(), source },
        None => NetError::Timeout("punching through to the other side's NAT"),
    })
}

fn refused(resp: Response) -> NetError {
    match resp {
        Response::Error { message, .. } => NetError::Refused(message),
        other => NetError::Refused(format!("unexpected answer from the tracker: {other:?}")),
    }
}

/// Hole punching, the dialer's side; see the module docs. The outcome is reported to the
/// tracker (`Punched`), which shows it in `swarmfs peers`.
async fn punch(d: &Dialer<'_>, rv: &Rendezvous, node: NodeId) -> Result<Connection, NetError> {
    let (tracker, local) = tracker_leg_from_fresh_port(d, rv).await?;
    let (resp, _) = tracker.call_timeout(&Request::Punch { to: node }, bytes::Bytes::new(), RENDEZVOUS).await?;
    let Response::PunchAt { addr } = resp else { return Err(refused(resp)) };
    let remote = parse_addr(&addr)?;
    debug!(node = %node.short(), from = %local, to = %remote, "punching");
    let punched = async {
        let tcp = simultaneous_open(local, remote, PUNCH).await?;
        let (conn, _events) = dial_over::<NoService, _>(tcp, remote, d, &addr, node, None).await?;
        Ok(conn)
    }
    .await;
    // Briefly: a report that does not arrive in time only leaves `peers` showing less.
    let report = Request::Punched { to: node, ok: punched.is_ok() };
    let _ = tracker.call_timeout(&report, bytes::Bytes::new(), PUNCHED_REPORT).await;
    punched
}

/// A fresh connection to the tracker whose first request `req` takes it over (a relay leg):
/// the stream once the tracker said `Ok`.
async fn relay_leg(d: &Dialer<'_>, rv: &Rendezvous, req: &Request) -> Result<RawStream, NetError> {
    let tcp = tokio::time::timeout(RENDEZVOUS, TcpStream::connect(&rv.addr))
        .await
        .map_err(|_| NetError::Timeout("connecting to the tracker"))?
        .map_err(|source| NetError::Connect { addr: rv.addr.clone(), source })?;
    tcp.set_nodelay(true)?;
    let (mut tls, _) = secure_dialer(tcp, d, &rv.addr, rv.node).await?;
    let frame = swarmfs_proto::Frame::new(swarmfs_proto::FrameKind::Request, 1, req, bytes::Bytes::new());
    crate::io::write_frame(&mut tls, &frame).await?;
    tokio::io::AsyncWriteExt::flush(&mut tls).await?;
    let answer = tokio::time::timeout(RENDEZVOUS, read_frame(&mut tls))
        .await
        .map_err(|_| NetError::Timeout("waiting for the relay"))??
        .ok_or(NetError::Closed)?;
    match answer.decode_meta::<Response>()? {
        Response::Ok => Ok(Box::new(tls)),
        other => Err(refused(other)),
    }
}

/// The relay, the dialer's side: the connection to `node` runs inside the spliced leg.
async fn relay(d: &Dialer<'_>, rv: &Rendezvous, node: NodeId) -> Result<Connection, NetError> {
    let leg = relay_leg(d, rv, &Request::Relay { to: node }).await?;
    let via = parse_addr(&rv.addr)?;
    let label = format!("{} (relayed by {})", node.short(), rv.addr);
    let (conn, _events) = dial_over::<NoService, _>(leg, via, d, &label, node, None).await?;
    Ok(conn)
}

/// One `Rendezvous` order, as the target takes it.
#[derive(Debug)]
pub struct RendezvousOrder {
    pub token: u64,
    pub from: NodeId,
    pub path: RendezvousPath,
}

/// The target's side: opens the leg each order names and serves the connection that comes
/// over it with `service`, as if it had been accepted. At most
/// `MAX_RENDEZVOUS_CONNECTIONS` at once; returns on `shutdown` once they have ended.
pub async fn serve_rendezvous<S: Service>(
    mut orders: mpsc::Receiver<RendezvousOrder>,
    swarm: Arc<Swarm>,
    rv: Rendezvous,
    service: Arc<S>,
    role: Role,
    shutdown: CancellationToken,
) {
    let slots = Arc::new(Semaphore::new(MAX_RENDEZVOUS_CONNECTIONS));
    let mut conns = JoinSet::new();
    loop {
        let order = tokio::select! {
            o = orders.recv() => o,
            _ = shutdown.cancelled() => None,
            Some(_) = conns.join_next(), if !conns.is_empty() => continue,
        };
        let Some(order) = order else { break };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            info!(from = %order.from.short(), "too many relayed or punched connections; ignoring a rendezvous");
            continue;
        };
        let (swarm, rv, service, shutdown) = (swarm.clone(), rv.clone(), service.clone(), shutdown.clone());
        let path = match &order.path {
            RendezvousPath::Relay => "relay",
            RendezvousPath::Punch { .. } => "punch",
        };
        let span = tracing::debug_span!("rendezvous", from = %order.from.short(), path);
        conns.spawn(
            async move {
                let _slot = slot;
                if let Err(e) = answer_order(&swarm, &rv, order, service, role, shutdown).await {
                    debug!("rendezvous failed: {e}");
                }
            }
            .instrument(span),
        );
    }
    conns.shutdown().await;
}

async fn answer_order<S: Service>(
    swarm: &Swarm,
    rv: &Rendezvous,
    order: RendezvousOrder,
    service: Arc<S>,
    role: Role,
    shutdown: CancellationToken,
) -> Result<(), NetError> {
    let d = Dialer { identity: &swarm.identity, secret: &swarm.secret, member: None, role };
    let limits = Limits::default();
    match order.path {
        RendezvousPath::Relay => {
            let leg = relay_leg(&d, rv, &Request::RelayJoin { token: order.token }).await?;
            debug!(path = "relay", "serving a connection");
            crate::serve_over(leg, parse_addr(&rv.addr)?, swarm, service, &limits, shutdown).await
        }
        RendezvousPath::Punch { at } => {
            let remote = parse_addr(&at)?;
            let (tracker, local) = tracker_leg_from_fresh_port(&d, rv).await?;
            let (resp, _) = tracker
                .call_timeout(&Request::PunchReady { token: order.token }, bytes::Bytes::new(), RENDEZVOUS)
                .await?;
            if resp != Response::Ok {
                return Err(refused(resp));
            }
            let tcp = simultaneous_open(local, remote, PUNCH).await?;
            drop(tracker);
            debug!(path = "punch", %remote, "serving a connection");
            crate::serve_over(tcp, remote, swarm, service, &limits, shutdown).await
        }
    }
}

/// Splices a relay's two legs until either side closes or `shutdown`: bytes each way are
/// added to `bytes` as they pass, and both directions together are paced by `pacer`.
/// Returns the bytes relayed.
pub async fn splice(
    a: RawStream,
    b: RawStream,
    bytes: &AtomicU64,
    pacer: &crate::task::RateLimiter,
    shutdown: &CancellationToken,
) -> u64 {
    let (ar, aw) = tokio::io::split(a);
    let (br, bw) = tokio::io::split(b);
    let before = bytes.load(Ordering::Relaxed);
    tokio::select! {
        _ = async { tokio::join!(pipe(ar, bw, bytes, pacer), pipe(br, aw, bytes, pacer)) } => {}
        _ = shutdown.cancelled() => {}
    }
    bytes.load(Ordering::Relaxed).saturating_sub(before)
}

/// One direction of a splice; half-closes the writer when the reader ends.
async fn pipe<R, W>(mut r: R, mut w: W, bytes: &AtomicU64, pacer: &crate::task::RateLimiter)
where
    R: tokio::io::AsyncRead + Unpin,
    W: tokio::io::AsyncWrite + Unpin,
{
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match r.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        pacer.admit(n as u64).await;
        if w.write_all(&buf[..n]).await.is_err() {
            break;
        }
        if w.flush().await.is_err() {
            break;
        }
        bytes.fetch_add(n as u64, Ordering::Relaxed);
    }
    let _ = w.shutdown().await;
}
