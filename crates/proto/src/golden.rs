//! Golden tests for every message variant: one line each, pinning the variant index on the
//! wire (postcard writes it first) and checking that docs/wire.md lists the same index and
//! name. Reordering two variants, or documenting one under the wrong number, fails here.
//! A change that breaks this table breaks old nodes: bump PROTOCOL_VERSION and the docs
//! instead of editing an expectation.

use crate::*;

const WIRE_MD: &str = include_str!("../../../docs/wire.md");

fn c() -> ChunkId {
    ChunkId([0xab; 32])
}

fn entry() -> EntryInfo {
    EntryInfo {
        path: "/a".into(),
        kind: EntryKind::File,
        size: 1,
        mtime_ms: 2,
        file_id: None,
        chunks: 1,
        mode: 0o644,
        uid: 0,
        gid: 0,
        rdev: 0,
        ctime_ms: 2,
        nlink: 1,
        replicas: 2,
    }
}

fn peer() -> PeerInfo {
    PeerInfo {
        node: NodeId([3; 32]),
        addrs: vec![],
        capacity: 0,
        used: 0,
        chunks: 0,
        load: 0,
        state: PeerState::Up,
        link: None,
        reach: Reach::Direct,
    }
}

fn sealed() -> SealedManifest {
    SealedManifest { wrapped_key: vec![1], body: vec![2], deltas: vec![SealedDelta(vec![3])] }
}

fn link() -> LinkInfo {
    LinkInfo {
        id: LinkId([4; 16]),
        file_id: FileId([1; 32]),
        path: "/a".into(),
        created_by: "ann".into(),
        created_ms: 1,
        revoked: false,
    }
}

fn check<T: serde::Serialize>(table: &str, rows: &[(u8, &str, T)]) {
    for (index, name, sample) in rows {
        let bytes = postcard::to_stdvec(sample).unwrap();
        assert_eq!(bytes[0], *index, "{table} {name}: variant index on the wire");
        let row = format!("| {index} | `{name}");
        assert!(WIRE_MD.contains(&row), "docs/wire.md lists {table} {name} as {index} (looked for {row:?})");
    }
}

#[test]
fn every_request_variant() {
    let p = || "/a".to_string();
    check(
        "Request",
        &[
            (0, "Join", Request::Join { addrs: vec![], capacity: 1 }),
            (1, "Heartbeat", Request::Heartbeat { used: 0, chunks: 0, load: 0, capacity: 0, workers: vec![] }),
            (2, "Leave", Request::Leave),
            (3, "Subscribe", Request::Subscribe),
            (4, "Inventory", Request::Inventory { chunks: vec![c()], first: true }),
            (5, "RegisterChunks", Request::RegisterChunks { chunks: vec![] }),
            (6, "UnregisterChunks", Request::UnregisterChunks { chunks: vec![] }),
            (7, "ListPeers", Request::ListPeers),
            (8, "Mkdir", Request::Mkdir { path: p(), parents: true }),
            (9, "List", Request::List { path: p() }),
            (10, "Stat", Request::Stat { path: p() }),
            (11, "Rename", Request::Rename { from: p(), to: p() }),
            (12, "Remove", Request::Remove { path: p(), recursive: false }),
            (
                13,
                "CommitFile",
                Request::CommitFile {
                    path: p(),
                    size: 0,
                    file_id: FileId([1; 32]),
                    manifest: sealed(),
                    placements: vec![],
                    mtime_ms: None,
                    replicas: 2,
                },
            ),
            (14, "OpenFile", Request::OpenFile { path: p() }),
            (15, "Search", Request::Search { text: "a".into() }),
            (16, "Locate", Request::Locate { chunks: vec![] }),
            (17, "ReportBadChunk", Request::ReportBadChunk { chunk: c(), node: NodeId([2; 32]) }),
            (18, "PutChunk", Request::PutChunk { chunk: c() }),
            (19, "GetChunk", Request::GetChunk { chunk: c(), offset: 0, len: 1 }),
            (20, "HasChunks", Request::HasChunks { chunks: vec![] }),
            (21, "DeleteChunks", Request::DeleteChunks { chunks: vec![] }),
            (22, "Ping", Request::Ping),
            (23, "SetAttr", Request::SetAttr { path: p(), mode: None, uid: None, gid: None, mtime_ms: None }),
            (
                24,
                "Create",
                Request::Create {
                    path: p(),
                    kind: EntryKind::Dir,
                    mode: 0,
                    uid: 0,
                    gid: 0,
                    rdev: 0,
                    target: None,
                    time_ms: None,
                },
            ),
            (25, "ReadLink", Request::ReadLink { path: p() }),
            (26, "CollectChunks", Request::CollectChunks { chunks: vec![], idle_ms: 0 }),
            (27, "MemberAdd", Request::MemberAdd { name: "m".into(), read_only: false }),
            (28, "MemberList", Request::MemberList),
            (29, "MemberRevoke", Request::MemberRevoke { name: "m".into() }),
            (30, "ReplicateChunk", Request::ReplicateChunk { chunk: c(), sources: vec![] }),
            (31, "Health", Request::Health),
            (32, "Drain", Request::Drain { node: NodeId([2; 32]), on: true }),
            (33, "Offer", Request::Offer { addrs: vec![], chunks: vec![c()], replace: false }),
            (34, "LinkCreate", Request::LinkCreate { path: p(), file_id: FileId([1; 32]) }),
            (35, "LinkList", Request::LinkList),
            (36, "LinkRevoke", Request::LinkRevoke { id: LinkId([4; 16]) }),
            (37, "OpenLink", Request::OpenLink),
            (38, "PushChunk", Request::PushChunk { chunk: c(), to: peer() }),
            (39, "Relay", Request::Relay { to: NodeId([2; 32]) }),
            (40, "RelayJoin", Request::RelayJoin { token: 1 }),
            (41, "Punch", Request::Punch { to: NodeId([2; 32]) }),
            (42, "PunchReady", Request::PunchReady { token: 1 }),
            (
                43,
                "Rendezvous",
                Request::Rendezvous {
                    token: 1,
                    from: NodeId([2; 32]),
                    path: RendezvousPath::Punch { at: "192.0.2.1:4000".into() },
                },
            ),
            (44, "Punched", Request::Punched { to: NodeId([2; 32]), ok: true }),
            (
                45,
                "CommitDelta",
                Request::CommitDelta {
                    path: p(),
                    size: 1,
                    parent: FileId([1; 32]),
                    file_id: FileId([2; 32]),
                    delta: SealedDelta(vec![3]),
                    placements: vec![],
                    mtime_ms: None,
                },
            ),
            (
                46,
                "CommitNewFile",
                Request::CommitNewFile {
                    path: p(),
                    size: 1,
                    file_id: FileId([2; 32]),
                    manifest: SealedManifest { wrapped_key: vec![1], body: vec![2], deltas: vec![] },
                    placements: vec![],
                    mtime_ms: None,
                    replicas: 2,
                    mode: 0o600,
                    uid: 1000,
                    gid: 1000,
                },
            ),
        ],
    );
}

#[test]
fn every_response_variant() {
    check(
        "Response",
        &[
            (0, "Ok", Response::Ok),
            (1, "Error", Response::error(ErrorCode::Forbidden, "no")),
            (2, "Joined", Response::Joined { peers: vec![], observed_addr: "192.0.2.1:4000".into() }),
            (3, "Peers", Response::Peers(vec![])),
            (4, "Entries", Response::Entries(vec![entry()])),
            (5, "Entry", Response::Entry(entry())),
            (6, "File", Response::File { entry: entry(), manifest: sealed() }),
            (7, "Locations", Response::Locations { peers: vec![], holders: vec![], cached: vec![] }),
            (8, "Chunk", Response::Chunk),
            (9, "Has", Response::Has(vec![true])),
            (10, "Pong", Response::Pong { used: 0, capacity: 0, chunks: 0 }),
            (11, "Target", Response::Target("t".into())),
            (12, "Collected", Response::Collected(vec![true])),
            (13, "MemberSecret", Response::MemberSecret([0; 32])),
            (14, "Members", Response::Members(vec![])),
            (15, "Replicated", Response::Replicated { bytes: 1 }),
            (16, "Health", Response::Health(Box::default())),
            (17, "Link", Response::Link(link())),
            (18, "Links", Response::Links(vec![link()])),
            (19, "PunchAt", Response::PunchAt { addr: "192.0.2.1:4000".into() }),
        ],
    );
}

#[test]
fn every_event_variant() {
    let info = peer();
    check(
        "Event",
        &[
            (0, "PeerJoined", Event::PeerJoined(info.clone())),
            (1, "PeerLeft", Event::PeerLeft(NodeId([3; 32]))),
            (2, "PeerDown", Event::PeerDown(NodeId([3; 32]))),
            (3, "PeerAddrChanged", Event::PeerAddrChanged(info)),
        ],
    );
}

#[test]
fn error_codes_and_small_enums_keep_their_numbers() {
    let codes = [
        ErrorCode::NotFound,
        ErrorCode::AlreadyExists,
        ErrorCode::NotADirectory,
        ErrorCode::IsADirectory,
        ErrorCode::NotEmpty,
        ErrorCode::InvalidArgument,
        ErrorCode::NoSpace,
        ErrorCode::Corrupt,
        ErrorCode::Unsupported,
        ErrorCode::NotMember,
        ErrorCode::Internal,
        ErrorCode::Busy,
        ErrorCode::Forbidden,
        ErrorCode::CommitWhole,
    ];
    for (i, code) in codes.iter().enumerate() {
        assert_eq!(postcard::to_stdvec(code).unwrap(), vec![i as u8], "{code:?}");
        assert!(WIRE_MD.contains(&format!("{i} {code:?}")), "docs/wire.md lists ErrorCode {code:?} as {i}");
    }
    assert_eq!(postcard::to_stdvec(&Role::Tracker).unwrap(), [2]);
    assert_eq!(postcard::to_stdvec(&PeerState::Left).unwrap(), [2]);
    assert_eq!(postcard::to_stdvec(&PeerState::Draining).unwrap(), [3]);
    assert_eq!(postcard::to_stdvec(&EntryKind::Special).unwrap(), [3]);
    assert_eq!(postcard::to_stdvec(&Reach::Nat).unwrap(), [2]);
    assert_eq!(postcard::to_stdvec(&Reach::Relay).unwrap(), [4]);
    assert_eq!(postcard::to_stdvec(&RendezvousPath::Relay).unwrap(), [0]);
}

/// A sealed manifest's bytes, pinned: the wrapped key and body as byte strings, then the
/// deltas (protocol 7), each a byte string.
#[test]
fn golden_sealed_manifest_with_a_delta() {
    let bytes = postcard::to_stdvec(&sealed()).unwrap();
    assert_eq!(bytes, [0x01, 0x01, 0x01, 0x02, 0x01, 0x01, 0x03]);
}

#[test]
fn golden_hello_with_a_member_proof() {
    let hello = Hello {
        version: 5,
        role: Role::Client,
        proof: [0x11; 32],
        member: Some(MemberProof { name: "ann".into(), proof: [0x22; 32] }),
        link: None,
    };
    let mut expected = vec![
        0x05, // version 5 (varint)
        0x01, // role Client
    ];
    expected.extend([0x11; 32]); // swarm proof
    expected.extend([0x01, 0x03, b'a', b'n', b'n']); // Some, name length 3, "ann"
    expected.extend([0x22; 32]); // member proof
    expected.push(0x00); // no link
    assert_eq!(postcard::to_stdvec(&hello).unwrap(), expected);
    // The version is read alone first, from a hello of any protocol.
    let v: HelloVersion = postcard::from_bytes(&expected).unwrap();
    assert_eq!(v.version, 5);
    let link = Hello { member: None, link: Some(LinkId([0x33; 16])), ..hello };
    let mut expected = vec![0x05, 0x01];
    expected.extend([0x11; 32]); // proof, keyed by the link's secret
    expected.push(0x00); // no member proof
    expected.push(0x01); // Some link
    expected.extend([0x33; 16]);
    assert_eq!(postcard::to_stdvec(&link).unwrap(), expected);
    let refused = HelloReply::Refused { reason: "no".into() };
    assert_eq!(postcard::to_stdvec(&refused).unwrap(), [0x01, 0x02, b'n', b'o']);
}
