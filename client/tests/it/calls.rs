//! The calls record and the checkpoint thread, on real SQLite files: a keyed
//! call is recorded with its edit (and only then), survives a reopen, is
//! trimmed to the last `MAX_CALLS`; a file replica's log is copied into the
//! database by the thread, not by the edits' commits.

use arbor_client::{CallDone, MAX_CALLS, Position, Replica, ReplicaError};
use arbor_shared::NodeId;

use crate::harness::*;

#[test]
fn a_keyed_call_is_recorded_with_its_edit_and_only_then() {
    let dir = TempDir::new("calls");
    let path = dir.0.join("r.db");
    let mut r = Replica::open(&path).unwrap();

    r.set_call_key(Some("tab-1:1"));
    let a = r
        .create_with(NodeId::ROOT, Position::Last, &[("title", "a")])
        .unwrap();
    assert_eq!(
        r.call_done("tab-1:1").unwrap(),
        Some(CallDone { created: Some(a) })
    );
    // The write took the key: the next one records nothing.
    let b = r.create(NodeId::ROOT, Position::Last).unwrap();
    assert_eq!(r.count_calls(), 1);

    r.set_call_key(Some("tab-1:2"));
    r.move_node(b, a, Position::First).unwrap();
    assert_eq!(
        r.call_done("tab-1:2").unwrap(),
        Some(CallDone { created: None })
    );

    // A call that fails writes nothing and records nothing.
    r.set_call_key(Some("tab-1:3"));
    assert!(matches!(
        r.move_node(a, b, Position::Last),
        Err(ReplicaError::Cycle { .. })
    ));
    assert_eq!(r.call_done("tab-1:3").unwrap(), None);
    r.set_call_key(None);

    // Undo is a write like the others.
    r.set_call_key(Some("tab-1:4"));
    assert!(r.undo().unwrap().is_some());
    assert!(r.call_done("tab-1:4").unwrap().is_some());
    assert_eq!(r.parent(b).unwrap(), Some(NodeId::ROOT));

    // The record is in the file.
    drop(r);
    let mut r = Replica::open(&path).unwrap();
    assert_eq!(
        r.call_done("tab-1:1").unwrap(),
        Some(CallDone { created: Some(a) })
    );
    assert_eq!(r.call_done("tab-2:1").unwrap(), None);

    // Trimmed to the last MAX_CALLS keyed calls.
    for k in 0..MAX_CALLS {
        r.set_call_key(Some(&format!("tab-3:{k}")));
        r.set(a, "title", Some(&k.to_string())).unwrap();
    }
    assert_eq!(r.call_done("tab-1:1").unwrap(), None);
    assert!(r.call_done("tab-3:0").unwrap().is_some());
    assert_eq!(r.count_calls(), MAX_CALLS as u64);
    r.check_invariants().unwrap();
}

trait CountCalls {
    fn count_calls(&self) -> u64;
}

impl CountCalls for Replica {
    fn count_calls(&self) -> u64 {
        self.connection()
            .query_row("SELECT count(*) FROM calls", [], |r| r.get::<_, i64>(0))
            .unwrap() as u64
    }
}

/// The database file's size in pages: in WAL mode it grows only when a
/// checkpoint copies the log's pages into it.
fn db_pages(path: &std::path::Path) -> u64 {
    std::fs::metadata(path).unwrap().len() / 4096
}

#[test]
fn the_checkpoint_thread_copies_the_log_and_edits_do_not() {
    let dir = TempDir::new("checkpoint");
    let path = dir.0.join("r.db");
    let mut r = Replica::open(&path).unwrap();
    // The commits do not checkpoint: SQLite's automatic checkpoint is
    // replaced by the hook that wakes the thread.
    let auto: i64 = r
        .connection()
        .pragma_query_value(None, "wal_autocheckpoint", |row| row.get(0))
        .unwrap();
    assert_eq!(auto, 0);
    let before = db_pages(&path);
    // Fields of 2 KiB: every create adds at least one page to the log, so
    // 1,500 of them take it past the 1,000 pages that wake the thread.
    let text = "x".repeat(2048);
    for _ in 0..1_500 {
        r.create_with(NodeId::ROOT, Position::Last, &[("text", &text)])
            .unwrap();
    }
    // The thread runs on its own: wait for its copy (bounded).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while db_pages(&path) < before + 700 {
        assert!(
            std::time::Instant::now() < deadline,
            "no checkpoint within 30 s: database file at {} pages (was {before})",
            db_pages(&path)
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    assert_eq!(r.node_count().unwrap(), 1_500);
    r.check_invariants().unwrap();
    // Dropping the replica ends the thread (joined): the file is free.
    drop(r);
    let r = Replica::open(&path).unwrap();
    assert_eq!(r.node_count().unwrap(), 1_500);
}
