//! Messages. Every enum here is postcard-encoded by variant index: append new variants at
//! the end, never reorder or remove (docs/wire.md lists the indices).

use serde::{Deserialize, Serialize};

use crate::{ChunkId, FileId, LinkId, NodeId};

/// Which kind of node opened a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Role {
    Peer,
    Client,
    Tracker,
}

/// First frame on a connection, sent by the dialer after the TLS handshake.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    pub version: u16,
    /// What the dialer says it is. A claim: rights come from [`Credential`], which the
    /// listener decides from the proofs.
    pub role: Role,
    /// MAC over the TLS exporter value keyed by the swarm secret: proves membership and
    /// binds the proof to this TLS session, so it cannot be replayed elsewhere.
    pub proof: [u8; 32],
    /// A member's own credential, proven the same way (protocol 3).
    pub member: Option<MemberProof>,
    /// Set by the holder of a link (protocol 5): `proof` is then keyed by that link's
    /// secret instead of the swarm secret, and so is the listener's answer.
    pub link: Option<LinkId>,
}

/// The first field of every [`Hello`], whatever its version: read first, so a node of
/// another protocol version is told so instead of failing to decode.
#[derive(Clone, Copy, Debug, Deserialize)]
pub struct HelloVersion {
    pub version: u16,
}

/// A member's name and `BLAKE3-keyed(member_secret, "member" || TLS exporter)`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberProof {
    pub name: String,
    pub proof: [u8; 32],
}

/// A member's credential as its home keeps it: revocable on its own, unlike the swarm secret.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberKey {
    pub name: String,
    pub secret: [u8; 32],
    pub read_only: bool,
}

impl std::fmt::Debug for MemberKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemberKey").field("name", &self.name).field("read_only", &self.read_only).finish()
    }
}

/// What a connection has proven, as the listener decided it (never as the dialer claimed).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Credential {
    /// The swarm secret only: a storage peer (or a member token from before protocol 3).
    Peer,
    /// A member credential the tracker checked.
    Member { name: String, read_only: bool },
    /// The tracker's own identity (its pinned NodeId): admin at the tracker, and the only
    /// node whose orders to delete chunks a peer follows.
    Tracker,
    /// A link's holder (protocol 5): reads the one file the link names, nothing else.
    Link { id: LinkId },
}

/// As log lines show it: `peer`, `member ann`, `read-only member bob`, `tracker`, `link 1a2b3c4d`.
impl std::fmt::Display for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Credential::Peer => f.write_str("peer"),
            Credential::Member { name, read_only: false } => write!(f, "member {name}"),
            Credential::Member { name, read_only: true } => write!(f, "read-only member {name}"),
            Credential::Tracker => f.write_str("tracker"),
            Credential::Link { id } => write!(f, "link {}", id.short()),
        }
    }
}

/// As log lines show it: `peer`, `client`, `tracker`.
impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Role::Peer => "peer",
            Role::Client => "client",
            Role::Tracker => "tracker",
        })
    }
}

/// A link as `swarmfs link ls` shows it (protocol 5).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkInfo {
    pub id: LinkId,
    pub file_id: FileId,
    /// The file's path when the link was made.
    pub path: String,
    /// The member who made it.
    pub created_by: String,
    pub created_ms: i64,
    pub revoked: bool,
}

/// A member as `swarmfs member ls` shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberInfo {
    pub name: String,
    pub read_only: bool,
    pub revoked: bool,
    pub created_ms: i64,
}

/// The listener's answer to a [`Hello`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum HelloReply {
    Welcome { version: u16, proof: [u8; 32] },
    Refused { reason: String },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PeerState {
    Up,
    Down,
    Left,
    /// Up and serving reads, but being emptied (`swarmfs peer drain`): no new chunks are
    /// placed on it and its copies do not count towards any file's R (protocol 4).
    Draining,
}

impl PeerState {
    /// Whether the peer answers requests now (up or draining).
    pub fn is_live(self) -> bool {
        matches!(self, PeerState::Up | PeerState::Draining)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            PeerState::Up => "up",
            PeerState::Down => "down",
            PeerState::Left => "left",
            PeerState::Draining => "draining",
        }
    }
}

/// Whether a peer can be dialled at its advertised address, as the tracker found by dialling
/// it back when it joined (protocol 5).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Reach {
    /// Not tested yet (the dial-back is under way).
    #[default]
    Unknown,
    /// The tracker reached it at its advertised address.
    Direct,
    /// It could not be reached there: behind NAT or a firewall, or a wrong `--advertise`.
    /// Only the connections it opens reach it (the tracker's orders go over its session);
    /// others reach it by hole punching or through the relay. Which of the two works is not
    /// known yet.
    Nat,
    /// Behind NAT, and the last hole punch to it worked (protocol 6).
    Punch,
    /// Behind NAT, and the last hole punch to it failed (a NAT that maps each connection to
    /// a new port): only the tracker's relay reaches it (protocol 6).
    Relay,
}

impl Reach {
    pub fn as_str(self) -> &'static str {
        match self {
            Reach::Unknown => "unknown",
            Reach::Direct => "direct",
            Reach::Nat => "nat",
            Reach::Punch => "nat-punch",
            Reach::Relay => "nat-relay",
        }
    }

    /// Whether only the connections it opens reach it (hole punching or the relay reach it
    /// from others).
    pub fn behind_nat(self) -> bool {
        matches!(self, Reach::Nat | Reach::Punch | Reach::Relay)
    }
}

/// What the tracker knows of a peer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerInfo {
    pub node: NodeId,
    pub addrs: Vec<String>,
    pub capacity: u64,
    pub used: u64,
    pub chunks: u64,
    /// Requests in flight on the peer when it last reported.
    pub load: u32,
    pub state: PeerState,
    /// A cached source run by a link's holder (protocol 5): it admits only that link's
    /// hello, so dial it with that link's secret (derived from the swarm secret).
    pub link: Option<LinkId>,
    /// Whether it can be dialled at `addrs` (protocol 5).
    pub reach: Reach,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum EntryKind {
    Dir,
    File,
    Symlink,
    /// A FIFO, socket or device node: metadata only, opened by the local kernel.
    Special,
}

/// One namespace entry as listed or stat'ed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntryInfo {
    pub path: String,
    pub kind: EntryKind,
    pub size: u64,
    pub mtime_ms: i64,
    pub file_id: Option<FileId>,
    pub chunks: u32,
    /// Permission bits (07777), plus the S_IFMT type bits for special files. The tracker
    /// stores mode and ownership; mounts enforce them (default_permissions).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// Device number of a device node.
    pub rdev: u32,
    /// Last change to the entry's metadata or content.
    pub ctime_ms: i64,
    /// Link count: 1 for files, 2 + subdirectories for directories.
    pub nlink: u32,
    /// Durable copies the file's writer asked for (R); 0 for anything but a file with
    /// content (protocol 4).
    pub replicas: u8,
}

/// A manifest encrypted by the client: the tracker stores it without being able to read it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SealedManifest {
    /// The per-file manifest key, encrypted under a key derived from the data key.
    #[serde(with = "byte_string")]
    pub wrapped_key: Vec<u8>,
    /// The manifest, encrypted under the per-file key.
    #[serde(with = "byte_string")]
    pub body: Vec<u8>,
    /// Deltas committed after `body` (`CommitDelta`), oldest first, each encrypted under
    /// the same per-file key; laid over the manifest in order (protocol 7). Empty in a
    /// `CommitFile`.
    pub deltas: Vec<SealedDelta>,
}

/// One manifest delta, encrypted by the client under its base's per-file key (protocol 7).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SealedDelta(#[serde(with = "byte_string")] pub Vec<u8>);

/// A `Vec<u8>` as one byte string rather than a sequence of numbers: with postcard the same
/// bytes on the wire (a varint length, then the bytes), but encoded and decoded as one copy
/// instead of one call per byte. A sealed manifest reaches about 126 KB, and decoding it a
/// byte at a time was 7 % of the tracker's CPU under a mount's fsyncs.
mod byte_string {
    use serde::de::{SeqAccess, Visitor};
    use serde::{Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(v)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        d.deserialize_byte_buf(Bytes)
    }

    struct Bytes;

    impl<'de> Visitor<'de> for Bytes {
        type Value = Vec<u8>;

        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a byte string")
        }

        fn visit_bytes<E>(self, v: &[u8]) -> Result<Vec<u8>, E> {
            Ok(v.to_vec())
        }

        fn visit_byte_buf<E>(self, v: Vec<u8>) -> Result<Vec<u8>, E> {
            Ok(v)
        }

        // Formats without byte strings (JSON) write a sequence of numbers.
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<u8>, A::Error> {
            let mut v = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1 << 20));
            while let Some(b) = seq.next_element()? {
                v.push(b);
            }
            Ok(v)
        }
    }
}

/// Which peers acknowledged a chunk as durable.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkPlacement {
    pub chunk: ChunkId,
    pub holders: Vec<NodeId>,
}

/// Requests. Tracker and peers each answer the subset that is theirs and refuse the rest
/// with [`ErrorCode::Unsupported`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    // ---- peer -> tracker
    Join {
        addrs: Vec<String>,
        capacity: u64,
    },
    Heartbeat {
        used: u64,
        chunks: u64,
        load: u32,
        /// What the peer can really hold now: `--capacity`, or less when its disk has less
        /// free space (protocol 3).
        capacity: u64,
        /// The peer's background workers (scrub), for `swarmfs health` (protocol 4).
        workers: Vec<WorkerStatus>,
    },
    Leave,
    Subscribe,
    /// The peer's whole inventory, in batches; `first` replaces what the tracker had.
    Inventory {
        chunks: Vec<ChunkId>,
        first: bool,
    },
    RegisterChunks {
        chunks: Vec<ChunkId>,
    },
    UnregisterChunks {
        chunks: Vec<ChunkId>,
    },
    // ---- client -> tracker
    ListPeers,
    Mkdir {
        path: String,
        parents: bool,
    },
    List {
        path: String,
    },
    Stat {
        path: String,
    },
    Rename {
        from: String,
        to: String,
    },
    Remove {
        path: String,
        recursive: bool,
    },
    CommitFile {
        path: String,
        size: u64,
        file_id: FileId,
        manifest: SealedManifest,
        placements: Vec<ChunkPlacement>,
        /// The entry's modification time; `None` is the time of the commit (protocol 3).
        mtime_ms: Option<i64>,
        /// Durable copies wanted of every chunk (R): what repair restores (protocol 4).
        replicas: u8,
    },
    OpenFile {
        path: String,
    },
    Search {
        text: String,
    },
    Locate {
        chunks: Vec<ChunkId>,
    },
    ReportBadChunk {
        chunk: ChunkId,
        node: NodeId,
    },
    // ---- client -> peer; PutChunk carries the ciphertext as frame payload
    PutChunk {
        chunk: ChunkId,
    },
    /// `len == u64::MAX` reads to the end of the chunk.
    GetChunk {
        chunk: ChunkId,
        offset: u64,
        len: u64,
    },
    HasChunks {
        chunks: Vec<ChunkId>,
    },
    DeleteChunks {
        chunks: Vec<ChunkId>,
    },
    Ping,
    // ---- client -> tracker (protocol 2)
    /// Changes permission bits, ownership and/or the modification time of an entry.
    SetAttr {
        path: String,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        mtime_ms: Option<i64>,
    },
    /// Creates an empty file, a directory, a symlink (`target`) or a special file (`rdev`);
    /// fails with AlreadyExists if the name is taken. `time_ms` (protocol 9): the entry's
    /// mtime and ctime, from a mount that answered the create before asking (its answer and
    /// the entry must agree); the tracker's clock otherwise.
    Create {
        path: String,
        kind: EntryKind,
        mode: u32,
        uid: u32,
        gid: u32,
        rdev: u32,
        target: Option<String>,
        time_ms: Option<i64>,
    },
    ReadLink {
        path: String,
    },
    /// Garbage collection, tracker -> peer: delete these chunks unless one was stored (or
    /// stored again) within the last `idle_ms`; answers `Collected`, true where it is gone.
    CollectChunks {
        chunks: Vec<ChunkId>,
        idle_ms: u64,
    },
    // ---- admin (the tracker's own identity) -> tracker (protocol 3)
    /// Registers a member; answers `MemberSecret`.
    MemberAdd {
        name: String,
        read_only: bool,
    },
    MemberList,
    /// Refuses the member's credential from now on and closes its connections.
    MemberRevoke {
        name: String,
    },
    // ---- protocol 4: self-healing
    /// Tracker -> peer: fetch `chunk` from one of `sources` (in order), verify it, store it
    /// durably, then answer `Replicated`.
    ReplicateChunk {
        chunk: ChunkId,
        sources: Vec<PeerInfo>,
    },
    /// Member or admin -> tracker: answers `Health`.
    Health,
    /// Admin -> tracker: start (`on`) or stop draining a peer.
    Drain {
        node: NodeId,
        on: bool,
    },
    /// Member -> tracker: this connection's node serves these chunks (verified copies it
    /// downloaded) at `addrs`, as a cached source, until the connection closes. `replace`
    /// drops what it offered before.
    Offer {
        addrs: Vec<String>,
        chunks: Vec<ChunkId>,
        replace: bool,
    },
    // ---- protocol 5: links
    /// Member -> tracker: make a link to the file at `path`, which must still be the
    /// version `file_id` (the caller read its key from that version's manifest). Answers
    /// `Link`.
    LinkCreate {
        path: String,
        file_id: FileId,
    },
    LinkList,
    /// Refuses the link from now on and closes its connections.
    LinkRevoke {
        id: LinkId,
    },
    /// Link holder -> tracker: the file the link names, as `File` (its entry's path is the
    /// bare name: a link tells nothing about the directories around the file).
    OpenLink,
    /// Tracker -> peer: dial `to` and store your copy of `chunk` there (repair from a peer
    /// behind NAT, which the target cannot dial: the source dials out instead); answers
    /// `Replicated` once `to` has it durably.
    PushChunk {
        chunk: ChunkId,
        to: PeerInfo,
    },
    // ---- protocol 6: NAT traversal
    /// Node -> tracker, the first request on a fresh connection: splice this connection to
    /// `to` (behind NAT) through the tracker. Answers `Ok` once `to` has joined the splice;
    /// from then on the connection carries the bytes of a connection to `to`, whose own TLS
    /// and hello run inside, so the tracker sees only ciphertext.
    Relay {
        to: NodeId,
    },
    /// Peer -> tracker, the first request on a fresh connection: the other leg of the relay
    /// `token` (from a `Rendezvous` order). Answers `Ok`, then carries the relayed bytes.
    RelayJoin {
        token: u64,
    },
    /// Node -> tracker, on a fresh connection from the local port it will punch from: meet
    /// `to` (behind NAT). Answers `PunchAt` with the address `to` punches from, once `to` is
    /// ready; both then connect to each other at once (TCP simultaneous open).
    Punch {
        to: NodeId,
    },
    /// Peer -> tracker, on a fresh connection from the local port it will punch from: ready
    /// for the punch `token`. Answers `Ok`; the tracker passes on this connection's source
    /// address.
    PunchReady {
        token: u64,
    },
    /// Tracker -> peer, over its session: `from` wants a connection to this peer; open the
    /// leg `path` names, and serve what comes over it as any connection. Answers `Ok` at once.
    Rendezvous {
        token: u64,
        from: NodeId,
        path: RendezvousPath,
    },
    /// Node -> tracker, on the connection it sent `Punch` on: whether the punch to `to` ended
    /// in a connection (TLS and hello done). The tracker shows `to` as `Punch` or `Relay`.
    Punched {
        to: NodeId,
        ok: bool,
    },
    // ---- protocol 7
    /// Client -> tracker: a new version of the file at `path`, `size` bytes long, described
    /// by what changed since `parent`, its current version: `delta` is kept after the
    /// file's manifest (and its earlier deltas), `placements` name the chunks it adds (with
    /// their holders). Answers `Entry`;
    /// `CommitWhole` when `parent` is no longer the file's version or the file has as many
    /// deltas as the tracker keeps: the caller then commits the version whole.
    CommitDelta {
        path: String,
        size: u64,
        parent: FileId,
        file_id: FileId,
        delta: SealedDelta,
        placements: Vec<ChunkPlacement>,
        mtime_ms: Option<i64>,
    },
    // ---- protocol 11
    /// Client -> tracker: `CommitFile` of a file this client has just created and has not
    /// made the entry for yet (a mount's small file closed right after its open): if `path`
    /// has no entry, the new one takes `mode`, `uid` and `gid`, as `Create` would have given
    /// it; an entry made meanwhile keeps its own, as under any commit. Answers `Entry`.
    CommitNewFile {
        path: String,
        size: u64,
        file_id: FileId,
        manifest: SealedManifest,
        placements: Vec<ChunkPlacement>,
        mtime_ms: Option<i64>,
        replicas: u8,
        mode: u32,
        uid: u32,
        gid: u32,
    },
}

/// How a node behind NAT is reached when it cannot be dialled (see `Request::Rendezvous`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RendezvousPath {
    /// Dial the tracker and send `RelayJoin { token }`.
    Relay,
    /// Send `PunchReady { token }` to the tracker from a fresh local port, then connect from
    /// that port to `at` (the initiator's public address) until it answers.
    Punch { at: String },
}

impl Request {
    /// Whether this request, first on a connection, turns it into a relayed stream.
    pub fn takes_over_connection(&self) -> bool {
        matches!(self, Request::Relay { .. } | Request::RelayJoin { .. })
    }
}

impl Request {
    /// Short name for logs and metrics.
    pub fn name(&self) -> &'static str {
        match self {
            Request::Join { .. } => "join",
            Request::Heartbeat { .. } => "heartbeat",
            Request::Leave => "leave",
            Request::Subscribe => "subscribe",
            Request::Inventory { .. } => "inventory",
            Request::RegisterChunks { .. } => "register_chunks",
            Request::UnregisterChunks { .. } => "unregister_chunks",
            Request::ListPeers => "list_peers",
            Request::Mkdir { .. } => "mkdir",
            Request::List { .. } => "list",
            Request::Stat { .. } => "stat",
            Request::Rename { .. } => "rename",
            Request::Remove { .. } => "remove",
            Request::CommitFile { .. } => "commit_file",
            Request::OpenFile { .. } => "open_file",
            Request::CommitDelta { .. } => "commit_delta",
            Request::Search { .. } => "search",
            Request::Locate { .. } => "locate",
            Request::ReportBadChunk { .. } => "report_bad_chunk",
            Request::PutChunk { .. } => "put_chunk",
            Request::GetChunk { .. } => "get_chunk",
            Request::HasChunks { .. } => "has_chunks",
            Request::DeleteChunks { .. } => "delete_chunks",
            Request::Ping => "ping",
            Request::SetAttr { .. } => "set_attr",
            Request::Create { .. } => "create",
            Request::CommitNewFile { .. } => "commit_new_file",
            Request::ReadLink { .. } => "read_link",
            Request::CollectChunks { .. } => "collect_chunks",
            Request::MemberAdd { .. } => "member_add",
            Request::MemberList => "member_list",
            Request::MemberRevoke { .. } => "member_revoke",
            Request::ReplicateChunk { .. } => "replicate_chunk",
            Request::Health => "health",
            Request::Drain { .. } => "drain",
            Request::Offer { .. } => "offer",
            Request::LinkCreate { .. } => "link_create",
            Request::LinkList => "link_list",
            Request::LinkRevoke { .. } => "link_revoke",
            Request::OpenLink => "open_link",
            Request::PushChunk { .. } => "push_chunk",
            Request::Relay { .. } => "relay",
            Request::RelayJoin { .. } => "relay_join",
            Request::Punch { .. } => "punch",
            Request::PunchReady { .. } => "punch_ready",
            Request::Rendezvous { .. } => "rendezvous",
            Request::Punched { .. } => "punched",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ErrorCode {
    NotFound,
    AlreadyExists,
    NotADirectory,
    IsADirectory,
    NotEmpty,
    InvalidArgument,
    NoSpace,
    Corrupt,
    Unsupported,
    NotMember,
    Internal,
    Busy,
    /// The connection's credential does not allow this request (protocol 3).
    Forbidden,
    /// A `CommitDelta` the tracker does not take: commit the version whole (protocol 7).
    CommitWhole,
}

impl ErrorCode {
    /// snake_case, for metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::NotFound => "not_found",
            ErrorCode::AlreadyExists => "already_exists",
            ErrorCode::NotADirectory => "not_a_directory",
            ErrorCode::IsADirectory => "is_a_directory",
            ErrorCode::NotEmpty => "not_empty",
            ErrorCode::InvalidArgument => "invalid_argument",
            ErrorCode::NoSpace => "no_space",
            ErrorCode::Corrupt => "corrupt",
            ErrorCode::Unsupported => "unsupported",
            ErrorCode::NotMember => "not_member",
            ErrorCode::Internal => "internal",
            ErrorCode::Busy => "busy",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::CommitWhole => "commit_whole",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    Ok,
    Error {
        code: ErrorCode,
        message: String,
    },
    /// Answer to Join: the members the tracker knows, so the peer starts with a full view,
    /// and the address the tracker sees this connection come from (protocol 5): behind NAT,
    /// the router's public side, not the peer's own.
    Joined {
        peers: Vec<PeerInfo>,
        observed_addr: String,
    },
    Peers(Vec<PeerInfo>),
    Entries(Vec<EntryInfo>),
    Entry(EntryInfo),
    File {
        entry: EntryInfo,
        manifest: SealedManifest,
    },
    /// `holders[i]` lists indices into `peers` for the i-th requested chunk: durable
    /// copies; `cached[i]` the same for cached sources (downloaders serving what they
    /// fetched, protocol 4), which never count towards R.
    Locations {
        peers: Vec<PeerInfo>,
        holders: Vec<Vec<u32>>,
        cached: Vec<Vec<u32>>,
    },
    /// The chunk bytes travel as the frame payload.
    Chunk,
    Has(Vec<bool>),
    Pong {
        used: u64,
        capacity: u64,
        chunks: u64,
    },
    /// A symlink's target.
    Target(String),
    /// Answer to CollectChunks: true where the chunk is gone (protocol 3; `Has` meant this
    /// before, with the opposite of its name's meaning).
    Collected(Vec<bool>),
    /// Answer to MemberAdd: the new member's secret (the caller composes its token).
    MemberSecret([u8; 32]),
    Members(Vec<MemberInfo>),
    /// Answer to ReplicateChunk: the copy is durable; `bytes` is its length (protocol 4).
    Replicated {
        bytes: u64,
    },
    Health(Box<HealthReport>),
    /// Answer to LinkCreate (protocol 5).
    Link(LinkInfo),
    Links(Vec<LinkInfo>),
    /// Answer to Punch: the public address the other end punches from.
    PunchAt {
        addr: String,
    },
}

impl Response {
    pub fn error(code: ErrorCode, message: impl Into<String>) -> Self {
        Response::Error { code, message: message.into() }
    }
}

/// One background worker as `swarmfs health` shows it (protocol 4).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerStatus {
    /// `repair`, `scrub`, ...; prefixed by the node's short id for a peer's workers.
    pub name: String,
    /// `working`, `idle`, `backing off` or `stopped`.
    pub state: String,
    /// What it did last, in words (e.g. "pass 3, 41% of 2.1 GiB").
    pub detail: String,
    /// Units of work done since start (chunks repaired, chunks verified, ...).
    pub done: u64,
    pub errors: u64,
    pub last_error: Option<String>,
}

/// Counts of files or chunks by state.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateCounts {
    /// At least R copies on live, not draining peers.
    pub healthy: u64,
    /// Fewer than R such copies, at least one live copy, no repair running.
    pub under_replicated: u64,
    /// Fewer than R, and a repair order is in flight.
    pub repairing: u64,
    /// No live copy at all: unreadable until a holder comes back.
    pub lost: u64,
    /// Shared from a member's disk with no durable copy wanted (R = 0): readable while a
    /// source serves it, never repaired.
    pub shared: u64,
}

/// A peer as `swarmfs health` shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerHealth {
    pub node: NodeId,
    pub state: PeerState,
    /// How long it has been down or gone, when it is.
    pub down_for_ms: Option<u64>,
    /// Chunks that would fall below R if this peer went away now.
    pub sole_copies: u64,
}

/// The swarm's health, computed by the tracker's repair worker (protocol 4).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthReport {
    pub files: StateCounts,
    pub chunks: StateCounts,
    /// Bytes of files that are not healthy.
    pub bytes_at_risk: u64,
    /// Paths of files with a lost chunk (at most 1000), so a user knows what to restore.
    pub lost_files: Vec<String>,
    pub peers: Vec<PeerHealth>,
    /// Chunks waiting for a repair order, and orders in flight.
    pub repair_queued: u64,
    pub repair_in_flight: u64,
    /// Chunks and bytes copied by repair since the tracker started, and the recent rate.
    pub repaired_chunks: u64,
    pub repaired_bytes: u64,
    pub repair_rate_bps: u64,
    /// After how long a down peer's copies are replaced.
    pub repair_after_ms: u64,
    pub workers: Vec<WorkerStatus>,
}

/// Pushed by the tracker to every subscribed peer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Event {
    PeerJoined(PeerInfo),
    PeerLeft(NodeId),
    PeerDown(NodeId),
    PeerAddrChanged(PeerInfo),
}

/// One line for logs: short ids and plain addresses, not a struct dump.
impl std::fmt::Display for Event {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Event::PeerJoined(p) => write!(f, "peer {} joined at {}", p.node.short(), p.addrs.join(",")),
            Event::PeerLeft(n) => write!(f, "peer {} left", n.short()),
            Event::PeerDown(n) => write!(f, "peer {} is down", n.short()),
            Event::PeerAddrChanged(p) => write!(f, "peer {} moved to {}", p.node.short(), p.addrs.join(",")),
        }
    }
}

#[cfg(test)]
mod display_tests {
    use super::*;

    #[test]
    fn credentials_and_roles_read_as_words_in_logs() {
        assert_eq!(Credential::Member { name: "ann".into(), read_only: true }.to_string(), "read-only member ann");
        assert_eq!(
            Credential::Link { id: LinkId([0xab; 16]) }.to_string(),
            format!("link {}", LinkId([0xab; 16]).short())
        );
        assert_eq!(Role::Client.to_string(), "client");
    }
}

#[cfg(test)]
mod byte_string_tests {
    use super::*;

    #[test]
    fn a_sealed_manifest_has_the_bytes_on_the_wire_it_had_as_a_sequence() {
        #[derive(Serialize, Deserialize, PartialEq, Debug)]
        struct AsSequence {
            wrapped_key: Vec<u8>,
            body: Vec<u8>,
            deltas: Vec<Vec<u8>>,
        }
        let body: Vec<u8> = (0..100_000u32).map(|i| (i * 7 % 256) as u8).collect();
        let delta = body[..5_000].to_vec();
        let sealed =
            SealedManifest { wrapped_key: vec![9; 60], body: body.clone(), deltas: vec![SealedDelta(delta.clone())] };
        let wire = postcard::to_allocvec(&sealed).unwrap();
        let before = AsSequence { wrapped_key: vec![9; 60], body, deltas: vec![delta] };
        assert_eq!(wire, postcard::to_allocvec(&before).unwrap(), "the same bytes as sequences of u8");
        assert_eq!(postcard::from_bytes::<AsSequence>(&wire).unwrap(), before);
        assert_eq!(postcard::from_bytes::<SealedManifest>(&wire).unwrap(), sealed);
    }
}
