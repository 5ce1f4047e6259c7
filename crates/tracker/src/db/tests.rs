//! Namespace semantics against a real SQLite file.

use super::*;

fn p(s: &str) -> RemotePath {
    RemotePath::parse(s).unwrap()
}

fn file(db: &mut Db, path: &str, chunk: u8) {
    version(db, path, chunk, &[chunk]);
}

/// Commits version `id` of `path`, made of `chunks`, each on one holder.
fn version(db: &mut Db, path: &str, id: u8, chunks: &[u8]) {
    let m = SealedManifest { wrapped_key: vec![1], body: vec![2], deltas: vec![] };
    let placements: Vec<ChunkPlacement> =
        chunks.iter().map(|&c| ChunkPlacement { chunk: ChunkId([c; 32]), holders: vec![NodeId([9; 32])] }).collect();
    let new = NewFile {
        size: 10,
        file_id: FileId([id; 32]),
        manifest: &m,
        placements: &placements,
        mtime_ms: None,
        replicas: 2,
        created: None,
    };
    db.commit_file(&p(path), &new).unwrap();
}

fn names(db: &mut Db, dir: &str) -> Vec<String> {
    db.list(&p(dir)).unwrap().into_iter().map(|e| e.path).collect()
}

#[test]
fn namespace_semantics() {
    let dir = std::env::temp_dir().join(format!("swarmfs-db-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut db = Db::open(&dir.join("t.db")).unwrap();
    db.mkdir(&p("/a/b"), true).unwrap();
    assert!(matches!(db.mkdir(&p("/a"), false), Err(TrackerError::AlreadyExists(_))));
    assert!(matches!(db.mkdir(&p("/x/y"), false), Err(TrackerError::NotFound(_))));
    file(&mut db, "/a/b/f", 1);
    file(&mut db, "/a/g", 2);
    assert!(matches!(db.mkdir(&p("/a/g/h"), true), Err(TrackerError::NotADirectory(_))));
    assert!(matches!(db.remove(&p("/a"), false), Err(TrackerError::NotEmpty(_))));
    assert!(matches!(db.rename(&p("/a"), &p("/a/b/c")), Err(TrackerError::Invalid(_))));
    // Moving a directory moves everything below it.
    db.rename(&p("/a"), &p("/z")).unwrap();
    assert_eq!(names(&mut db, "/z/b"), vec!["/z/b/f"]);
    assert!(matches!(db.stat(&p("/a/b/f")), Err(TrackerError::NotFound(_))));
    // A file replaces a file; a file never replaces a directory.
    db.rename(&p("/z/g"), &p("/z/b/f")).unwrap();
    assert_eq!(db.stat(&p("/z/b/f")).unwrap().file_id, Some(FileId([2; 32])));
    file(&mut db, "/z/h", 3);
    assert!(matches!(db.rename(&p("/z/h"), &p("/z/b")), Err(TrackerError::IsADirectory(_))));
    // Names that look like LIKE patterns are plain names.
    db.mkdir(&p("/p%"), false).unwrap();
    db.mkdir(&p("/p_x"), false).unwrap();
    file(&mut db, "/p%/in", 4);
    db.rename(&p("/p%"), &p("/q")).unwrap();
    assert_eq!(names(&mut db, "/p_x"), Vec::<String>::new());
    assert_eq!(names(&mut db, "/q"), vec!["/q/in"]);
    assert_eq!(db.locate(&[ChunkId([4; 32]), ChunkId([7; 32])]).unwrap(), vec![vec![NodeId([9; 32])], vec![]]);
    db.remove(&p("/z"), true).unwrap();
    assert_eq!(names(&mut db, "/"), vec!["/p_x", "/q"]);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn a_commit_cannot_count_a_copy_the_collector_deleted_until_it_is_stored_again() {
    let dir = tempfile::tempdir().unwrap();
    let mut db = Db::open(&dir.path().join("t.db")).unwrap();
    let (chunk, a, b) = (ChunkId([7; 32]), NodeId([1; 32]), NodeId([2; 32]));
    // An upload stored the chunk on a and b, then stalled past the GC delay: both copies
    // were collected as orphans.
    db.add_locations(&a, &[chunk], false).unwrap();
    db.add_locations(&b, &[chunk], false).unwrap();
    db.gc_done(&a, &[chunk]).unwrap();
    db.gc_done(&b, &[chunk]).unwrap();
    let m = SealedManifest { wrapped_key: vec![1], body: vec![2], deltas: vec![] };
    let placements = [ChunkPlacement { chunk, holders: vec![a, b] }];
    let new = |id: u8| NewFile {
        size: 10,
        file_id: FileId([id; 32]),
        manifest: &m,
        placements: &placements,
        mtime_ms: None,
        replicas: 2,
        created: None,
    };
    let err = db.commit_file(&p("/late"), &new(1)).unwrap_err().to_string();
    assert!(err.contains("collected as garbage before this commit"), "{err}");
    assert!(matches!(db.stat(&p("/late")), Err(TrackerError::NotFound(_))), "nothing became visible");
    // b stores it again (a new upload of the same content): that copy counts, a's does not.
    db.add_locations(&b, &[chunk], false).unwrap();
    db.commit_file(&p("/late"), &new(2)).unwrap();
    assert_eq!(db.locate(&[chunk]).unwrap(), vec![vec![b]]);
    assert_eq!(db.stat(&p("/late")).unwrap().replicas, 2);
}

#[test]
fn a_file_of_many_chunks_commits_and_locates_in_groups_with_every_holder_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let mut db = Db::open(&dir.path().join("t.db")).unwrap();
    // More chunks than one statement takes, some repeated (a file with identical chunks),
    // each on two holders.
    let ids: Vec<ChunkId> =
        (0..GROUP * 2 + 7).map(|i| ChunkId(*blake3::hash(&(i % (GROUP + 3)).to_le_bytes()).as_bytes())).collect();
    let (a, b) = (NodeId([1; 32]), NodeId([2; 32]));
    let placements: Vec<ChunkPlacement> =
        ids.iter().map(|&chunk| ChunkPlacement { chunk, holders: vec![b, a] }).collect();
    let m = SealedManifest { wrapped_key: vec![1], body: vec![2], deltas: vec![] };
    let new = NewFile {
        size: 1,
        file_id: FileId([5; 32]),
        manifest: &m,
        placements: &placements,
        mtime_ms: None,
        replicas: 2,
        created: None,
    };
    db.commit_file(&p("/big"), &new).unwrap();
    let mut asked = ids.clone();
    asked.push(ChunkId([0xee; 32]));
    let holders = db.locate(&asked).unwrap();
    assert_eq!(holders.len(), asked.len(), "one answer per chunk asked, in order");
    assert!(holders[..ids.len()].iter().all(|h| h == &vec![a, b]), "both holders of every chunk, sorted");
    assert_eq!(holders[ids.len()], Vec::<NodeId>::new(), "an unknown chunk has none");
}

#[test]
fn a_create_committed_with_its_content_takes_its_mode_and_owner_unless_the_name_was_taken_meanwhile() {
    let dir = tempfile::tempdir().unwrap();
    let mut db = Db::open(&dir.path().join("t.db")).unwrap();
    let m = SealedManifest { wrapped_key: vec![1], body: vec![2], deltas: vec![] };
    let commit_new = |db: &mut Db, path: &str, id: u8| {
        let owner = Owner { mode: 0o600, uid: 1000, gid: 100 };
        let new = NewFile {
            size: 3,
            file_id: FileId([id; 32]),
            manifest: &m,
            placements: &[],
            mtime_ms: Some(5_000),
            replicas: 2,
            created: Some(owner),
        };
        db.commit_file(&p(path), &new).unwrap()
    };
    let dir_before = db.stat(&p("/")).unwrap().mtime_ms;
    let e = commit_new(&mut db, "/new", 1);
    assert_eq!((e.mode, e.uid, e.gid, e.size, e.mtime_ms), (0o600, 1000, 100, 3, 5_000));
    assert_eq!(names(&mut db, "/"), vec!["/new"]);
    assert!(db.stat(&p("/")).unwrap().mtime_ms >= dir_before, "the directory's times move as for a create");
    // Another client made the name first (as a create of its own would): the commit replaces
    // its content, as any close does, and the entry keeps the mode and owner it has.
    let other = NewEntry { kind: EntryKind::File, mode: 0o640, uid: 7, gid: 7, rdev: 0, target: None, time_ms: None };
    db.create(&p("/taken"), &other).unwrap();
    let e = commit_new(&mut db, "/taken", 2);
    assert_eq!((e.mode, e.uid, e.gid, e.file_id), (0o640, 7, 7, Some(FileId([2; 32]))));
}

#[test]
fn an_overwrite_keeps_shared_chunks_referenced_and_queues_only_what_it_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let mut db = Db::open(&dir.path().join("t.db")).unwrap();
    db.set_gc_delay(std::time::Duration::ZERO);
    version(&mut db, "/f", 1, &[1, 2, 3]);
    version(&mut db, "/g", 2, &[3]);
    // A flush of the mount: chunk 1 kept, 2 replaced by 4, 3 kept.
    version(&mut db, "/f", 3, &[1, 4, 3]);
    let due: Vec<ChunkId> = db.gc_due(100).unwrap().into_iter().map(|(c, _)| c).collect();
    assert_eq!(due, vec![ChunkId([2; 32])], "only the dropped chunk is garbage");
    // Removing /f leaves chunk 3 to /g alone.
    db.remove(&p("/f"), false).unwrap();
    let mut due: Vec<ChunkId> = db.gc_due(100).unwrap().into_iter().map(|(c, _)| c).collect();
    due.sort_by_key(|c| c.0);
    assert_eq!(due, vec![ChunkId([1; 32]), ChunkId([4; 32])], "the new version's own references moved with it");
}

/// The chunks referenced under the lineage of the file at `path`, sorted.
fn refs_of(db: &mut Db, path: &str) -> Vec<Vec<u8>> {
    let mut tx = db.begin().unwrap();
    let rows = tx
        .query(
            "SELECT r.chunk FROM refs AS r JOIN entries AS e ON e.lineage = r.lineage WHERE e.path = ?1 ORDER BY r.chunk",
            vals![path],
        )
        .unwrap();
    rows.into_iter().map(|r| r.blob(0).unwrap()).collect()
}

#[test]
fn a_new_version_of_a_large_file_changes_only_the_references_it_changed() {
    let dir = tempfile::tempdir().unwrap();
    let mut db = Db::open(&dir.path().join("t.db")).unwrap();
    db.set_gc_delay(std::time::Duration::ZERO);
    let first: Vec<u8> = (0..200).collect();
    version(&mut db, "/big", 1, &first);
    // A small write: chunk 7 replaced by 250, and a pack (251) added.
    let mut second = first.clone();
    second[7] = 250;
    second.push(251);
    version(&mut db, "/big", 2, &second);
    let mut tx = db.begin().unwrap();
    let changes_before = tx.query_one("SELECT total_changes()", &[]).unwrap().int(0).unwrap();
    drop(tx);
    let mut third = second.clone();
    third[9] = 252;
    version(&mut db, "/big", 3, &third);
    let mut tx = db.begin().unwrap();
    let changed = tx.query_one("SELECT total_changes()", &[]).unwrap().int(0).unwrap() - changes_before;
    drop(tx);
    // The entry, its directory's times, one reference in, one out, one queued, one location:
    // not 200 references rewritten.
    assert!(changed < 12, "a one-chunk change wrote {changed} rows");
    let mut want: Vec<Vec<u8>> = third.iter().map(|&c| vec![c; 32]).collect();
    want.sort();
    assert_eq!(refs_of(&mut db, "/big"), want, "exactly the new version's chunks are referenced");
    let due: Vec<ChunkId> = db.gc_due(100).unwrap().into_iter().map(|(c, _)| c).collect();
    assert_eq!(due, vec![ChunkId([7; 32]), ChunkId([9; 32])], "the two chunks replaced, and nothing else");
    // A rename carries the lineage: a later version still drops what it replaced.
    db.rename(&p("/big"), &p("/moved")).unwrap();
    let mut fourth = third.clone();
    fourth.truncate(100);
    version(&mut db, "/moved", 4, &fourth);
    assert_eq!(refs_of(&mut db, "/moved").len(), 100);
    assert_eq!(db.gc_due(1000).unwrap().len(), 101, "the 100 cut-off chunks and the pack are garbage");
    // A link to the current version checks its chunks through the lineage.
    assert!(db.file_has_chunks(&FileId([4; 32]), &[ChunkId([0; 32])]).unwrap());
    assert!(!db.file_has_chunks(&FileId([3; 32]), &[ChunkId([0; 32])]).unwrap(), "an older version has none");
    db.remove(&p("/moved"), false).unwrap();
    assert_eq!(db.gc_due(1000).unwrap().len(), 100, "removing the file drops the rest");
}

#[test]
fn a_file_written_before_lineages_drops_its_old_chunks_when_overwritten_after_the_upgrade() {
    let dir = tempfile::tempdir().unwrap();
    let fixture = concat!(env!("CARGO_MANIFEST_DIR"), "/../cli/tests/fixtures/protocol5/tracker/tracker.db");
    std::fs::copy(fixture, dir.path().join("t.db")).unwrap();
    let mut db = Db::open(&dir.path().join("t.db")).unwrap();
    db.set_gc_delay(std::time::Duration::ZERO);
    let old = refs_of(&mut db, "/d.bin");
    assert_eq!(old.len(), 5, "/d.bin (300000 bytes in 64 KiB chunks) keeps its references");
    version(&mut db, "/d.bin", 1, &[1]);
    let mut due: Vec<Vec<u8>> = db.gc_due(100).unwrap().into_iter().map(|(c, _)| c.0.to_vec()).collect();
    due.sort();
    assert_eq!(due, old, "the old version's chunks are garbage, referenced nowhere else");
    assert_eq!(refs_of(&mut db, "/d.bin"), vec![vec![1; 32]]);
}

/// Commits a delta `body` over version `parent` of `path`, as version `id`, adding `chunks`.
fn delta(db: &mut Db, path: &str, parent: u8, id: u8, body: u8, chunks: &[u8]) -> Result<EntryInfo, TrackerError> {
    let placements: Vec<ChunkPlacement> =
        chunks.iter().map(|&c| ChunkPlacement { chunk: ChunkId([c; 32]), holders: vec![NodeId([9; 32])] }).collect();
    let d = SealedDelta(vec![body]);
    let new = NewDelta {
        size: 10,
        parent: FileId([parent; 32]),
        file_id: FileId([id; 32]),
        delta: &d,
        placements: &placements,
        mtime_ms: Some(77),
    };
    db.commit_delta(&p(path), &new)
}

fn deltas_of(db: &mut Db, path: &str) -> Vec<u8> {
    db.open_file(&p(path)).unwrap().1.deltas.iter().map(|d| d.0[0]).collect()
}

#[test]
fn deltas_follow_the_version_they_name_in_order_and_go_with_the_next_whole_commit_or_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let mut db = Db::open(&dir.path().join("t.db")).unwrap();
    db.set_gc_delay(std::time::Duration::ZERO);
    version(&mut db, "/f", 1, &[1, 2]);
    let e = delta(&mut db, "/f", 1, 2, 0xd1, &[3]).unwrap();
    assert_eq!((e.file_id, e.mtime_ms, e.chunks), (Some(FileId([2; 32])), 77, 3));
    delta(&mut db, "/f", 2, 3, 0xd2, &[4]).unwrap();
    assert_eq!(deltas_of(&mut db, "/f"), [0xd1, 0xd2], "in the order committed");
    assert_eq!(refs_of(&mut db, "/f").len(), 4, "the packs the deltas added are referenced");
    assert_eq!(db.locate(&[ChunkId([4; 32])]).unwrap(), vec![vec![NodeId([9; 32])]]);
    // A delta cannot cut the file shorter (the version is committed whole), and over a
    // version that is no longer the file's it is refused; either changes nothing.
    let d = SealedDelta(vec![0xd3]);
    let short = NewDelta {
        size: 9,
        parent: FileId([3; 32]),
        file_id: FileId([4; 32]),
        delta: &d,
        placements: &[],
        mtime_ms: None,
    };
    assert!(matches!(db.commit_delta(&p("/f"), &short), Err(TrackerError::Invalid(_))));
    assert!(matches!(delta(&mut db, "/f", 2, 4, 0xd3, &[5]), Err(TrackerError::CommitWhole(_))));
    assert!(matches!(delta(&mut db, "/nope", 3, 4, 0xd3, &[5]), Err(TrackerError::NotFound(_))));
    assert_eq!(deltas_of(&mut db, "/f"), [0xd1, 0xd2]);
    // A link's holder opens the version with its deltas; a rename keeps them.
    assert_eq!(db.open_file_id(&FileId([3; 32])).unwrap().1.deltas.len(), 2);
    db.rename(&p("/f"), &p("/g")).unwrap();
    assert_eq!(deltas_of(&mut db, "/g"), [0xd1, 0xd2]);
    // A whole commit drops the deltas (its manifest holds what they said) and what it no
    // longer uses.
    version(&mut db, "/g", 5, &[1, 2, 3]);
    assert!(deltas_of(&mut db, "/g").is_empty());
    let due: Vec<ChunkId> = db.gc_due(100).unwrap().into_iter().map(|(c, _)| c).collect();
    assert_eq!(due, vec![ChunkId([4; 32])], "the pack the whole version dropped");
    // At most MAX_MANIFEST_DELTAS, then the version must come whole.
    for k in 0..MAX_MANIFEST_DELTAS {
        let (parent, id) = if k == 0 { (5, 10) } else { (9 + k as u8, 10 + k as u8) };
        delta(&mut db, "/g", parent, id, k as u8, &[]).unwrap();
    }
    let last = 9 + MAX_MANIFEST_DELTAS as u8;
    assert!(matches!(delta(&mut db, "/g", last, 200, 0, &[]), Err(TrackerError::CommitWhole(_))));
    assert_eq!(deltas_of(&mut db, "/g").len(), MAX_MANIFEST_DELTAS);
    // Removing the file drops its deltas with it.
    db.remove(&p("/g"), false).unwrap();
    let mut tx = db.begin().unwrap();
    assert_eq!(tx.query_one("SELECT count(*) FROM manifest_deltas", &[]).unwrap().int(0).unwrap(), 0);
}
