//! Multiplexed request/response over one authenticated connection.
//!
//! Each side runs a reader task and a writer task; the writer owns the write half and is fed
//! by a bounded channel, so callers never hold a lock across `.await`. Requests carry ids, so
//! many can be in flight at once; responses are matched back through a pending map. The
//! listener additionally pushes [`Event`] frames to subscribers.
//!
//! Connections are symmetric (protocol 5): either end may send requests. The listener calls
//! the dialer through [`ConnCtx::conn`]; the dialer answers them when it dialled with a
//! service ([`dial_serving`]), so a node that cannot be dialled (behind NAT) still takes
//! orders over the connection it opened. Each side matches responses to its own pending map,
//! so the two id spaces never meet.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use rustls::pki_types::ServerName;
use swarmfs_proto::authz::{authorize, Listener};
use swarmfs_proto::{
    Credential, ErrorCode, Event, Frame, FrameKind, Hello, LinkId, MemberKey, NodeId, Request, Response, Role,
    MAX_FRAME_LEN,
};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, BufReader, BufWriter};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot, Semaphore};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn, Instrument};

use crate::admission::{Admission, Pending};
use crate::auth::{hello_dialer, hello_listener, Secret, EXPORTER_LABEL};
use crate::beside::{Beside, Wire};
use crate::io::{read_frame_beside, write_frame, write_frame_beside};
use crate::tls::{client_config, node_id_of_cert, server_config, WRONG_NODE};
use crate::{Identity, NetError};

/// What a node needs to dial and to serve: its identity and the swarm secret (or, for a
/// link's holder, that link's secret).
pub struct Swarm {
    pub identity: Identity,
    pub secret: Secret,
    /// A member's own credential, proven on client connections (see [`dial`]).
    pub member: Option<MemberKey>,
}

/// Bounds for a listener. Connections that have proven membership and connections still in
/// their handshake are counted apart (see [`crate::admission`]).
#[derive(Clone, Debug)]
pub struct Limits {
    /// Authenticated connections at once.
    pub max_connections: usize,
    /// Connections in their handshake at once, and from one source address.
    pub max_pending: usize,
    pub max_pending_per_source: usize,
    pub max_in_flight_per_connection: usize,
    /// The whole handshake (TLS and the membership proof) must finish within this.
    pub handshake_timeout: Duration,
    /// Read and write buffer of each connection: large for chunk transfers (peers), small
    /// where only small messages go and connections are many (the tracker's 10,000 peers).
    pub io_buffer: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 1024,
            max_pending: 512,
            max_pending_per_source: 256,
            max_in_flight_per_connection: 64,
            handshake_timeout: Duration::from_secs(5),
            io_buffer: IO_BUFFER,
        }
    }
}

const OUTBOUND_QUEUE: usize = 64;
/// A connection's read and write buffer unless [`Limits::io_buffer`] says otherwise: a
/// chunk (1 MiB) in four reads.
const IO_BUFFER: usize = 256 * 1024;
const EVENT_QUEUE: usize = 4096;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The dialer's handle on a connection. Cheap to clone; the connection closes when the last
/// clone is dropped or either side fails.
#[derive(Clone)]
pub struct Connection {
    inner: Arc<Inner>,
}

struct Inner {
    remote: NodeId,
    tx: mpsc::Sender<Frame>,
    /// Shared with the handle a served request's context holds (see [`Inner::detached`]).
    pending: Arc<Mutex<HashMap<u64, oneshot::Sender<Frame>>>>,
    next_id: Arc<AtomicU64>,
    closed: CancellationToken,
}

impl Inner {
    /// A second handle on a connection's outbound side, for the context requests from the
    /// other end are handled in. Its `closed` is a child token: dropping it (when the
    /// context goes) does not close the connection.
    fn detached(&self) -> Inner {
        Inner {
            remote: self.remote,
            tx: self.tx.clone(),
            pending: self.pending.clone(),
            next_id: self.next_id.clone(),
            closed: self.closed.child_token(),
        }
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.closed.cancel();
    }
}

/// Removes a pending entry if the caller gives up (timeout, cancellation).
struct PendingGuard<'a> {
    inner: &'a Inner,
    id: u64,
}

impl Drop for PendingGuard<'_> {
    fn drop(&mut self) {
        self.inner.pending.lock().expect("pending lock").remove(&self.id);
    }
}

impl Connection {
    fn new(remote: NodeId, tx: mpsc::Sender<Frame>, closed: CancellationToken) -> Connection {
        let inner = Inner { remote, tx, pending: Default::default(), next_id: Arc::new(AtomicU64::new(1)), closed };
        Connection { inner: Arc::new(inner) }
    }

    /// Hands a response frame to the call waiting for it (if it has not given up).
    fn deliver(&self, f: Frame) {
        let waiter = self.inner.pending.lock().expect("pending lock").remove(&f.id);
        if let Some(waiter) = waiter {
            let _ = waiter.send(f);
        }
    }

    pub fn remote(&self) -> NodeId {
        self.inner.remote
    }

    pub fn is_closed(&self) -> bool {
        self.inner.closed.is_cancelled()
    }

    /// Resolves when the connection has closed.
    pub async fn closed(&self) {
        self.inner.closed.cancelled().await
    }

    pub async fn call(&self, req: &Request, payload: Bytes) -> Result<(Response, Bytes), NetError> {
        if self.is_closed() {
            return Err(NetError::Closed);
        }
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let (otx, orx) = oneshot::channel();
        self.inner.pending.lock().expect("pending lock").insert(id, otx);
        let _guard = PendingGuard { inner: &self.inner, id };
        let mut frame = Frame::new(FrameKind::Request, id, req, payload);
        // The peer checks the chunk against its id before storing it (see `crate::beside`).
        if matches!(req, Request::PutChunk { .. }) {
            frame = frame.sealed_payload();
        }
        self.inner.tx.send(frame).await.map_err(|_| NetError::Closed)?;
        let frame = tokio::select! {
            r = orx => r.map_err(|_| NetError::Closed)?,
            _ = self.inner.closed.cancelled() => return Err(NetError::Closed),
        };
        Ok((frame.decode_meta()?, frame.payload))
    }

    pub async fn call_timeout(
        &self,
        req: &Request,
        payload: Bytes,
        limit: Duration,
    ) -> Result<(Response, Bytes), NetError> {
        tokio::time::timeout(limit, self.call(req, payload))
            .await
            .map_err(|_| NetError::Timeout("waiting for a reply"))?
    }
}

/// Dials `addr`, requires its certificate to be `expected`'s, proves membership, and
/// returns the connection plus the events the other side pushes. Requests the other side
/// sends back are answered `Unsupported` (see [`dial_serving`]).
pub async fn dial(
    swarm: &Swarm,
    addr: &str,
    expected: NodeId,
    role: Role,
) -> Result<(Connection, mpsc::Receiver<Event>), NetError> {
    dial_with(&swarm.identity, &swarm.secret, swarm.member.as_ref(), addr, expected, role).await
}

/// [`dial`] with another secret than the node's own: a member dialling a link holder's
/// source proves that link (see [`crate::Pool::get_via`]).
pub async fn dial_with(
    identity: &Identity,
    secret: &Secret,
    member: Option<&MemberKey>,
    addr: &str,
    expected: NodeId,
    role: Role,
) -> Result<(Connection, mpsc::Receiver<Event>), NetError> {
    let dialer = Dialer { identity, secret, member, role };
    dial_serving::<NoService>(&dialer, addr, expected, None).await
}

/// Who dials, with what.
pub struct Dialer<'a> {
    pub identity: &'a Identity,
    pub secret: &'a Secret,
    pub member: Option<&'a MemberKey>,
    pub role: Role,
}

/// [`dial`], and serve the requests the other side sends over this connection with
/// `service` (authorized as [`Service::dialed_credential`] says): a peer's session with the
/// tracker, so the tracker's orders reach it whether or not it can be dialled.
pub async fn dial_serving<S: Service>(
    d: &Dialer<'_>,
    addr: &str,
    expected: NodeId,
    service: Option<Arc<S>>,
) -> Result<(Connection, mpsc::Receiver<Event>), NetError> {
    let tcp = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr))
        .await
        .map_err(|_| NetError::Connect { addr: addr.into(), source: std::io::ErrorKind::TimedOut.into() })?
        .map_err(|source| NetError::Connect { addr: addr.into(), source })?;
    tcp.set_nodelay(true)?;
    let remote_addr = tcp.peer_addr()?;
    dial_over(tcp, remote_addr, d, addr, expected, service).await
}

/// [`dial_serving`] over a stream that is already open (TCP, or a relayed stream inside
/// another connection): TLS pinned to `expected`, the hello, then requests both ways.
/// `addr` names the other end in errors and logs.
pub async fn dial_over<S: Service, T: AsyncRead + AsyncWrite + Unpin + Send + 'static>(
    stream: T,
    remote_addr: SocketAddr,
    d: &Dialer<'_>,
    addr: &str,
    expected: NodeId,
    service: Option<Arc<S>>,
) -> Result<(Connection, mpsc::Receiver<Event>), NetError> {
    let (tls, beside) = secure_dialer(stream, d, addr, expected).await?;

    let (r, w) = tokio::io::split(tls);
    let (tx, rx) = mpsc::channel(OUTBOUND_QUEUE);
    let (etx, erx) = mpsc::channel(EVENT_QUEUE);
    let conn = Connection::new(expected, tx.clone(), CancellationToken::new());
    let span = tracing::debug_span!("conn", remote = %expected.short(), addr);
    let writer = writer_loop(w, rx, conn.inner.closed.clone(), IO_BUFFER, beside.clone());
    tokio::spawn(writer.instrument(span.clone()));
    let weak = Arc::downgrade(&conn.inner);
    let closed = conn.inner.closed.clone();
    // The requests the other side sends back, if this end serves: the context they are
    // handled in holds only a weak handle, so dropping every `Connection` still closes it.
    let served = service.map(|s| {
        let credential = s.dialed_credential(expected);
        // The listener's role is not known to the dialer; `credential` is what counts.
        let ctx = ConnCtx {
            remote: expected,
            role: Role::Peer,
            credential,
            remote_addr,
            closed: closed.clone(),
            conn: Connection { inner: Arc::new(conn.inner.detached()) },
            out: conn.inner.tx.clone(),
        };
        (s, Arc::new(ctx), Arc::new(Semaphore::new(Limits::default().max_in_flight_per_connection)))
    });
    tokio::spawn(
        async move {
            let mut r = BufReader::with_capacity(IO_BUFFER, r);
            loop {
                let frame = tokio::select! {
                    f = read_frame_beside(&mut r, MAX_FRAME_LEN, Some(&beside)) => f,
                    _ = closed.cancelled() => break,
                };
                match frame {
                    Ok(Some(f)) if f.kind == FrameKind::Response => {
                        let Some(inner) = weak.upgrade() else { break };
                        Connection { inner }.deliver(f);
                    }
                    Ok(Some(f)) if f.kind == FrameKind::Event => match f.decode_meta::<Event>() {
                        Ok(ev) => {
                            if let Err(mpsc::error::TrySendError::Full(_)) = etx.try_send(ev) {
                                warn!("event queue full; dropping an event");
                            }
                        }
                        Err(e) => {
                            warn!("undecodable event: {e}");
                            break;
                        }
                    },
                    Ok(Some(f)) if f.kind == FrameKind::Request => {
                        let Some(inner) = weak.upgrade() else { break };
                        match &served {
                            Some((service, ctx, in_flight)) => {
                                let req: Request = match f.decode_meta() {
                                    Ok(r) => r,
                                    Err(e) => {
                                        warn!("undecodable request from the listener: {e}");
                                        break;
                                    }
                                };
                                let permit = in_flight.clone().acquire_owned().await.expect("never closed");
                                tokio::spawn(answer(service.clone(), ctx.clone(), req, f.id, f.payload, permit));
                            }
                            None => {
                                let resp = Response::error(ErrorCode::Unsupported, "this node takes no requests here");
                                let _ = inner.tx.send(Frame::new(FrameKind::Response, f.id, &resp, Bytes::new())).await;
                            }
                        }
                    }
                    Ok(Some(_)) => {
                        warn!("unexpected frame kind from listener");
                        break;
                    }
                    Ok(None) => break,
                    Err(e) => {
                        debug!("read failed: {e}");
                        break;
                    }
                }
            }
            closed.cancel();
            if let Some(inner) = weak.upgrade() {
                inner.pending.lock().expect("pending lock").clear();
            }
        }
        .instrument(span),
    );
    Ok((conn, erx))
}

/// The dialer's half of setting up a connection over an open stream: TLS pinned to
/// `expected`, then the hello. What runs over it next is RPC ([`dial_over`]) or, on a relay's
/// legs, one request and then raw bytes.
pub(crate) async fn secure_dialer<T: AsyncRead + AsyncWrite + Unpin>(
    stream: T,
    d: &Dialer<'_>,
    addr: &str,
    expected: NodeId,
) -> Result<(tokio_rustls::client::TlsStream<Wire<T>>, Beside), NetError> {
    let connector = tokio_rustls::TlsConnector::from(client_config(d.identity, expected));
    let name = ServerName::try_from("swarmfs").expect("static name");
    let (wire, beside) = Wire::new(stream);
    let mut tls = tokio::time::timeout(CONNECT_TIMEOUT, connector.connect(name, wire))
        .await
        .map_err(|_| NetError::Timeout("in the TLS handshake"))?
        .map_err(|e| tls_error(addr, expected, e))?;
    let exporter = tls
        .get_ref()
        .1
        .export_keying_material([0u8; 32], EXPORTER_LABEL, None)
        .map_err(|e| NetError::Tls { addr: addr.into(), reason: e.to_string() })?;
    // A member proves its own credential on the connections it makes as a client; a peer's
    // session is a storage peer's, whoever runs it.
    let member = if d.role == Role::Client { d.member } else { None };
    tokio::time::timeout(CONNECT_TIMEOUT, hello_dialer(&mut tls, d.secret, member, &exporter, d.role))
        .await
        .map_err(|_| NetError::Timeout("waiting for the hello reply"))??;
    // Both ends speak this protocol: sealed chunks may go beside TLS from now on.
    beside.enable();
    Ok((tls, beside))
}

/// Authorizes and handles one request, then sends its response: the same on both ends.
async fn answer<S: Service>(
    service: Arc<S>,
    ctx: Arc<ConnCtx>,
    req: Request,
    id: u64,
    payload: Bytes,
    _permit: tokio::sync::OwnedSemaphorePermit,
) {
    let started = std::time::Instant::now();
    let (kind, bytes_in) = (req.name(), payload.len());
    // A whole chunk, which its receiver checks against its id (see `crate::beside`).
    let whole_chunk = matches!(req, Request::GetChunk { offset: 0, len: u64::MAX, .. });
    // The one place requests are authorized: by what the connection proved.
    let (resp, payload) = match authorize(service.listener(), &req, &ctx.credential) {
        Ok(()) => service.handle(&ctx, req, payload).await,
        Err(why) => (Response::error(ErrorCode::Forbidden, why), Bytes::new()),
    };
    if let Some(m) = service.metrics() {
        let result = match &resp {
            Response::Error { code, .. } => code.as_str(),
            _ => "ok",
        };
        m.request(kind, result, started.elapsed(), bytes_in, payload.len());
    }
    let mut frame = Frame::new(FrameKind::Response, id, &resp, payload);
    if whole_chunk && matches!(resp, Response::Chunk) {
        frame = frame.sealed_payload();
    }
    let _ = ctx.out.send(frame).await;
}

/// A dialer that serves nothing (its `Option<Arc<NoService>>` is always `None`).
pub enum NoService {}

impl Service for NoService {
    fn listener(&self) -> Listener {
        match *self {}
    }

    async fn handle(&self, _ctx: &Arc<ConnCtx>, _req: Request, _payload: Bytes) -> (Response, Bytes) {
        match *self {}
    }
}

fn tls_error(addr: &str, expected: NodeId, e: std::io::Error) -> NetError {
    let rustls_err = e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>());
    match rustls_err {
        Some(rustls::Error::General(m)) if m == WRONG_NODE => {
            NetError::WrongNode { addr: addr.into(), expected: expected.short() }
        }
        _ => NetError::Tls { addr: addr.into(), reason: e.to_string() },
    }
}

async fn writer_loop<W: AsyncWrite + Unpin>(
    w: W,
    mut rx: mpsc::Receiver<Frame>,
    closed: CancellationToken,
    buffer: usize,
    beside: Beside,
) {
    let mut w = BufWriter::with_capacity(buffer, w);
    loop {
        let frame = tokio::select! {
            f = rx.recv() => f,
            _ = closed.cancelled() => None,
        };
        let Some(frame) = frame else { break };
        if let Err(e) = write_frame_beside(&mut w, &frame, Some(&beside)).await {
            debug!("write failed: {e}");
            break;
        }
        // Flush only when nothing else is queued: batches small frames into few records.
        if rx.is_empty() {
            if let Err(e) = w.flush().await {
                debug!("flush failed: {e}");
                break;
            }
        }
    }
    let _ = w.shutdown().await;
    closed.cancel();
}

/// The listener's view of one connection, handed to every request it carries.
pub struct ConnCtx {
    pub remote: NodeId,
    /// What the dialer says it is (a claim; see `credential`).
    pub role: Role,
    /// What the dialer proved, as the service's `admit` decided: rights come from here.
    pub credential: Credential,
    pub remote_addr: SocketAddr,
    /// Cancelled when the connection ends.
    pub closed: CancellationToken,
    /// Requests to the other end, over this same connection (it answers them if it serves).
    pub conn: Connection,
    out: mpsc::Sender<Frame>,
}

impl ConnCtx {
    /// Pushes an event to the dialer; fails once the connection has closed.
    pub async fn push_event(&self, ev: &Event) -> Result<(), NetError> {
        self.out.send(Frame::new(FrameKind::Event, 0, ev, Bytes::new())).await.map_err(|_| NetError::Closed)
    }
}

/// What a listener does with requests.
pub trait Service: Send + Sync + 'static {
    /// Which row of the authorization table ([`swarmfs_proto::authz`]) applies. Every
    /// request is checked against it, with the connection's credential, before `handle`.
    fn listener(&self) -> Listener;

    /// Decides what a dialer that proved the swarm secret has proven beyond it (its NodeId
    /// is pinned by TLS); `Err` refuses the connection with that reason. By default: the
    /// swarm secret only.
    fn admit(&self, _remote: NodeId, _hello: &Hello, _exporter: &[u8; 32]) -> Result<Credential, String> {
        Ok(Credential::Peer)
    }

    /// Decides whether a dialer that proved link `id`'s secret is admitted (as
    /// [`Credential::Link`]). By default yes: a node that holds no namespace serves chunks
    /// by id to a link's holder as to anyone, and the tracker answers for the rest.
    fn admit_link(&self, _remote: NodeId, _id: LinkId) -> Result<(), String> {
        Ok(())
    }

    /// What the node at the other end of a connection this node dialled has proven, for
    /// the requests it sends back over it: its NodeId is pinned by TLS. By default a peer.
    fn dialed_credential(&self, _remote: NodeId) -> Credential {
        Credential::Peer
    }

    /// Called once when a connection has been admitted, before its first request.
    fn on_open(&self, _ctx: &Arc<ConnCtx>) {}

    fn handle(
        &self,
        ctx: &Arc<ConnCtx>,
        req: Request,
        payload: Bytes,
    ) -> impl Future<Output = (Response, Bytes)> + Send;

    /// Where this node counts the requests it answers (`--metrics`); none by default.
    fn metrics(&self) -> Option<&crate::metrics::Metrics> {
        None
    }

    /// Whether this listener serves requests that take their connection over
    /// ([`Request::takes_over_connection`]: a relay's legs). Only such a listener reads a
    /// connection's first frame before serving the connection as requests.
    fn takes_over(&self) -> bool {
        false
    }

    /// Handles a request that came first on its connection and takes it over; authorized
    /// like any request before this is called. `stream` is just past the request: the
    /// answer, and whatever follows, are the handler's to write.
    fn take_over(
        &self,
        _first: FirstRequest,
        _stream: RawStream,
        _shutdown: CancellationToken,
    ) -> impl Future<Output = ()> + Send {
        async {}
    }

    /// Called once when a connection that passed the hello ends.
    fn on_close(&self, _ctx: &Arc<ConnCtx>) -> impl Future<Output = ()> + Send {
        async {}
    }
}

/// Any stream a connection can run over, boxed: a relay's legs are handed around as these.
pub trait RawIo: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> RawIo for T {}
pub type RawStream = Box<dyn RawIo>;

/// A request that took its connection over, with what the connection proved.
pub struct FirstRequest {
    pub remote: NodeId,
    pub credential: Credential,
    pub remote_addr: SocketAddr,
    /// The frame id its answer must carry.
    pub id: u64,
    pub req: Request,
}

/// Writes one response frame and flushes it: for a stream that is not running RPC.
pub async fn answer_raw<W: AsyncWrite + Unpin + ?Sized>(w: &mut W, id: u64, resp: &Response) -> Result<(), NetError> {
    let mut w = w;
    write_frame(&mut w, &Frame::new(FrameKind::Response, id, resp, Bytes::new())).await?;
    w.flush().await?;
    Ok(())
}

/// Accepts connections until `shutdown` is cancelled. A connection that fails the handshake,
/// or sends a malformed or oversized frame, is closed alone; the listener keeps serving.
pub async fn serve<S: Service>(
    listener: TcpListener,
    swarm: Arc<Swarm>,
    service: Arc<S>,
    limits: Limits,
    shutdown: CancellationToken,
) {
    let acceptor = tokio_rustls::TlsAcceptor::from(server_config(&swarm.identity));
    let conns = Arc::new(Semaphore::new(limits.max_connections));
    let admission = Admission::new(limits.max_pending, limits.max_pending_per_source);
    let mut evictions = 0u64;
    loop {
        let (tcp, remote_addr) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = shutdown.cancelled() => break,
        };
        let (pending, evicted) = admission.admit(remote_addr.ip());
        if evicted {
            // Logged sparingly: a flood would otherwise become a flood of log lines.
            evictions += 1;
            if evictions.is_power_of_two() {
                warn!(%remote_addr, evictions, "too many unauthenticated connections; closing the oldest");
            }
        }
        let (acceptor, swarm, service, limits, shutdown, conns) =
            (acceptor.clone(), swarm.clone(), service.clone(), limits.clone(), shutdown.clone(), conns.clone());
        let span = tracing::debug_span!("conn", %remote_addr);
        tokio::spawn(
            async move {
                match serve_conn(tcp, remote_addr, pending, acceptor, &swarm, service, &limits, &conns, shutdown).await
                {
                    // A wrong proof or version took a whole TLS handshake to send: worth a
                    // line. Garbage, timeouts and evictions are what floods are made of.
                    Err(e @ (NetError::NotMember(_) | NetError::Version { .. })) => {
                        info!("connection from {remote_addr} closed: {e}")
                    }
                    Err(e) => debug!("connection from {remote_addr} closed: {e}"),
                    Ok(()) => {}
                }
            }
            .instrument(span),
        );
    }
}

/// TLS, then the membership proof; the dialer's NodeId, claimed role and proven credential.
async fn handshake<S: Service, T: AsyncRead + AsyncWrite + Unpin>(
    tcp: T,
    addr: &str,
    acceptor: tokio_rustls::TlsAcceptor,
    swarm: &Swarm,
    service: &S,
) -> Result<(tokio_rustls::server::TlsStream<Wire<T>>, Beside, NodeId, Role, Credential), NetError> {
    let (wire, beside) = Wire::new(tcp);
    let mut tls =
        acceptor.accept(wire).await.map_err(|e| NetError::Tls { addr: addr.into(), reason: e.to_string() })?;
    let (remote, exporter) = {
        let conn = tls.get_ref().1;
        let remote = conn
            .peer_certificates()
            .and_then(|c| c.first())
            .and_then(|c| node_id_of_cert(c))
            .ok_or_else(|| NetError::Tls { addr: addr.into(), reason: "no node certificate".into() })?;
        let exporter = conn
            .export_keying_material([0u8; 32], EXPORTER_LABEL, None)
            .map_err(|e| NetError::Tls { addr: addr.into(), reason: e.to_string() })?;
        (remote, exporter)
    };
    let (hello, credential) = hello_listener(&mut tls, &swarm.secret, &exporter, |hello| match hello.link {
        Some(id) => service.admit_link(remote, id).map(|()| Credential::Link { id }),
        None => service.admit(remote, hello, &exporter),
    })
    .await?;
    // The hello reply is out: the dialer sends units only after it.
    beside.enable();
    Ok((tls, beside, remote, hello.role, credential))
}

#[allow(clippy::too_many_arguments)]
async fn serve_conn<S: Service>(
    tcp: TcpStream,
    remote_addr: SocketAddr,
    pending: Pending,
    acceptor: tokio_rustls::TlsAcceptor,
    swarm: &Swarm,
    service: Arc<S>,
    limits: &Limits,
    conns: &Arc<Semaphore>,
    shutdown: CancellationToken,
) -> Result<(), NetError> {
    tcp.set_nodelay(true)?;
    let addr = remote_addr.to_string();
    let (tls, beside, remote, role, credential) = tokio::select! {
        r = tokio::time::timeout(limits.handshake_timeout, handshake(tcp, &addr, acceptor, swarm, &*service)) => {
            r.map_err(|_| NetError::Timeout("in the handshake"))??
        }
        _ = pending.evicted.cancelled() => return Err(NetError::Evicted),
        _ = shutdown.cancelled() => return Ok(()),
    };
    drop(pending);
    let Ok(_permit) = conns.clone().try_acquire_owned() else {
        warn!(%remote_addr, "authenticated connection limit reached; refusing");
        return Err(NetError::Closed);
    };
    debug!(remote = %remote.short(), %role, %credential, "connection authenticated");
    let mut tls = tls;
    let mut first = None;
    if service.takes_over() {
        let frame = tokio::select! {
            f = read_frame_beside(&mut tls, MAX_FRAME_LEN, Some(&beside)) => f?,
            _ = shutdown.cancelled() => return Ok(()),
        };
        let Some(frame) = frame else { return Ok(()) };
        if frame.kind == FrameKind::Request {
            if let Ok(req) = frame.decode_meta::<Request>() {
                if req.takes_over_connection() {
                    return match authorize(service.listener(), &req, &credential) {
                        Ok(()) => {
                            let first = FirstRequest { remote, credential, remote_addr, id: frame.id, req };
                            service.take_over(first, Box::new(tls), shutdown).await;
                            Ok(())
                        }
                        Err(why) => answer_raw(&mut tls, frame.id, &Response::error(ErrorCode::Forbidden, why)).await,
                    };
                }
            }
        }
        first = Some(frame);
    }
    let who = Remote { remote, role, credential, remote_addr };
    run_listener(tls, beside, who, service, limits, shutdown, first).await
}

/// Who is at the other end of an accepted connection, as its handshake proved.
struct Remote {
    remote: NodeId,
    role: Role,
    credential: Credential,
    remote_addr: SocketAddr,
}

/// Serves one connection over a stream that is already open (a relayed stream inside
/// another connection): TLS, the hello, then requests both ways, as [`serve`] does for each
/// connection it accepts. Returns when the connection ends.
pub async fn serve_over<S: Service, T: AsyncRead + AsyncWrite + Unpin + Send + 'static>(
    stream: T,
    remote_addr: SocketAddr,
    swarm: &Swarm,
    service: Arc<S>,
    limits: &Limits,
    shutdown: CancellationToken,
) -> Result<(), NetError> {
    let acceptor = tokio_rustls::TlsAcceptor::from(server_config(&swarm.identity));
    let addr = remote_addr.to_string();
    let (tls, beside, remote, role, credential) = tokio::select! {
        r = tokio::time::timeout(limits.handshake_timeout, handshake(stream, &addr, acceptor, swarm, &*service)) => {
            r.map_err(|_| NetError::Timeout("in the handshake"))??
        }
        _ = shutdown.cancelled() => return Ok(()),
    };
    let who = Remote { remote, role, credential, remote_addr };
    run_listener(tls, beside, who, service, limits, shutdown, None).await
}

/// The listener's side of an authenticated connection: answers requests, delivers the
/// answers to its own calls, until either end closes or `shutdown`. `first` is a frame
/// already read off the stream (see [`Service::takes_over`]).
async fn run_listener<S: Service, T: AsyncRead + AsyncWrite + Send + 'static>(
    tls: T,
    beside: Beside,
    who: Remote,
    service: Arc<S>,
    limits: &Limits,
    shutdown: CancellationToken,
    mut first: Option<Frame>,
) -> Result<(), NetError> {
    let Remote { remote, role, credential, remote_addr } = who;
    let (r, w) = tokio::io::split(tls);
    let (out, rx) = mpsc::channel(OUTBOUND_QUEUE);
    let closed = shutdown.child_token();
    tokio::spawn(writer_loop(w, rx, closed.clone(), limits.io_buffer, beside.clone()).in_current_span());
    // Calls to the dialer: a child token, so the handle going away never closes the
    // connection, while the connection closing fails every call on it.
    let conn = Connection::new(remote, out.clone(), closed.child_token());
    let ctx = Arc::new(ConnCtx { remote, role, credential, remote_addr, closed: closed.clone(), conn, out });
    service.on_open(&ctx);
    if let Some(m) = service.metrics() {
        m.connection_opened();
    }
    let in_flight = Arc::new(Semaphore::new(limits.max_in_flight_per_connection));
    let mut r = BufReader::with_capacity(limits.io_buffer, r);
    let result = loop {
        let frame = match first.take() {
            Some(f) => Ok(Some(f)),
            None => tokio::select! {
                f = read_frame_beside(&mut r, MAX_FRAME_LEN, Some(&beside)) => f,
                _ = closed.cancelled() => break Ok(()),
            },
        };
        let frame = match frame {
            Ok(Some(f)) => f,
            Ok(None) => break Ok(()),
            Err(e) => break Err(e),
        };
        match frame.kind {
            // The answer to a request this end sent over the connection.
            FrameKind::Response => {
                ctx.conn.deliver(frame);
                continue;
            }
            FrameKind::Request => {}
            _ => break Err(NetError::Proto(swarmfs_proto::ProtoError::Malformed("expected a request"))),
        }
        let req: Request = match frame.decode_meta() {
            Ok(r) => r,
            Err(e) => break Err(e.into()),
        };
        let permit = in_flight.clone().acquire_owned().await.expect("never closed");
        let (ctx, service) = (ctx.clone(), service.clone());
        tokio::spawn(answer(service, ctx, req, frame.id, frame.payload, permit).in_current_span());
    };
    closed.cancel();
    if let Some(m) = service.metrics() {
        m.connection_closed();
    }
    service.on_close(&ctx).await;
    result
}

/// Helper for tests and tools: a TLS connection with no hello yet (what a stranger gets).
#[doc(hidden)]
pub async fn dial_tls(
    identity: &Identity,
    addr: &str,
    expected: NodeId,
) -> Result<tokio_rustls::client::TlsStream<TcpStream>, NetError> {
    let tcp = TcpStream::connect(addr).await.map_err(|source| NetError::Connect { addr: addr.into(), source })?;
    let connector = tokio_rustls::TlsConnector::from(client_config(identity, expected));
    connector
        .connect(ServerName::try_from("swarmfs").expect("static"), tcp)
        .await
        .map_err(|e| tls_error(addr, expected, e))
}

/// Helper for tests and tools: a TLS+hello connection that sends raw bytes.
#[doc(hidden)]
pub async fn dial_raw(
    swarm: &Swarm,
    addr: &str,
    expected: NodeId,
) -> Result<impl AsyncRead + AsyncWrite + Unpin, NetError> {
    let mut tls = dial_tls(&swarm.identity, addr, expected).await?;
    let exporter = tls
        .get_ref()
        .1
        .export_keying_material([0u8; 32], EXPORTER_LABEL, None)
        .map_err(|e| NetError::Tls { addr: addr.into(), reason: e.to_string() })?;
    hello_dialer(&mut tls, &swarm.secret, swarm.member.as_ref(), &exporter, Role::Client).await?;
    Ok(tls)
}
