//! The listener, who may ask, and where each request goes.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use swarmfs_client::cache::ChunkCache;
use swarmfs_client::{Client, ClientError, PutOptions};
use swarmfs_proto::ErrorCode;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::dashboard::Board;
use crate::metrics::GatewayMetrics;

/// A response body: whole (pages, errors) or streamed (files).
pub type Body = http_body_util::combinators::UnsyncBoxBody<Bytes, std::io::Error>;

pub struct GatewayOptions {
    /// Asked of every request but `/link/...` and the dashboard's static files. `None` only
    /// on a loopback address, where requests must name a loopback host instead.
    pub token: Option<String>,
    /// Refuse PUT and DELETE whatever the home's credential allows.
    pub read_only: bool,
    /// Decrypted chunks kept for readers (range requests, a video's seeks), in bytes.
    pub cache_bytes: usize,
    /// How PUT stores files.
    pub put: PutOptions,
    /// Connections served at once; more are answered 503 at once.
    pub max_connections: usize,
}

pub struct Gateway {
    pub(crate) client: Arc<Client>,
    pub(crate) cache: Arc<ChunkCache>,
    pub(crate) opts: GatewayOptions,
    pub(crate) metrics: GatewayMetrics,
    pub(crate) board: Board,
}

impl Gateway {
    pub fn new(client: Arc<Client>, opts: GatewayOptions) -> Arc<Gateway> {
        Arc::new(Gateway {
            client,
            cache: Arc::new(ChunkCache::new(opts.cache_bytes)),
            opts,
            metrics: GatewayMetrics::default(),
            board: Board::default(),
        })
    }
}

/// An answer other than success: its status and one line saying why.
#[derive(Debug)]
pub struct HttpError {
    pub status: StatusCode,
    pub message: String,
}

impl HttpError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> HttpError {
        HttpError { status, message: message.into() }
    }

    fn into_response(self) -> Response<Body> {
        let mut r = text(self.status, format!("{}\n", self.message));
        if self.status == StatusCode::UNAUTHORIZED {
            r.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        r
    }
}

/// How a client error reads over HTTP: what the tracker refused keeps its meaning, and what
/// the swarm could not do now is the gateway's upstream failing.
impl From<ClientError> for HttpError {
    fn from(e: ClientError) -> HttpError {
        let status = match e.code() {
            Some(ErrorCode::NotFound) => StatusCode::NOT_FOUND,
            Some(ErrorCode::Forbidden | ErrorCode::NotMember) => StatusCode::FORBIDDEN,
            Some(ErrorCode::AlreadyExists | ErrorCode::NotEmpty | ErrorCode::IsADirectory) => StatusCode::CONFLICT,
            Some(ErrorCode::NotADirectory) => StatusCode::CONFLICT,
            Some(ErrorCode::InvalidArgument) => StatusCode::BAD_REQUEST,
            Some(ErrorCode::NoSpace) => StatusCode::INSUFFICIENT_STORAGE,
            Some(ErrorCode::Busy) => StatusCode::SERVICE_UNAVAILABLE,
            _ => match e {
                ClientError::Usage(_) | ClientError::Invalid(_) => StatusCode::BAD_REQUEST,
                ClientError::NoDataKey => StatusCode::FORBIDDEN,
                ClientError::NoPeers
                | ClientError::NotEnoughPeers { .. }
                | ClientError::ChunkUnavailable { .. }
                | ClientError::PlacementFailed { .. } => StatusCode::SERVICE_UNAVAILABLE,
                _ => StatusCode::BAD_GATEWAY,
            },
        };
        HttpError::new(status, e.to_string())
    }
}

pub fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Body> {
    whole(status, "text/plain; charset=utf-8", body)
}

pub fn whole(status: StatusCode, content_type: &'static str, body: impl Into<Bytes>) -> Response<Body> {
    let body: Bytes = body.into();
    let mut r = Response::new(Full::new(body).map_err(|e: Infallible| match e {}).boxed_unsync());
    *r.status_mut() = status;
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

pub fn json(value: &serde_json::Value) -> Response<Body> {
    let mut r = whole(StatusCode::OK, "application/json", value.to_string());
    r.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

fn redirect(to: &str) -> Response<Body> {
    let mut r = text(StatusCode::FOUND, "");
    if let Ok(v) = HeaderValue::from_str(to) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    r
}

/// How long a client may take to send a request's head, and to stay idle between requests.
const HEAD_TIMEOUT: Duration = Duration::from_secs(10);
const TOO_MANY: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\nContent-Length: 50\r\nRetry-After: 1\r\nConnection: close\r\n\r\nthe gateway is at its connection limit; try again\n";

/// How long open responses may run on after shutdown before their connections are cut.
const DRAIN: Duration = Duration::from_secs(5);

/// Serves HTTP/1.1 on `listener` until `shutdown`, then lets answers in progress finish
/// (up to [`DRAIN`]) and returns once every connection task has ended.
pub async fn serve(listener: TcpListener, gw: Arc<Gateway>, shutdown: CancellationToken) {
    let slots = Arc::new(Semaphore::new(gw.opts.max_connections.max(1)));
    let mut conns = JoinSet::new();
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = shutdown.cancelled() => break,
            Some(_) = conns.join_next(), if !conns.is_empty() => continue,
        };
        let (tcp, remote) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of descriptors, most likely: wait for connections to end.
                warn!("gateway accept: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            // Full (perhaps of idle connections, which close after HEAD_TIMEOUT): say so at
            // once rather than leave the client waiting. A small write into a fresh socket's
            // empty buffer does not block.
            debug!(%remote, "gateway: too many connections");
            let _ = tcp.try_write(TOO_MANY);
            continue;
        };
        let (gw, shutdown) = (gw.clone(), shutdown.clone());
        conns.spawn(async move {
            let _slot = slot;
            serve_connection(tcp, remote, gw, shutdown).await
        });
    }
    if tokio::time::timeout(DRAIN + Duration::from_secs(1), async { while conns.join_next().await.is_some() {} })
        .await
        .is_err()
    {
        conns.shutdown().await;
    }
}

async fn serve_connection(
    tcp: tokio::net::TcpStream,
    remote: SocketAddr,
    gw: Arc<Gateway>,
    shutdown: CancellationToken,
) {
    let _ = tcp.set_nodelay(true);
    let service = hyper::service::service_fn(move |req| {
        let gw = gw.clone();
        async move { Ok::<_, Infallible>(handle(gw, req).await) }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEAD_TIMEOUT)
        .serve_connection(TokioIo::new(tcp), service);
    tokio::pin!(conn);
    let result = tokio::select! {
        r = conn.as_mut() => r,
        _ = shutdown.cancelled() => {
            conn.as_mut().graceful_shutdown();
            tokio::time::timeout(DRAIN, conn.as_mut()).await.unwrap_or(Ok(()))
        }
    };
    if let Err(e) = result {
        debug!(%remote, "http connection: {e}");
    }
}

async fn handle(gw: Arc<Gateway>, req: Request<Incoming>) -> Response<Body> {
    let started = Instant::now();
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let (route, answer) = route(&gw, req).await;
    let response = answer.unwrap_or_else(|e| {
        if e.status.is_server_error() {
            warn!(%method, path, "{}", e.message);
        }
        e.into_response()
    });
    gw.metrics.request(route, method.as_str(), response.status().as_u16(), started.elapsed());
    response
}

/// The route's name (a metrics label) and its answer.
async fn route(gw: &Arc<Gateway>, req: Request<Incoming>) -> (&'static str, Result<Response<Body>, HttpError>) {
    let path = req.uri().path().to_string();
    let read = matches!(*req.method(), Method::GET | Method::HEAD);
    // A link is its own credential, for one file; the page's code and style hold no data.
    if let Some(rest) = path.strip_prefix("/link/") {
        return ("link", crate::files::link(gw, &req, rest).await);
    }
    if read {
        if let Some(asset) = crate::dashboard::asset(&path) {
            return ("dashboard", Ok(asset));
        }
    }
    if let Err(e) = authorize(gw, &req) {
        return ("refused", Err(e));
    }
    match path.as_str() {
        "/" if read => ("dashboard", Ok(redirect("/dashboard"))),
        "/api/state" if read => ("api", Ok(json(&gw.board.state()))),
        "/api/chunks" if read => ("api", crate::dashboard::chunk_map(gw, req.uri().query()).await),
        "/metrics" if read => (
            "metrics",
            Ok(whole(StatusCode::OK, "text/plain; version=0.0.4; charset=utf-8", gw.metrics.render(&gw.cache))),
        ),
        p if p == "/files" || p.starts_with("/files/") => ("files", crate::files::handle(gw, req).await),
        "/" | "/api/state" | "/api/chunks" | "/metrics" => {
            ("other", Err(HttpError::new(StatusCode::METHOD_NOT_ALLOWED, "only GET and HEAD here")))
        }
        _ => (
            "other",
            Err(HttpError::new(
                StatusCode::NOT_FOUND,
                "no such page: files are under /files/, the dashboard at /dashboard, metrics at /metrics",
            )),
        ),
    }
}

/// With a token: the token, as a bearer header or a `token` query parameter (for links a
/// browser follows, such as a video's). Without one (a loopback bind): a loopback Host, so
/// a web page the user visits cannot reach the gateway through DNS rebinding.
fn authorize(gw: &Gateway, req: &Request<Incoming>) -> Result<(), HttpError> {
    match &gw.opts.token {
        Some(token) => {
            let bearer = req
                .headers()
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "))
                .map(str::trim);
            let query = req.uri().query().and_then(|q| query_param(q, "token"));
            let given = bearer.map(str::to_string).or(query);
            match given {
                Some(g) if constant_time_eq(g.as_bytes(), token.as_bytes()) => Ok(()),
                Some(_) => Err(HttpError::new(StatusCode::UNAUTHORIZED, "wrong gateway token")),
                None => Err(HttpError::new(
                    StatusCode::UNAUTHORIZED,
                    "this gateway needs its token: send 'Authorization: Bearer TOKEN' or add ?token=TOKEN",
                )),
            }
        }
        None => {
            let host = req.headers().get(header::HOST).and_then(|v| v.to_str().ok()).unwrap_or("");
            let name = match host.strip_prefix('[') {
                Some(v6) => v6.split(']').next().unwrap_or(""),
                None => host.rsplit_once(':').map(|(h, _)| h).unwrap_or(host),
            };
            if matches!(name, "localhost" | "127.0.0.1" | "::1") || name.ends_with(".localhost") {
                Ok(())
            } else {
                Err(HttpError::new(
                    StatusCode::FORBIDDEN,
                    "this gateway answers only requests for localhost (run it with --token to serve other hosts)",
                ))
            }
        }
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The first value of `name` in a query string, percent-decoded.
pub fn query_param(query: &str, name: &str) -> Option<String> {
    query.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        (k == name).then(|| percent_decode(&v.replace('+', " "))).flatten()
    })
}

/// `%XX` escapes decoded; `None` for a bad escape or bytes that are not UTF-8.
pub fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// A path segment (a file name) escaped for a URL: everything but unreserved characters.
pub fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_survive_a_round_trip_through_a_url() {
        for name in ["plain.txt", "with space", "ünïcødé", "a%b", "q?x#y", "a+b"] {
            assert_eq!(percent_decode(&percent_encode(name)).as_deref(), Some(name));
        }
        assert_eq!(percent_decode("%zz"), None);
        assert_eq!(percent_decode("%ff"), None, "not UTF-8");
        assert_eq!(query_param("a=1&path=%2Fx%20y&token=t", "path").as_deref(), Some("/x y"));
    }
}
