//! `/files/PATH`: the namespace over HTTP. GET and HEAD with ranges, conditional requests
//! and listings; PUT and DELETE for a gateway whose home may write. `/link/LINK`: one file
//! by a link, for anyone who holds it.

use std::fmt::Write as _;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::TryStreamExt;
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use swarmfs_client::{views, Client};
use swarmfs_core::Manifest;
use swarmfs_proto::{EntryInfo, EntryKind, ErrorCode, RemotePath};
use tokio_util::io::{StreamReader, SyncIoBridge};

use crate::body::{self, Part, Source};
use crate::range::{self, Ranges};
use crate::server::{json, percent_decode, percent_encode, query_param, text, whole, Body, Gateway, HttpError};

pub async fn handle(gw: &Arc<Gateway>, req: Request<Incoming>) -> Result<Response<Body>, HttpError> {
    let raw = req.uri().path().strip_prefix("/files").unwrap_or_default();
    let decoded =
        percent_decode(raw).ok_or_else(|| HttpError::new(StatusCode::BAD_REQUEST, "a bad %-escape in the path"))?;
    let as_dir = decoded.is_empty() || decoded.ends_with('/');
    let trimmed = decoded.trim_end_matches('/');
    let remote = RemotePath::parse(if trimmed.is_empty() { "/" } else { trimmed })
        .map_err(|e| HttpError::new(StatusCode::BAD_REQUEST, e.to_string()))?;
    match *req.method() {
        Method::GET | Method::HEAD if remote.is_root() => listing(gw, &req, &remote, as_dir).await,
        Method::GET | Method::HEAD => match gw.client.open(&remote).await {
            Ok((entry, manifest)) => serve_file(gw, &req, gw.client.clone(), &entry, manifest).await,
            Err(e) if e.code() == Some(ErrorCode::IsADirectory) => listing(gw, &req, &remote, as_dir).await,
            Err(e) => Err(e.into()),
        },
        Method::PUT => put(gw, req, &remote).await,
        Method::DELETE => delete(gw, &req, &remote).await,
        _ => Err(HttpError::new(StatusCode::METHOD_NOT_ALLOWED, "files take GET, HEAD, PUT and DELETE")),
    }
}

/// `/link/LINK[/NAME]`: the link's file, read with the link's own credential (a fresh
/// connection that can open that file and nothing else). NAME is free, so a browser saves
/// the file under a name.
pub async fn link(gw: &Arc<Gateway>, req: &Request<Incoming>, rest: &str) -> Result<Response<Body>, HttpError> {
    if !matches!(*req.method(), Method::GET | Method::HEAD) {
        return Err(HttpError::new(StatusCode::METHOD_NOT_ALLOWED, "links are read-only: GET or HEAD"));
    }
    let encoded = rest.split('/').next().unwrap_or_default();
    let link = swarmfs_core::Link::decode(encoded)
        .map_err(|e| HttpError::new(StatusCode::BAD_REQUEST, format!("not a swarmfs link: {e}")))?;
    let (client, _swarm) = Client::connect_link(&link).await?;
    let (entry, manifest) = client.open_link(&link).await?;
    serve_file(gw, req, Arc::new(client), &entry, manifest).await
}

async fn serve_file(
    gw: &Arc<Gateway>,
    req: &Request<Incoming>,
    client: Arc<Client>,
    entry: &EntryInfo,
    manifest: Manifest,
) -> Result<Response<Body>, HttpError> {
    let size = manifest.size;
    let etag = etag(&manifest);
    let name = entry.path.rsplit('/').next().unwrap_or_default();
    let content_type = content_type(name);
    let mut headers = HeaderMap::new();
    headers.insert(header::ETAG, value(&etag));
    headers.insert(header::LAST_MODIFIED, value(&http_date(manifest.mtime_ms)));
    headers.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    // The same path can hold new content at any time: revalidate, by ETag.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    // Stored HTML must not run scripts in the gateway's origin (its API, its token).
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static("sandbox"));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));

    if let Some(inm) = header_str(req, header::IF_NONE_MATCH) {
        if inm.split(',').map(|t| t.trim().trim_start_matches("W/")).any(|t| t == etag || t == "*") {
            return Ok(respond(StatusCode::NOT_MODIFIED, headers, empty()));
        }
    }
    // If-Range: a range of this version only; of another, the whole new version.
    let ranges = match (header_str(req, header::RANGE), header_str(req, header::IF_RANGE)) {
        (Some(r), None) => range::parse(r, size),
        (Some(r), Some(v)) if v.trim() == etag => range::parse(r, size),
        _ => Ranges::Full,
    };
    let (status, parts, length) = match ranges {
        Ranges::Unsatisfiable => {
            headers.insert(header::CONTENT_RANGE, value(&format!("bytes */{size}")));
            let mut r = text(StatusCode::RANGE_NOT_SATISFIABLE, format!("no range within the file's {size} bytes\n"));
            r.headers_mut().extend(headers);
            return Ok(r);
        }
        Ranges::Full => {
            headers.insert(header::CONTENT_TYPE, value(content_type));
            (StatusCode::OK, vec![Part::File { start: 0, end: size }], size)
        }
        Ranges::Partial(rs) if rs.len() == 1 => {
            let (a, b) = rs[0];
            headers.insert(header::CONTENT_TYPE, value(content_type));
            headers.insert(header::CONTENT_RANGE, value(&format!("bytes {a}-{}/{size}", b - 1)));
            (StatusCode::PARTIAL_CONTENT, vec![Part::File { start: a, end: b }], b - a)
        }
        Ranges::Partial(rs) => {
            let boundary = hex::encode(rand::random::<[u8; 12]>());
            headers.insert(header::CONTENT_TYPE, value(&format!("multipart/byteranges; boundary={boundary}")));
            let mut parts = Vec::new();
            let mut length = 0;
            for (a, b) in rs {
                let head = format!(
                    "\r\n--{boundary}\r\nContent-Type: {content_type}\r\nContent-Range: bytes {a}-{}/{size}\r\n\r\n",
                    b - 1
                );
                length += head.len() as u64 + (b - a);
                parts.push(Part::Literal(Bytes::from(head)));
                parts.push(Part::File { start: a, end: b });
            }
            let tail = format!("\r\n--{boundary}--\r\n");
            length += tail.len() as u64;
            parts.push(Part::Literal(Bytes::from(tail)));
            (StatusCode::PARTIAL_CONTENT, parts, length)
        }
    };
    headers.insert(header::CONTENT_LENGTH, value(&length.to_string()));
    if *req.method() == Method::HEAD || size == 0 {
        return Ok(respond(status, headers, empty()));
    }
    // Locate the chunks the ranges touch before answering, so a file nobody can serve now
    // is a clear 503 rather than a response cut short.
    let touched = parts.iter().filter_map(|p| match p {
        Part::File { start, end } if start < end => Some(body::chunks_of(&manifest, *start, *end)),
        _ => None,
    });
    let (first, last) = touched.fold((u64::MAX, 0), |(lo, hi), r| (lo.min(*r.start()), hi.max(*r.end())));
    // A small file kept in its manifest has no chunks to locate.
    let holders = client.locate(manifest.chunks.get(first as usize..=last as usize).unwrap_or_default()).await?;
    let source = Arc::new(Source { client, manifest, holders, first, packs: Default::default() });
    Ok(respond(status, headers, body::stream(gw.clone(), source, parts)))
}

async fn listing(
    gw: &Arc<Gateway>,
    req: &Request<Incoming>,
    remote: &RemotePath,
    as_dir: bool,
) -> Result<Response<Body>, HttpError> {
    if !as_dir {
        // Relative links in the listing need the trailing slash.
        let mut to = format!("{}/", req.uri().path());
        if let Some(q) = req.uri().query() {
            let _ = write!(to, "?{q}");
        }
        let mut r = text(StatusCode::MOVED_PERMANENTLY, "");
        r.headers_mut().insert(header::LOCATION, value(&to));
        return Ok(r);
    }
    let mut entries = gw.client.list(remote).await?;
    entries.sort_by(|a, b| (a.kind != EntryKind::Dir, &a.path).cmp(&(b.kind != EntryKind::Dir, &b.path)));
    let wants_json = header_str(req, header::ACCEPT).is_some_and(|a| a.contains("application/json"));
    let mut response = if wants_json {
        json(&serde_json::Value::Array(entries.iter().map(views::entry_json).collect()))
    } else {
        let token = req.uri().query().and_then(|q| query_param(q, "token"));
        let suffix = token.map(|t| format!("?token={}", percent_encode(&t))).unwrap_or_default();
        whole(StatusCode::OK, "text/html; charset=utf-8", listing_html(remote, &entries, &suffix))
    };
    if *req.method() == Method::HEAD {
        *response.body_mut() = empty();
    }
    Ok(response)
}

fn listing_html(remote: &RemotePath, entries: &[EntryInfo], suffix: &str) -> String {
    let title = escape(&format!("{}{}", remote, if remote.is_root() { "" } else { "/" }));
    let mut html = format!(
        "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>{title}</title>\
         <link rel=\"stylesheet\" href=\"/dashboard.css\"></head>\n<body class=\"listing\"><h1>{title}</h1>\n\
         <table><thead><tr><th>Name</th><th>Size</th><th>Modified (UTC)</th></tr></thead><tbody>\n"
    );
    if !remote.is_root() {
        let _ = writeln!(html, "<tr><td><a href=\"../{suffix}\">../</a></td><td></td><td></td></tr>");
    }
    for e in entries {
        let name = e.path.rsplit('/').next().unwrap_or_default();
        let (href, shown, size) = match e.kind {
            EntryKind::Dir => (format!("{}/", percent_encode(name)), format!("{name}/"), String::new()),
            _ => (percent_encode(name), name.to_string(), swarmfs_proto::human_bytes(e.size)),
        };
        let _ = writeln!(
            html,
            "<tr><td><a href=\"{href}{suffix}\">{}</a></td><td>{size}</td><td>{}</td></tr>",
            escape(&shown),
            utc(e.mtime_ms)
        );
    }
    html.push_str("</tbody></table></body></html>\n");
    html
}

async fn put(gw: &Arc<Gateway>, req: Request<Incoming>, remote: &RemotePath) -> Result<Response<Body>, HttpError> {
    if gw.opts.read_only {
        return Err(HttpError::new(StatusCode::FORBIDDEN, "this gateway is read-only"));
    }
    let hint = header_str(&req, header::CONTENT_LENGTH).and_then(|v| v.parse().ok());
    let counter = gw.clone();
    let data = req
        .into_body()
        .into_data_stream()
        .map_ok(move |b| {
            counter.metrics.received(b.len());
            b
        })
        .map_err(std::io::Error::other);
    // The uploader reads on a blocking thread; the bridge waits there for the body.
    let reader = SyncIoBridge::new(StreamReader::new(data));
    let report = gw.client.put_reader(Box::new(reader), hint, remote, &gw.opts.put, &body::LogWarnings).await?;
    let mut r = json(&serde_json::json!({
        "path": remote.to_string(), "size": report.size, "chunks": report.chunks, "replicas": report.replicas,
    }));
    if !report.replaced {
        *r.status_mut() = StatusCode::CREATED;
        r.headers_mut().insert(header::LOCATION, value(&format!("/files{}", encode_path(remote))));
    }
    Ok(r)
}

async fn delete(gw: &Arc<Gateway>, req: &Request<Incoming>, remote: &RemotePath) -> Result<Response<Body>, HttpError> {
    if gw.opts.read_only {
        return Err(HttpError::new(StatusCode::FORBIDDEN, "this gateway is read-only"));
    }
    let recursive =
        req.uri().query().and_then(|q| query_param(q, "recursive")).is_some_and(|v| v == "1" || v == "true");
    gw.client.remove(remote, recursive).await?;
    Ok(respond(StatusCode::NO_CONTENT, HeaderMap::new(), empty()))
}

/// Strong, from the content: the chunk and pack ids (hashes of the sealed chunks), where the
/// slices lie, and the size.
fn etag(manifest: &Manifest) -> String {
    let mut h = blake3::Hasher::new();
    h.update(&manifest.size.to_le_bytes());
    for c in manifest.referenced() {
        h.update(&c.id.0);
    }
    for s in &manifest.slices {
        for n in [s.index, s.offset, s.len, s.pack, s.at] {
            h.update(&n.to_le_bytes());
        }
    }
    format!("\"{}\"", &h.finalize().to_hex()[..32])
}

/// By the name's extension; what a browser needs to play, show or save it.
pub fn content_type(name: &str) -> &'static str {
    let ext = name.rsplit_once('.').map(|(_, e)| e.to_ascii_lowercase()).unwrap_or_default();
    match ext.as_str() {
        "mp4" | "m4v" => "video/mp4",
        "webm" => "video/webm",
        "mkv" => "video/x-matroska",
        "mov" => "video/quicktime",
        "ogv" => "video/ogg",
        "mp3" => "audio/mpeg",
        "m4a" => "audio/mp4",
        "ogg" | "oga" | "opus" => "audio/ogg",
        "flac" => "audio/flac",
        "wav" => "audio/wav",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "svg" => "image/svg+xml",
        "avif" => "image/avif",
        "ico" => "image/x-icon",
        "html" | "htm" => "text/html; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "json" => "application/json",
        "txt" | "md" | "log" | "csv" | "rs" | "toml" | "yaml" | "yml" | "sh" | "py" | "c" | "h" => {
            "text/plain; charset=utf-8"
        }
        "pdf" => "application/pdf",
        "zip" => "application/zip",
        "gz" | "tgz" => "application/gzip",
        "tar" => "application/x-tar",
        "zst" => "application/zstd",
        "wasm" => "application/wasm",
        _ => "application/octet-stream",
    }
}

fn respond(status: StatusCode, headers: HeaderMap, body: Body) -> Response<Body> {
    let mut r = Response::new(body);
    *r.status_mut() = status;
    *r.headers_mut() = headers;
    r
}

fn empty() -> Body {
    Empty::<Bytes>::new().map_err(|e| match e {}).boxed_unsync()
}

fn header_str(req: &Request<Incoming>, name: header::HeaderName) -> Option<&str> {
    req.headers().get(name).and_then(|v| v.to_str().ok())
}

fn value(s: &str) -> HeaderValue {
    HeaderValue::from_str(s).unwrap_or_else(|_| HeaderValue::from_static("invalid"))
}

fn encode_path(remote: &RemotePath) -> String {
    remote.as_str().split('/').map(percent_encode).collect::<Vec<_>>().join("/")
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// Milliseconds since the epoch as (year, month, day, hour, minute, second, weekday 0 = Sunday).
fn civil(ms: i64) -> (i64, u32, u32, u32, u32, u32, usize) {
    let secs = ms.div_euclid(1000);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Howard Hinnant's days-to-civil.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    let weekday = (days + 4).rem_euclid(7) as usize;
    (y, m, d, (rem / 3600) as u32, (rem % 3600 / 60) as u32, (rem % 60) as u32, weekday)
}

/// IMF-fixdate (RFC 9110 §5.6.7), for Last-Modified.
fn http_date(ms: i64) -> String {
    const DAYS: [&str; 7] = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];
    const MONTHS: [&str; 12] = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
    let (y, m, d, hh, mm, ss, wd) = civil(ms);
    format!("{}, {d:02} {} {y} {hh:02}:{mm:02}:{ss:02} GMT", DAYS[wd], MONTHS[m as usize - 1])
}

fn utc(ms: i64) -> String {
    let (y, m, d, hh, mm, _, _) = civil(ms);
    format!("{y}-{m:02}-{d:02} {hh:02}:{mm:02}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_read_as_http_and_people_expect() {
        assert_eq!(http_date(0), "Thu, 01 Jan 1970 00:00:00 GMT");
        assert_eq!(http_date(784_111_777_000), "Sun, 06 Nov 1994 08:49:37 GMT");
        assert_eq!(utc(1_709_210_096_000), "2024-02-29 12:34");
    }

    #[test]
    fn media_types_come_from_the_extension() {
        assert_eq!(content_type("film.MP4"), "video/mp4");
        assert_eq!(content_type("notes.txt"), "text/plain; charset=utf-8");
        assert_eq!(content_type("no-extension"), "application/octet-stream");
    }
}
