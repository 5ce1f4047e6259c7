//! The HTTP gateway (`swarmfs gateway`) driven with curl, and its dashboard in a real
//! headless Chromium.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use common::{curl, pattern, promtool_accepts, rss_bytes, stderr, Cluster, Gateway, BIN};

/// Status code, headers (lower-cased names) and body of one request.
fn request(args: &[&str]) -> (u16, Vec<(String, String)>, Vec<u8>) {
    // -I writes the head as the output already.
    let mut all = if args.contains(&"-I") { vec!["-D", "/dev/null"] } else { vec!["-D", "/dev/stdout"] };
    all.extend(["-o", "/dev/stdout"]);
    all.extend_from_slice(args);
    let out = curl(&all);
    assert!(out.status.success(), "curl {args:?}: {}", stderr(&out));
    let mut raw = &out.stdout[..];
    loop {
        let end = raw.windows(4).position(|w| w == b"\r\n\r\n").expect("a response head") + 4;
        let head = String::from_utf8_lossy(&raw[..end]).into_owned();
        let mut lines = head.lines();
        let status: u16 = lines.next().unwrap().split(' ').nth(1).unwrap().parse().unwrap();
        if status < 200 {
            // 100 Continue before a PUT's answer.
            raw = &raw[end..];
            continue;
        }
        let headers = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        return (status, headers, raw[end..].to_vec());
    }
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

/// The parts of a multipart/byteranges body: (Content-Range, bytes).
fn byteranges(body: &[u8], boundary: &str) -> Vec<(String, Vec<u8>)> {
    let delimiter = format!("\r\n--{boundary}");
    let mut parts = Vec::new();
    let positions: Vec<usize> = (0..body.len()).filter(|&i| body[i..].starts_with(delimiter.as_bytes())).collect();
    for pair in positions.windows(2) {
        let part = &body[pair[0] + delimiter.len() + 2..pair[1]];
        let split = part.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
        let head = String::from_utf8_lossy(&part[..split]).into_owned();
        let range = head.lines().find_map(|l| l.strip_prefix("Content-Range: ")).unwrap().to_string();
        parts.push((range, part[split + 4..].to_vec()));
    }
    assert!(body.ends_with(format!("\r\n--{boundary}--\r\n").as_bytes()), "the closing delimiter");
    parts
}

/// The sum of a metric's samples (all label sets).
fn metric(body: &str, name: &str) -> f64 {
    body.lines()
        .filter(|l| l.split(['{', ' ']).next() == Some(name))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[test]
fn the_gateway_serves_files_and_ranges_across_chunk_boundaries_byte_exact() {
    let c = Cluster::start(3);
    let len = 5 * 65536 + 123;
    let data = c.put_pattern("clip", "/media/my clip.mp4", len, 7, &["--chunk-size", "64K"]);
    let gw = Gateway::start(&c, &c.client_home(), &[]);
    let url = format!("{}/files/media/my%20clip.mp4", gw.url);
    let before = String::from_utf8(curl(&[&format!("{}/metrics", gw.url)]).stdout).unwrap();

    let (status, h, body) = request(&[&url]);
    assert_eq!(status, 200);
    assert!(body == data, "the whole file, byte-exact");
    assert_eq!(header(&h, "content-type"), Some("video/mp4"));
    assert_eq!(header(&h, "accept-ranges"), Some("bytes"));
    assert_eq!(header(&h, "content-length"), Some(len.to_string().as_str()));
    let etag = header(&h, "etag").expect("an ETag").to_string();

    // One range across the first chunk boundary, one suffix, one open-ended.
    for (range, start, end) in
        [("65530-65545", 65530, 65546), ("-100", len - 100, len), ("262140-", 262140, len), ("0-0", 0, 1)]
    {
        let (status, h, body) = request(&["-r", range, &url]);
        assert_eq!(status, 206, "{range}");
        assert_eq!(header(&h, "content-range"), Some(format!("bytes {start}-{}/{len}", end - 1).as_str()), "{range}");
        assert!(body == data[start..end], "bytes of {range}");
    }

    // Two ranges, in two chunks: multipart/byteranges, each part byte-exact.
    let (status, h, body) = request(&["-r", "10-19,131070-131080", &url]);
    assert_eq!(status, 206);
    let content_type = header(&h, "content-type").unwrap();
    let boundary = content_type.strip_prefix("multipart/byteranges; boundary=").expect(content_type);
    assert_eq!(header(&h, "content-length"), Some(body.len().to_string().as_str()));
    let parts = byteranges(&body, boundary);
    assert_eq!(parts.len(), 2);
    assert_eq!(parts[0].0, format!("bytes 10-19/{len}"));
    assert!(parts[0].1 == data[10..20]);
    assert_eq!(parts[1].0, format!("bytes 131070-131080/{len}"));
    assert!(parts[1].1 == data[131070..131081]);

    // Nothing of the file in range: 416 with the size.
    let (status, h, _) = request(&["-r", &format!("{len}-"), &url]);
    assert_eq!(status, 416);
    assert_eq!(header(&h, "content-range"), Some(format!("bytes */{len}").as_str()));

    // HEAD: the same head, no body.
    let (status, h, body) = request(&["-I", &url]);
    assert_eq!(status, 200);
    assert_eq!(header(&h, "content-length"), Some(len.to_string().as_str()));
    assert!(body.is_empty());

    // Revalidation: 304 for the ETag; If-Range with another tag gets the whole file.
    let (status, _, body) = request(&["-H", &format!("If-None-Match: {etag}"), &url]);
    assert_eq!((status, body.len()), (304, 0));
    let (status, _, body) = request(&["-r", "0-9", "-H", "If-Range: \"other\"", &url]);
    assert_eq!((status, body.len()), (200, len));

    // Listings: HTML for browsers, JSON on request, and a directory without its slash
    // redirects so relative links work.
    let (status, _, body) = request(&[&format!("{}/files/media/", gw.url)]);
    assert_eq!(status, 200);
    let html = String::from_utf8(body).unwrap();
    assert!(html.contains("href=\"my%20clip.mp4\"") && html.contains(">my clip.mp4<"), "{html}");
    let (_, _, body) = request(&["-H", "Accept: application/json", &format!("{}/files/media/", gw.url)]);
    let list: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(list[0]["path"], "/media/my clip.mp4");
    assert_eq!(list[0]["size"], len as u64);
    let (status, h, _) = request(&[&format!("{}/files/media", gw.url)]);
    assert_eq!(status, 301);
    assert!(header(&h, "location").unwrap().ends_with("/files/media/"));
    let (status, _, body) = request(&[&format!("{}/files/media/none.txt", gw.url)]);
    assert_eq!(status, 404);
    assert!(String::from_utf8_lossy(&body).contains("no such file"), "{}", String::from_utf8_lossy(&body));

    // Metrics: promtool accepts them, and the whole GET above plus the ranges moved the bytes
    // sent by exactly the file bytes served.
    let after = String::from_utf8(curl(&[&format!("{}/metrics", gw.url)]).stdout).unwrap();
    promtool_accepts(&after);
    let served = len + 16 + 100 + (len - 262140) + 1 + 10 + 11 + len;
    let sent = metric(&after, "swarmfs_http_sent_bytes_total") - metric(&before, "swarmfs_http_sent_bytes_total");
    assert_eq!(sent, served as f64, "bytes sent");
    assert!(metric(&after, "swarmfs_chunk_cache_lookups_total") > 0.0);
}

#[test]
fn a_member_writes_and_deletes_through_the_gateway_and_a_read_only_gateway_refuses() {
    let c = Cluster::start(2);
    let gw = Gateway::start(&c, &c.client_home(), &["--replicas", "2"]);
    let data = pattern(300_000, 3);
    let local = c.path("up");
    std::fs::write(&local, &data).unwrap();
    let url = format!("{}/files/up/loaded.bin", gw.url);
    let (status, h, body) = request(&["-T", local.to_str().unwrap(), &url]);
    assert_eq!(status, 201, "{}", String::from_utf8_lossy(&body));
    assert_eq!(header(&h, "location"), Some("/files/up/loaded.bin"));
    let report: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(report["size"], 300_000);
    assert_eq!(report["replicas"], 2);
    // Read back through the gateway and through the CLI.
    assert!(request(&[&url]).2 == data);
    let out = c.cli(&["cat", "/up/loaded.bin"]);
    assert!(out.stdout == data, "the CLI reads what the gateway stored");
    // A small file is kept in its manifest; it reads, whole and in ranges, as any file.
    let note = c.path("note");
    std::fs::write(&note, b"a small note, kept in its manifest").unwrap();
    let note_url = format!("{}/files/up/note.txt", gw.url);
    assert_eq!(request(&["-T", note.to_str().unwrap(), &note_url]).0, 201);
    assert_eq!(request(&[&note_url]).2, b"a small note, kept in its manifest");
    let (status, _, body) = request(&["-r", "2-6", &note_url]);
    assert_eq!((status, &body[..]), (206, &b"small"[..]));
    let st: serde_json::Value = serde_json::from_str(&c.ok(&["stat", "/up/note.txt", "--json"])).unwrap();
    assert_eq!(st["inline"], true, "{st}");
    // A second PUT replaces it.
    let (status, _, _) = request(&["-T", "/dev/null", &url]);
    assert_eq!(status, 200);
    assert_eq!(request(&[&url]).2.len(), 0);

    let (status, _, _) = request(&["-X", "DELETE", &format!("{}/files/up", gw.url)]);
    assert_eq!(status, 409, "a non-empty directory needs ?recursive=1");
    let (status, _, _) = request(&["-X", "DELETE", &url]);
    assert_eq!(status, 204);
    assert_eq!(request(&[&url]).0, 404);

    // An upload cut off part-way commits nothing, and the gateway goes on serving.
    let addr = gw.url.trim_start_matches("http://").to_string();
    let mut s = std::net::TcpStream::connect(&addr).unwrap();
    write!(s, "PUT /files/cut.bin HTTP/1.1\r\nHost: localhost\r\nContent-Length: 1000000\r\n\r\n").unwrap();
    s.write_all(&data[..200_000]).unwrap();
    drop(s);
    // Garbage instead of a request: one 400, and the connection is closed.
    let mut s = std::net::TcpStream::connect(&addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"\x16\x03\x01 not http at all\r\n\r\n").unwrap();
    let mut answer = String::new();
    let _ = s.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer:?}");
    assert!(request(&[&url]).0 == 404 && !c.cli(&["stat", "/cut.bin"]).status.success(), "nothing of the cut upload");
    assert!(request(&[&format!("{}/files/", gw.url)]).0 == 200, "still serving");

    // A flood of idle connections: the next request is told at once, and served again as
    // soon as they go.
    let small = Gateway::start(&c, &c.client_home(), &["--max-connections", "4"]);
    let small_addr = small.url.trim_start_matches("http://").to_string();
    let idle: Vec<_> = (0..4).map(|_| std::net::TcpStream::connect(&small_addr).unwrap()).collect();
    let asked = Instant::now();
    let (status, _, body) = wait_until_refused(&small.url);
    assert_eq!(status, 503, "{}", String::from_utf8_lossy(&body));
    assert!(String::from_utf8_lossy(&body).contains("connection limit"));
    assert!(asked.elapsed() < Duration::from_secs(5), "answered within {:?}", asked.elapsed());
    drop(idle);
    common::wait_for("the gateway to serve again", Duration::from_secs(10), || {
        (request(&[&format!("{}/files/", small.url)]).0 == 200).then_some(())
    });

    let ro = Gateway::start(&c, &c.client_home(), &["--read-only"]);
    let (status, _, body) = request(&["-T", local.to_str().unwrap(), &format!("{}/files/ro.bin", ro.url)]);
    assert_eq!(status, 403);
    assert!(String::from_utf8_lossy(&body).contains("read-only"));
    let out = c.cli(&["stat", "/ro.bin"]);
    assert!(!out.status.success(), "nothing was stored");
}

/// Asks until the gateway has seen every idle connection and refuses this one (they are
/// accepted in order, so this takes one or two tries).
fn wait_until_refused(url: &str) -> (u16, Vec<(String, String)>, Vec<u8>) {
    common::wait_for("the gateway to refuse a connection over its limit", Duration::from_secs(5), || {
        let r = request(&[&format!("{url}/files/")]);
        (r.0 == 503).then_some(r)
    })
}

#[test]
fn off_loopback_the_gateway_needs_its_token_and_a_link_opens_one_file() {
    let c = Cluster::start(2);
    let data = c.put_pattern("f", "/shared.txt", 70_000, 9, &[]);
    c.put_pattern("g", "/private.txt", 1000, 10, &[]);

    // Refused outright without a token.
    let out = Command::new(BIN)
        .args(["gateway", "--home"])
        .arg(c.client_home())
        .args(["--listen", "0.0.0.0:0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("needs --token"), "{}", stderr(&out));

    let mut child = Command::new(BIN)
        .args(["gateway", "--home"])
        .arg(c.client_home())
        .args(["--listen", "0.0.0.0:0", "--token", "s3cret", "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let v: serde_json::Value = serde_json::from_str(&line).unwrap();
    let port = v["listen"].as_str().unwrap().rsplit(':').next().unwrap().to_string();
    let gw = Gateway { child, url: format!("http://127.0.0.1:{port}") };
    let url = format!("{}/files/shared.txt", gw.url);
    let (status, h, _) = request(&[&url]);
    assert_eq!(status, 401);
    assert_eq!(header(&h, "www-authenticate"), Some("Bearer"));
    assert_eq!(request(&["-H", "Authorization: Bearer wrong", &url]).0, 401);
    assert!(request(&["-H", "Authorization: Bearer s3cret", &url]).2 == data);
    assert!(request(&[&format!("{url}?token=s3cret")]).2 == data);
    assert_eq!(request(&[&format!("{}/api/state", gw.url)]).0, 401);

    // A link is its own credential, for its one file.
    let link = c.ok(&["link", "/shared.txt"]).trim().to_string();
    let (status, _, body) = request(&["-r", "100-199", &format!("{}/link/{link}/shared.txt", gw.url)]);
    assert_eq!(status, 206);
    assert!(body == data[100..200]);
    assert_eq!(request(&[&format!("{}/link/swarmfs-link-garbage", gw.url)]).0, 400);

    // On loopback without a token, only a loopback Host is answered (DNS rebinding).
    let local = Gateway::start(&c, &c.client_home(), &[]);
    let (status, _, body) = request(&["-H", "Host: attacker.example", &format!("{}/files/private.txt", local.url)]);
    assert_eq!(status, 403, "{}", String::from_utf8_lossy(&body));
    assert_eq!(request(&[&format!("http://localhost:{}/files/private.txt", local.port())]).0, 200);
}

/// Writes `len` bytes of a pattern to `stdin` in 1 MiB pieces and returns their BLAKE3.
/// Each piece starts with its index, so no two chunks are alike (identical chunks would be
/// stored and cached once, and the test would measure one chunk).
fn feed(mut stdin: ChildStdin, len: usize) -> blake3::Hash {
    let mut block = pattern(1 << 20, 11);
    let mut h = blake3::Hasher::new();
    let mut left = len;
    for i in 0u64.. {
        if left == 0 {
            break;
        }
        block[..8].copy_from_slice(&i.to_le_bytes());
        let n = left.min(block.len());
        stdin.write_all(&block[..n]).unwrap();
        h.update(&block[..n]);
        left -= n;
    }
    h.finalize()
}

/// Reads `out` to its end; its length and BLAKE3.
fn digest(mut out: ChildStdout) -> (usize, blake3::Hash) {
    let mut h = blake3::Hasher::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut n = 0;
    loop {
        let got = out.read(&mut buf).unwrap();
        if got == 0 {
            return (n, h.finalize());
        }
        h.update(&buf[..got]);
        n += got;
    }
}

#[test]
fn streaming_a_1_gib_file_keeps_the_gateway_memory_bounded() {
    let c = Cluster::start_with_capacity(2, "4G");
    let len = 1usize << 30;
    let mut put = Command::new(BIN)
        .args(["put", "-", "/big.bin", "--replicas", "1", "--quiet", "--home"])
        .arg(c.client_home())
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let want = feed(put.stdin.take().unwrap(), len);
    let out = put.wait_with_output().unwrap();
    assert!(out.status.success(), "put: {}", stderr(&out));

    let gw = Gateway::start(&c, &c.client_home(), &["--cache", "64M"]);
    let pid = gw.child.id();
    let idle = rss_bytes(pid);
    let mut get = Command::new("curl")
        .args(["-sS", "--fail", &format!("{}/files/big.bin", gw.url)])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = get.stdout.take().unwrap();
    let reader = std::thread::spawn(move || digest(stdout));
    let mut peak = 0;
    let started = Instant::now();
    while !reader.is_finished() {
        peak = peak.max(rss_bytes(pid));
        assert!(started.elapsed() < Duration::from_secs(300), "the download took over 5 minutes");
        std::thread::sleep(Duration::from_millis(50));
    }
    let (n, got) = reader.join().unwrap();
    assert!(get.wait().unwrap().success());
    assert_eq!(n, len);
    assert_eq!(got, want, "1 GiB through the gateway, byte-exact");
    eprintln!(
        "1 GiB streamed in {:?}; gateway RSS idle {} MiB, peak {} MiB",
        started.elapsed(),
        idle >> 20,
        peak >> 20
    );
    // The cache (64 MiB) and the window (8 chunks of 1 MiB) plus the process itself; a
    // gateway that buffered the file would be at 1 GiB.
    assert!(peak < 256 << 20, "peak RSS {} MiB while streaming 1 GiB (idle {} MiB)", peak >> 20, idle >> 20);
}

/// The browser driver (`tests/support/browser.py`) and its line protocol.
struct Browser {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Browser {
    fn start() -> Browser {
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/support/browser.py");
        let mut child = Command::new("python3")
            .arg(script)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3 (install-deps installs it)");
        let (stdin, stdout) = (child.stdin.take().unwrap(), BufReader::new(child.stdout.take().unwrap()));
        Browser { child, stdin, stdout }
    }

    fn ask(&mut self, cmd: serde_json::Value) -> serde_json::Value {
        writeln!(self.stdin, "{cmd}").unwrap();
        let mut line = String::new();
        self.stdout.read_line(&mut line).unwrap();
        let answer: serde_json::Value =
            serde_json::from_str(&line).unwrap_or_else(|_| panic!("the browser driver said {line:?} to {cmd}"));
        assert_eq!(answer["ok"], true, "{cmd}: {}", answer["error"]);
        answer["value"].clone()
    }

    fn wait(&mut self, expr: &str, timeout_s: u64) -> serde_json::Value {
        self.ask(serde_json::json!({ "cmd": "wait", "expr": expr, "timeout": timeout_s }))
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = writeln!(self.stdin, "{}", serde_json::json!({ "cmd": "quit" }));
        if !common::wait_for_exit(&mut self.child, Duration::from_secs(15)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Two seconds of VP8 from a canvas, PUT to /files/clip.webm; answers "STATUS SIZE".
const RECORD_AND_PUT_A_VIDEO: &str = r#"(async () => {
  const c = document.createElement("canvas"); c.width = 160; c.height = 120;
  const g = c.getContext("2d");
  const rec = new MediaRecorder(c.captureStream(25), { mimeType: "video/webm;codecs=vp8" });
  const parts = [];
  rec.ondataavailable = (e) => parts.push(e.data);
  let frame = 0;
  const timer = setInterval(() => { g.fillStyle = `hsl(${frame++ * 9 % 360},80%,50%)`; g.fillRect(0, 0, 160, 120); }, 40);
  rec.start(100);
  await new Promise((r) => setTimeout(r, 2000));
  const stopped = new Promise((r) => (rec.onstop = r));
  rec.stop(); clearInterval(timer);
  await stopped;
  const blob = new Blob(parts, { type: "video/webm" });
  const put = await fetch("/files/clip.webm", { method: "PUT", body: blob });
  return put.status + " " + blob.size;
})()"#;

/// Plays /files/clip.webm until past 0.5 s, seeks to 0.3 s; answers JSON.
const PLAY_AND_SEEK: &str = r#"(async () => {
  const v = document.createElement("video"); v.muted = true; v.src = "/files/clip.webm";
  document.body.append(v);
  await v.play();
  await new Promise((r, j) => {
    const late = setTimeout(() => j(new Error("did not play past 0.5 s within 10 s")), 10000);
    v.ontimeupdate = () => { if (v.currentTime > 0.5) { clearTimeout(late); r(); } };
  });
  const played_to = v.currentTime;
  const seeked = new Promise((r, j) => { v.onseeked = r; setTimeout(() => j(new Error("no seeked event in 5 s")), 5000); });
  v.currentTime = 0.3;
  await seeked;
  return JSON.stringify({ played_to, seeked_to: v.currentTime, width: v.videoWidth });
})()"#;

#[test]
fn the_dashboard_shows_live_peers_a_chunk_map_and_a_killed_peer_turning_down_and_a_video_plays_in_a_real_browser() {
    let mut c = Cluster::start_with(3, "1G", &["--peer-timeout", "2"], &["--heartbeat-ms", "300"]);
    c.put_pattern("f", "/video.mp4", 6 * 65536, 4, &["--chunk-size", "64K", "--replicas", "2"]);
    let gw = Gateway::start(&c, &c.client_home(), &[]);
    let victim = c.peer_id(0)[..8].to_string();

    let mut b = Browser::start();
    b.ask(serde_json::json!({ "cmd": "open", "url": format!("{}/dashboard", gw.url) }));
    b.wait("document.querySelectorAll('#peers tr[data-state=\"up\"]').length === 3", 15);
    // The chunk map of one file: a cell per chunk and peer, R of them held per chunk.
    b.ask(serde_json::json!({ "cmd": "eval", "expr":
        "document.getElementById('mappath').value = '/video.mp4'; document.querySelector('#mapform button').click(); true" }));
    let held = b.wait("document.querySelectorAll('#map rect.held').length", 15);
    assert_eq!(held, 12, "6 chunks × 2 copies");

    let killed = Instant::now();
    c.kill_peer(0);
    b.wait(&format!("document.querySelector('#peers tr[data-node=\"{victim}\"]').dataset.state === 'down'"), 20);
    let took = killed.elapsed();
    assert!(took < Duration::from_secs(15), "the page showed the peer down after {took:?}");
    b.wait(&format!("document.getElementById('events').textContent.includes('peer {victim} is down')"), 10);
    assert!(b
        .ask(serde_json::json!({ "cmd": "eval", "expr": "document.getElementById('status').textContent" }))
        .as_str()
        .unwrap()
        .starts_with("live"));

    // A video plays and seeks: recorded from a canvas in the page, PUT through the gateway,
    // then played by a <video> from /files/, which reads it with Range requests.
    let put = b.ask(serde_json::json!({ "cmd": "eval", "expr": RECORD_AND_PUT_A_VIDEO }));
    assert!(put.as_str().unwrap().starts_with("201 "), "{put}");
    let played: serde_json::Value =
        serde_json::from_str(b.ask(serde_json::json!({ "cmd": "eval", "expr": PLAY_AND_SEEK })).as_str().unwrap())
            .unwrap();
    assert!(played["played_to"].as_f64().unwrap() > 0.5, "{played}");
    assert!((played["seeked_to"].as_f64().unwrap() - 0.3).abs() < 0.1, "{played}");
    assert_eq!(played["width"], 160, "{played}");
    let metrics = String::from_utf8(curl(&[&format!("{}/metrics", gw.url)]).stdout).unwrap();
    assert!(
        metrics.contains(r#"swarmfs_http_requests_total{route="files",method="GET",status="206"}"#),
        "the browser read the video by ranges:\n{metrics}"
    );

    let shot = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("dashboard.png");
    b.ask(serde_json::json!({ "cmd": "screenshot", "path": shot }));
    let png = std::fs::read(&shot).unwrap();
    assert!(png.starts_with(b"\x89PNG") && png.len() > 10_000, "a screenshot at {}", shot.display());
    eprintln!("dashboard screenshot: {}", shot.display());
    let errors = b.ask(serde_json::json!({ "cmd": "errors" }));
    assert_eq!(errors, serde_json::json!([]), "the page logged errors");
}
