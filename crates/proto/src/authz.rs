//! Who may send what: the one authorization table. Both services (tracker and peer) check
//! every request against it before handling it (`swarmfs_net::serve` does, with the
//! connection's [`Credential`]); docs/wire.md mirrors it.

use crate::{Credential, Request};

/// Which kind of node is being asked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Listener {
    Tracker,
    Peer,
}

/// What a request needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Need {
    /// Anyone who proved the swarm secret or a link: reading chunks by id, whose
    /// ciphertext is useless without the key (which only members and the holder of that
    /// file's link have).
    Anyone,
    /// Anyone who proved the swarm secret.
    AnyNode,
    /// A storage peer's session (or the tracker itself).
    StoragePeer,
    /// A member (read-only or read-write), or the tracker itself.
    Reader,
    /// A member, or a link's holder about the link's own file: the tracker checks that
    /// every chunk asked about is that file's.
    FileReader,
    /// A link's holder.
    LinkHolder,
    /// A read-write member.
    Writer,
    /// The tracker's own identity: member management at the tracker, orders that delete
    /// data at a peer.
    Tracker,
}

/// What `req` needs when sent to `at`. Requests a listener does not serve at all need
/// nothing here; the listener answers them `Unsupported`.
pub fn need(at: Listener, req: &Request) -> Need {
    use Request::*;
    match (at, req) {
        (Listener::Tracker, Join { .. } | Heartbeat { .. } | Leave | Subscribe | Inventory { .. })
        | (Listener::Tracker, RegisterChunks { .. } | UnregisterChunks { .. }) => Need::StoragePeer,
        (Listener::Tracker, List { .. } | Stat { .. } | OpenFile { .. } | Search { .. } | ReadLink { .. })
        | (Listener::Tracker, Health | LinkList) => Need::Reader,
        (Listener::Tracker, Locate { .. } | ReportBadChunk { .. } | Offer { .. }) => Need::FileReader,
        (Listener::Tracker, OpenLink) => Need::LinkHolder,
        (Listener::Tracker, Mkdir { .. } | CommitFile { .. } | CommitDelta { .. } | CommitNewFile { .. })
        | (Listener::Tracker, Remove { .. } | Rename { .. })
        | (Listener::Tracker, SetAttr { .. } | Create { .. } | LinkCreate { .. } | LinkRevoke { .. }) => Need::Writer,
        (Listener::Tracker, MemberAdd { .. } | MemberList | MemberRevoke { .. } | Drain { .. }) => Need::Tracker,
        (Listener::Peer, DeleteChunks { .. } | CollectChunks { .. } | ReplicateChunk { .. } | PushChunk { .. })
        | (Listener::Peer, Rendezvous { .. }) => Need::Tracker,
        // A link's holder reaches sources behind NAT too; the connection inside still
        // proves its link to the source.
        (Listener::Tracker, Relay { .. } | Punch { .. }) => Need::Anyone,
        (Listener::Peer, GetChunk { .. } | HasChunks { .. } | Ping) => Need::Anyone,
        _ => Need::AnyNode,
    }
}

/// What the request does, for the refusal message.
fn doing(req: &Request) -> &'static str {
    use Request::*;
    match req {
        Join { .. } | Heartbeat { .. } | Leave | Subscribe | Inventory { .. } => "take part as a storage peer",
        RegisterChunks { .. } | UnregisterChunks { .. } => "announce chunks",
        List { .. } => "list directories",
        Stat { .. } => "look at files",
        OpenFile { .. } | Locate { .. } => "read files",
        Search { .. } => "search names",
        ReadLink { .. } => "read links",
        ReportBadChunk { .. } => "report bad chunks",
        Mkdir { .. } => "create directories",
        CommitFile { .. } | CommitDelta { .. } | CommitNewFile { .. } | Create { .. } => "write files",
        Remove { .. } => "remove files",
        Rename { .. } => "move files",
        SetAttr { .. } => "change attributes",
        MemberAdd { .. } | MemberList | MemberRevoke { .. } => "manage members",
        DeleteChunks { .. } | CollectChunks { .. } => "delete chunks",
        ReplicateChunk { .. } | PushChunk { .. } => "order repairs",
        Rendezvous { .. } => "open connections for others",
        Health => "see the swarm's health",
        Offer { .. } => "serve chunks as a cached source",
        Drain { .. } => "drain peers",
        LinkCreate { .. } => "make links",
        LinkRevoke { .. } => "revoke links",
        LinkList => "list links",
        OpenLink => "open a link",
        PutChunk { .. } => "store chunks",
        _ => "do that",
    }
}

/// Ok when `cred` may send `req` to `at`; otherwise the one line to show the user.
pub fn authorize(at: Listener, req: &Request, cred: &Credential) -> Result<(), String> {
    let ok = match (need(at, req), cred) {
        (Need::Anyone, _) | (_, Credential::Tracker) => true,
        (Need::AnyNode, c) => !matches!(c, Credential::Link { .. }),
        (Need::StoragePeer, c) => *c == Credential::Peer,
        (Need::Reader, c) => matches!(c, Credential::Member { .. }),
        (Need::FileReader, c) => matches!(c, Credential::Member { .. } | Credential::Link { .. }),
        (Need::LinkHolder, c) => matches!(c, Credential::Link { .. }),
        (Need::Writer, c) => matches!(c, Credential::Member { read_only: false, .. }),
        (Need::Tracker, _) => false,
    };
    if ok {
        return Ok(());
    }
    let what = doing(req);
    Err(match (need(at, req), cred) {
        (_, Credential::Link { .. }) => format!("a link reads one file and nothing else: it cannot {what}"),
        (Need::LinkHolder, _) => format!("only a link's holder may {what}"),
        (Need::Tracker, _) if at == Listener::Peer => format!("only the swarm's tracker may {what} on a peer"),
        (Need::Tracker, _) => format!("only the tracker's home may {what}"),
        (Need::StoragePeer, _) => format!("a member credential cannot {what}: use a peer token"),
        (_, Credential::Member { .. }) => {
            format!("this member token is read-only; a read-write member token is needed to {what}")
        }
        _ => format!("this token can only store chunks; a member token is needed to {what}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ChunkId;

    fn member(read_only: bool) -> Credential {
        Credential::Member { name: "m".into(), read_only }
    }

    #[test]
    fn the_table_in_words() {
        let t = Listener::Tracker;
        let rm = Request::Remove { path: "/x".into(), recursive: false };
        let ls = Request::List { path: "/".into() };
        assert_eq!(
            authorize(t, &rm, &Credential::Peer).unwrap_err(),
            "this token can only store chunks; a member token is needed to remove files"
        );
        assert!(authorize(t, &ls, &Credential::Peer).is_err(), "a peer token cannot even list names");
        assert!(authorize(t, &ls, &member(true)).is_ok());
        assert!(authorize(t, &rm, &member(true)).unwrap_err().contains("read-only"));
        assert!(authorize(t, &rm, &member(false)).is_ok());
        assert!(authorize(t, &Request::MemberList, &member(false)).is_err(), "members do not manage members");
        assert!(authorize(t, &Request::MemberList, &Credential::Tracker).is_ok());
        assert!(authorize(t, &Request::Leave, &Credential::Peer).is_ok());
        assert!(authorize(t, &Request::Leave, &member(false)).is_err());
        let p = Listener::Peer;
        let collect = Request::CollectChunks { chunks: vec![ChunkId([0; 32])], idle_ms: 0 };
        for c in [Credential::Peer, member(false)] {
            assert!(authorize(p, &collect, &c).unwrap_err().contains("only the swarm's tracker"));
            assert!(authorize(p, &Request::DeleteChunks { chunks: vec![] }, &c).is_err());
            assert!(authorize(p, &Request::GetChunk { chunk: ChunkId([0; 32]), offset: 0, len: 1 }, &c).is_ok());
        }
        assert!(authorize(p, &collect, &Credential::Tracker).is_ok());
        let repair = Request::ReplicateChunk { chunk: ChunkId([0; 32]), sources: vec![] };
        assert!(authorize(p, &repair, &Credential::Peer).unwrap_err().contains("only the swarm's tracker"));
        assert!(authorize(p, &repair, &Credential::Tracker).is_ok());
        assert!(authorize(t, &Request::Health, &member(true)).is_ok());
        assert!(authorize(t, &Request::Health, &Credential::Peer).is_err());
        let drain = Request::Drain { node: crate::NodeId([0; 32]), on: true };
        assert!(authorize(t, &drain, &member(false)).unwrap_err().contains("only the tracker's home"));
    }

    #[test]
    fn a_link_reads_its_file_and_nothing_else() {
        let link = Credential::Link { id: crate::LinkId([1; 16]) };
        let (t, p) = (Listener::Tracker, Listener::Peer);
        let chunk = ChunkId([0; 32]);
        let offer = Request::Offer { addrs: vec![], chunks: vec![chunk], replace: true };
        for ok in [Request::OpenLink, Request::Locate { chunks: vec![chunk] }, offer] {
            assert!(authorize(t, &ok, &link).is_ok(), "{ok:?}");
        }
        for ok in [Request::GetChunk { chunk, offset: 0, len: 1 }, Request::HasChunks { chunks: vec![] }, Request::Ping]
        {
            assert!(authorize(p, &ok, &link).is_ok(), "{ok:?}");
        }
        let refused = [
            (t, Request::List { path: "/".into() }),
            (t, Request::OpenFile { path: "/x".into() }),
            (t, Request::Stat { path: "/x".into() }),
            (t, Request::Search { text: "x".into() }),
            (t, Request::ListPeers),
            (t, Request::Join { addrs: vec![], capacity: 1 }),
            (t, Request::LinkList),
            (t, Request::LinkCreate { path: "/x".into(), file_id: crate::FileId([0; 32]) }),
            (t, Request::Health),
            (p, Request::PutChunk { chunk }),
        ];
        for (at, req) in refused {
            let e = authorize(at, &req, &link).unwrap_err();
            assert!(e.starts_with("a link reads one file and nothing else"), "{req:?}: {e}");
        }
        assert!(authorize(t, &Request::OpenLink, &member(false)).unwrap_err().contains("only a link's holder"));
        assert!(authorize(
            t,
            &Request::LinkCreate { path: "/x".into(), file_id: crate::FileId([0; 32]) },
            &member(true)
        )
        .unwrap_err()
        .contains("read-only"));
    }
}
