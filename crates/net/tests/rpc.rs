//! The connection layer against a real listener on 127.0.0.1.

use std::sync::Arc;

use bytes::Bytes;
use swarmfs_net::auth::link_secret;
use swarmfs_net::{dial, serve, ConnCtx, Identity, Limits, NetError, Secret, Service, Swarm};
use swarmfs_proto::{LinkId, NodeId, Request, Response, Role};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

struct Echo;

impl Service for Echo {
    fn listener(&self) -> swarmfs_proto::authz::Listener {
        swarmfs_proto::authz::Listener::Peer
    }

    async fn handle(&self, _ctx: &Arc<ConnCtx>, req: Request, payload: Bytes) -> (Response, Bytes) {
        match req {
            Request::Ping => (Response::Pong { used: payload.len() as u64, capacity: 0, chunks: 0 }, payload),
            // A store that checks what it is given against its id, as a peer's does.
            Request::PutChunk { chunk } if blake3::hash(&payload).as_bytes() == &chunk.0 => {
                (Response::Ok, Bytes::new())
            }
            Request::PutChunk { .. } => {
                (Response::error(swarmfs_proto::ErrorCode::InvalidArgument, "bad"), Bytes::new())
            }
            Request::GetChunk { chunk, .. } => (Response::Chunk, sealed_chunk(chunk.0[0])),
            _ => (Response::error(swarmfs_proto::ErrorCode::Unsupported, "no"), Bytes::new()),
        }
    }
}

/// A chunk's bytes for the tests, some 1 MiB, some just past the size that goes beside TLS.
fn sealed_chunk(seed: u8) -> Bytes {
    let len = if seed.is_multiple_of(2) { 1 << 20 } else { (16 << 10) + seed as usize };
    Bytes::from((0..len).map(|i| (i as u8).wrapping_mul(seed | 1).wrapping_add(seed)).collect::<Vec<u8>>())
}

async fn start(secret: [u8; 32]) -> (String, NodeId, CancellationToken) {
    start_with(Secret::Swarm(secret)).await
}

async fn start_with(secret: Secret) -> (String, NodeId, CancellationToken) {
    let swarm = Arc::new(Swarm { identity: Identity::generate().unwrap(), secret, member: None });
    let id = swarm.identity.node_id();
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap().to_string();
    let stop = CancellationToken::new();
    tokio::spawn(serve(l, swarm, Arc::new(Echo), Limits::default(), stop.clone()));
    (addr, id, stop)
}

fn client(secret: [u8; 32]) -> Swarm {
    Swarm { identity: Identity::generate().unwrap(), secret: Secret::Swarm(secret), member: None }
}

fn link_client(id: LinkId, secret: [u8; 32]) -> Swarm {
    Swarm { identity: Identity::generate().unwrap(), secret: Secret::Link { id, secret }, member: None }
}

#[tokio::test]
async fn a_link_s_secret_admits_its_holder_where_the_swarm_secret_is_known_and_a_forged_one_does_not() {
    let (addr, id, _stop) = start([1; 32]).await;
    let link = LinkId([9; 16]);
    let (conn, _ev) = dial(&link_client(link, link_secret(&[1; 32], &link)), &addr, id, Role::Client).await.unwrap();
    assert!(matches!(conn.call(&Request::Ping, Bytes::new()).await.unwrap().0, Response::Pong { .. }));
    // A secret made up for an id, or another swarm's link: refused in the hello.
    for forged in [[7; 32], link_secret(&[2; 32], &link)] {
        let err = dial(&link_client(link, forged), &addr, id, Role::Client).await.err().unwrap();
        assert!(matches!(&err, NetError::NotMember(m) if m.contains("not a link of this swarm")), "{err}");
    }
}

#[tokio::test]
async fn a_node_serving_under_one_link_admits_that_link_only() {
    let link = LinkId([9; 16]);
    let secret = link_secret(&[1; 32], &link);
    let (addr, id, _stop) = start_with(Secret::Link { id: link, secret }).await;
    let (conn, _ev) = dial(&link_client(link, secret), &addr, id, Role::Client).await.unwrap();
    assert!(matches!(conn.call(&Request::Ping, Bytes::new()).await.unwrap().0, Response::Pong { .. }));
    // A member dials it with the link's secret, derived from the swarm secret; with the
    // swarm secret itself, or as another link, it cannot get in.
    let other = LinkId([8; 16]);
    assert!(dial(&link_client(other, link_secret(&[1; 32], &other)), &addr, id, Role::Client).await.is_err());
    assert!(dial(&client([1; 32]), &addr, id, Role::Client).await.is_err());
}

#[tokio::test]
async fn a_hello_of_another_protocol_version_is_told_which_version_this_node_speaks() {
    use swarmfs_proto::{Frame, FrameKind, HelloReply};
    let (addr, id, _stop) = start([1; 32]).await;
    let mut tls = swarmfs_net::rpc::dial_tls(&Identity::generate().unwrap(), &addr, id).await.unwrap();
    // Protocol 4's hello: version, role, proof, member; no link field (postcard encodes a
    // tuple as it does a struct of those fields).
    let hello: (u16, Role, [u8; 32], Option<()>) = (4, Role::Client, [0; 32], None);
    swarmfs_net::io::write_frame(&mut tls, &Frame::new(FrameKind::Hello, 0, &hello, Bytes::new())).await.unwrap();
    tls.flush().await.unwrap();
    let reply = swarmfs_net::io::read_frame(&mut tls).await.unwrap().unwrap();
    match reply.decode_meta::<HelloReply>().unwrap() {
        HelloReply::Refused { reason } => assert!(reason.contains("protocol version 4 is not supported"), "{reason}"),
        other => panic!("{other:?}"),
    }
    // Protocol 5's hello, with the link field: the same hello as today's, an older version.
    let mut tls = swarmfs_net::rpc::dial_tls(&Identity::generate().unwrap(), &addr, id).await.unwrap();
    let hello: (u16, Role, [u8; 32], Option<()>, Option<()>) = (5, Role::Client, [0; 32], None, None);
    swarmfs_net::io::write_frame(&mut tls, &Frame::new(FrameKind::Hello, 0, &hello, Bytes::new())).await.unwrap();
    tls.flush().await.unwrap();
    let reply = swarmfs_net::io::read_frame(&mut tls).await.unwrap().unwrap();
    let want = format!("protocol version 5 is not supported (this node speaks {})", swarmfs_proto::PROTOCOL_VERSION);
    match reply.decode_meta::<HelloReply>().unwrap() {
        HelloReply::Refused { reason } => assert!(reason.contains(&want), "{reason}"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn many_requests_in_flight_on_one_connection() {
    let (addr, id, _stop) = start([1; 32]).await;
    let (conn, _ev) = dial(&client([1; 32]), &addr, id, Role::Client).await.unwrap();
    let mut calls = Vec::new();
    for i in 0..50usize {
        let c = conn.clone();
        calls.push(tokio::spawn(async move {
            let (r, p) = c.call(&Request::Ping, Bytes::from(vec![i as u8; i * 1000])).await.unwrap();
            assert_eq!(r, Response::Pong { used: (i * 1000) as u64, capacity: 0, chunks: 0 });
            assert_eq!(p.len(), i * 1000);
        }));
    }
    for c in calls {
        c.await.unwrap();
    }
}

#[tokio::test]
async fn chunks_beside_tls_arrive_whole_both_ways_among_other_frames() {
    let (addr, id, _stop) = start([1; 32]).await;
    let (conn, _ev) = dial(&client([1; 32]), &addr, id, Role::Client).await.unwrap();
    let mut calls = Vec::new();
    for seed in 0..60u8 {
        let c = conn.clone();
        calls.push(tokio::spawn(async move {
            let chunk = sealed_chunk(seed);
            let id = swarmfs_proto::ChunkId(*blake3::hash(&chunk).as_bytes());
            let (r, _) = c.call(&Request::PutChunk { chunk: id }, chunk.clone()).await.unwrap();
            assert_eq!(r, Response::Ok, "chunk {seed} stored as sent");
            let get = Request::GetChunk { chunk: swarmfs_proto::ChunkId([seed; 32]), offset: 0, len: u64::MAX };
            let (r, p) = c.call(&get, Bytes::new()).await.unwrap();
            assert_eq!((r, p), (Response::Chunk, chunk), "chunk {seed} read back whole");
            let small = Bytes::from(vec![seed; seed as usize * 100]);
            let (_, p) = c.call(&Request::Ping, small.clone()).await.unwrap();
            assert_eq!(p, small, "frames with their payload inside, between them");
        }));
    }
    for c in calls {
        c.await.unwrap();
    }
}

#[tokio::test]
async fn wrong_secret_is_not_a_member() {
    let (addr, id, _stop) = start([1; 32]).await;
    let err = dial(&client([2; 32]), &addr, id, Role::Client).await.err().unwrap();
    assert!(matches!(err, NetError::NotMember(_)), "{err}");
    assert!(err.to_string().contains("not a member of this swarm"), "{err}");
}

#[tokio::test]
async fn wrong_node_id_is_refused_by_the_pin() {
    let (addr, _id, _stop) = start([1; 32]).await;
    let err = dial(&client([1; 32]), &addr, NodeId([3; 32]), Role::Client).await.err().unwrap();
    assert!(matches!(err, NetError::WrongNode { .. }), "{err}");
}

#[tokio::test]
async fn garbage_and_oversized_frames_close_only_that_connection() {
    let (addr, id, _stop) = start([1; 32]).await;
    let member = client([1; 32]);
    // Oversized length prefix after a valid handshake.
    let mut raw = swarmfs_net::rpc::dial_raw(&member, &addr, id).await.unwrap();
    raw.write_all(&u32::MAX.to_be_bytes()).await.unwrap();
    raw.flush().await.unwrap();
    let mut buf = [0u8; 16];
    assert_eq!(raw.read(&mut buf).await.unwrap_or(0), 0, "server closes the connection");
    // Garbage before TLS.
    let mut tcp = tokio::net::TcpStream::connect(&addr).await.unwrap();
    tcp.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
    let _ = tcp.read(&mut buf).await;
    // A well-formed length with a garbage body.
    let mut raw = swarmfs_net::rpc::dial_raw(&member, &addr, id).await.unwrap();
    raw.write_all(&[0, 0, 0, 20, 2, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 7, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff])
        .await
        .unwrap();
    raw.flush().await.unwrap();
    assert_eq!(raw.read(&mut buf).await.unwrap_or(0), 0);
    // The listener still serves a good client.
    let (conn, _ev) = dial(&member, &addr, id, Role::Client).await.unwrap();
    assert!(matches!(conn.call(&Request::Ping, Bytes::new()).await.unwrap().0, Response::Pong { .. }));
}

/// Keeps the connection of whoever dials it, to call them back over it.
#[derive(Default)]
struct CallsBack(std::sync::Mutex<Option<swarmfs_net::Connection>>);

impl Service for CallsBack {
    fn listener(&self) -> swarmfs_proto::authz::Listener {
        swarmfs_proto::authz::Listener::Peer
    }

    fn on_open(&self, ctx: &Arc<ConnCtx>) {
        *self.0.lock().unwrap() = Some(ctx.conn.clone());
    }

    async fn handle(&self, _ctx: &Arc<ConnCtx>, _req: Request, _payload: Bytes) -> (Response, Bytes) {
        (Response::Ok, Bytes::new())
    }
}

/// A listener (swarm secret [1; 32]) that keeps each dialer's connection to call it back.
async fn start_calling_back() -> (String, NodeId, Arc<CallsBack>) {
    let swarm =
        Arc::new(Swarm { identity: Identity::generate().unwrap(), secret: Secret::Swarm([1; 32]), member: None });
    let id = swarm.identity.node_id();
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap().to_string();
    let listener = Arc::new(CallsBack::default());
    tokio::spawn(serve(l, swarm, listener.clone(), Limits::default(), CancellationToken::new()));
    (addr, id, listener)
}

#[tokio::test]
async fn the_listener_calls_the_dialer_over_the_connection_the_dialer_opened() {
    let (addr, id, listener) = start_calling_back().await;
    // A dialer that serves (a peer's session): answers the listener's requests.
    let me = client([1; 32]);
    let dialer = swarmfs_net::Dialer { identity: &me.identity, secret: &me.secret, member: None, role: Role::Peer };
    let (conn, _ev) = swarmfs_net::dial_serving(&dialer, &addr, id, Some(Arc::new(Echo))).await.unwrap();
    assert!(matches!(conn.call(&Request::Ping, Bytes::new()).await.unwrap().0, Response::Ok));
    let back = listener.0.lock().unwrap().clone().expect("the listener kept the connection");
    let (resp, payload) = back.call(&Request::Ping, Bytes::from_static(b"hello")).await.unwrap();
    assert!(matches!(resp, Response::Pong { used: 5, .. }), "{resp:?}");
    assert_eq!(&payload[..], b"hello");
    // Both directions at once, many in flight.
    let calls: Vec<_> = (0..20u8)
        .map(|i| {
            let (a, b) = (conn.clone(), back.clone());
            async move {
                let (x, y) = tokio::join!(
                    a.call(&Request::Ping, Bytes::new()),
                    b.call(&Request::Ping, Bytes::from(vec![i; i as usize]))
                );
                assert!(matches!(x.unwrap().0, Response::Ok));
                assert!(matches!(y.unwrap().0, Response::Pong { used, .. } if used == i as u64));
            }
        })
        .collect();
    futures_util::future::join_all(calls).await;
    // The dialer hangs up: calls back fail at once.
    drop(conn);
    tokio::time::timeout(std::time::Duration::from_secs(5), back.closed()).await.expect("the listener sees it close");
    assert!(back.call(&Request::Ping, Bytes::new()).await.is_err());
}

#[tokio::test]
async fn a_dialer_that_serves_nothing_answers_requests_unsupported() {
    let (addr, id, listener) = start_calling_back().await;
    let (conn, _ev) = dial(&client([1; 32]), &addr, id, Role::Client).await.unwrap();
    conn.call(&Request::Ping, Bytes::new()).await.unwrap();
    let back = listener.0.lock().unwrap().clone().unwrap();
    match back.call(&Request::Ping, Bytes::new()).await.unwrap().0 {
        Response::Error { code: swarmfs_proto::ErrorCode::Unsupported, .. } => {}
        other => panic!("{other:?}"),
    }
    assert!(!conn.is_closed(), "the connection stays up");
}

#[tokio::test]
async fn a_connection_runs_over_any_stream_such_as_one_carried_inside_another() {
    // An in-memory pipe stands for a relayed stream: TLS, the hello and requests both ways
    // run over it exactly as over TCP.
    let (near, far) = tokio::io::duplex(64 * 1024);
    let server =
        Arc::new(Swarm { identity: Identity::generate().unwrap(), secret: Secret::Swarm([1; 32]), member: None });
    let id = server.identity.node_id();
    let label: std::net::SocketAddr = "192.0.2.1:7000".parse().unwrap();
    let listener = Arc::new(CallsBack::default());
    let served = listener.clone();
    tokio::spawn(async move {
        swarmfs_net::serve_over(far, label, &server, served, &Limits::default(), CancellationToken::new()).await
    });
    let me = client([1; 32]);
    let dialer = swarmfs_net::Dialer { identity: &me.identity, secret: &me.secret, member: None, role: Role::Peer };
    let (conn, _ev) =
        swarmfs_net::dial_over(near, label, &dialer, "a relayed stream", id, Some(Arc::new(Echo))).await.unwrap();
    assert!(matches!(conn.call(&Request::Ping, Bytes::new()).await.unwrap().0, Response::Ok));
    let back = listener.0.lock().unwrap().clone().expect("the listener kept the connection");
    let (resp, payload) = back.call(&Request::Ping, Bytes::from_static(b"relayed")).await.unwrap();
    assert!(matches!(resp, Response::Pong { used: 7, .. }), "{resp:?}");
    assert_eq!(&payload[..], b"relayed");
    // The wrong node at the other end is refused by the pin, as over TCP.
    let (near, far) = tokio::io::duplex(64 * 1024);
    let other =
        Arc::new(Swarm { identity: Identity::generate().unwrap(), secret: Secret::Swarm([1; 32]), member: None });
    tokio::spawn(async move {
        let service = Arc::new(CallsBack::default());
        swarmfs_net::serve_over(far, label, &other, service, &Limits::default(), CancellationToken::new()).await
    });
    let wrong = swarmfs_net::dial_over::<Echo, _>(near, label, &dialer, "a relayed stream", id, None).await;
    assert!(matches!(wrong, Err(NetError::WrongNode { .. })), "{:?}", wrong.err());
}

#[tokio::test(start_paused = true)]
async fn a_splice_carries_both_ways_counts_every_byte_and_keeps_to_its_rate() {
    use swarmfs_net::task::RateLimiter;
    // Two legs, each an in-memory pipe whose far end stands for a node.
    let (a_near, mut a_far) = tokio::io::duplex(64 * 1024);
    let (b_near, mut b_far) = tokio::io::duplex(64 * 1024);
    let bytes = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let pacer = Arc::new(RateLimiter::new(1_000_000));
    let stop = CancellationToken::new();
    let (counted, paced, halt) = (bytes.clone(), pacer.clone(), stop.clone());
    let splice = tokio::spawn(async move {
        swarmfs_net::dialer::splice(Box::new(a_near), Box::new(b_near), &counted, &paced, &halt).await
    });
    let started = tokio::time::Instant::now();
    let up = vec![7u8; 2_000_000];
    let writer = tokio::spawn(async move {
        a_far.write_all(&up).await.unwrap();
        let mut back = [0u8; 5];
        a_far.read_exact(&mut back).await.unwrap();
        assert_eq!(&back, b"reply");
        a_far
    });
    let mut got = vec![0u8; 2_000_000];
    b_far.read_exact(&mut got).await.unwrap();
    assert!(got.iter().all(|&b| b == 7));
    // 2 MB at 1 MB/s: the pacer holds it to about two seconds (of paused, exact time).
    assert!(started.elapsed() >= std::time::Duration::from_millis(1900), "{:?}", started.elapsed());
    b_far.write_all(b"reply").await.unwrap();
    let a_far = writer.await.unwrap();
    // Either end closing ends the splice, which reports what it carried.
    drop(a_far);
    drop(b_far);
    let carried = splice.await.unwrap();
    assert_eq!(carried, 2_000_005);
    assert_eq!(bytes.load(std::sync::atomic::Ordering::Relaxed), 2_000_005);
}

/// A listener whose `Relay` requests take their connection over: it answers `Ok`, then
/// echoes raw bytes.
struct TakesOver;

impl Service for TakesOver {
    fn listener(&self) -> swarmfs_proto::authz::Listener {
        swarmfs_proto::authz::Listener::Tracker
    }

    fn takes_over(&self) -> bool {
        true
    }

    async fn take_over(
        &self,
        first: swarmfs_net::FirstRequest,
        mut stream: swarmfs_net::RawStream,
        _: CancellationToken,
    ) {
        swarmfs_net::answer_raw(&mut stream, first.id, &Response::Ok).await.unwrap();
        let mut buf = [0u8; 5];
        stream.read_exact(&mut buf).await.unwrap();
        stream.write_all(&buf).await.unwrap();
        stream.flush().await.unwrap();
    }

    async fn handle(&self, _ctx: &Arc<ConnCtx>, req: Request, _payload: Bytes) -> (Response, Bytes) {
        match req {
            Request::ListPeers => (Response::Peers(vec![]), Bytes::new()),
            _ => (Response::error(swarmfs_proto::ErrorCode::Unsupported, "no"), Bytes::new()),
        }
    }
}

#[tokio::test]
async fn a_relay_request_first_on_a_connection_takes_it_over_and_any_other_first_request_is_served() {
    use swarmfs_proto::{Frame, FrameKind};
    let swarm =
        Arc::new(Swarm { identity: Identity::generate().unwrap(), secret: Secret::Swarm([1; 32]), member: None });
    let id = swarm.identity.node_id();
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap().to_string();
    tokio::spawn(serve(l, swarm, Arc::new(TakesOver), Limits::default(), CancellationToken::new()));
    let me = client([1; 32]);
    // Taken over: the answer, then raw bytes both ways.
    let mut s = swarmfs_net::rpc::dial_raw(&me, &addr, id).await.unwrap();
    let relay = Frame::new(FrameKind::Request, 9, &Request::Relay { to: NodeId([3; 32]) }, Bytes::new());
    swarmfs_net::io::write_frame(&mut s, &relay).await.unwrap();
    s.flush().await.unwrap();
    let answer = swarmfs_net::io::read_frame(&mut s).await.unwrap().unwrap();
    assert_eq!(answer.id, 9);
    assert_eq!(answer.decode_meta::<Response>().unwrap(), Response::Ok);
    s.write_all(b"bytes").await.unwrap();
    s.flush().await.unwrap();
    let mut echo = [0u8; 5];
    s.read_exact(&mut echo).await.unwrap();
    assert_eq!(&echo, b"bytes");
    // Any other first request is read off the stream and then served like the rest.
    let (conn, _ev) = dial(&me, &addr, id, Role::Client).await.unwrap();
    for _ in 0..3 {
        assert_eq!(conn.call(&Request::ListPeers, Bytes::new()).await.unwrap().0, Response::Peers(vec![]));
    }
    // A link's holder may not join a relay as its target: refused before the take-over.
    let link = LinkId([9; 16]);
    let holder = link_client(link, link_secret(&[1; 32], &link));
    let mut s = swarmfs_net::rpc::dial_raw(&holder, &addr, id).await.unwrap();
    let join = Frame::new(FrameKind::Request, 1, &Request::RelayJoin { token: 1 }, Bytes::new());
    swarmfs_net::io::write_frame(&mut s, &join).await.unwrap();
    s.flush().await.unwrap();
    let answer = swarmfs_net::io::read_frame(&mut s).await.unwrap().unwrap();
    assert!(matches!(
        answer.decode_meta::<Response>().unwrap(),
        Response::Error { code: swarmfs_proto::ErrorCode::Forbidden, .. }
    ));
}
