//! Snapshot files into and out of the replica: [`load_snapshot`] (cold
//! start: decoded as it streams, bulk-inserted in one transaction with the
//! children index built after, unacknowledged local ops rebased on top) and
//! [`write_snapshot`] (the replica encoded for `POST .../import`, the fork).

use arbor_shared::snapshot::copy::{Reader, Writer};
use arbor_shared::snapshot::field::{replica_from_stored, replica_to_stored};
use arbor_shared::snapshot::{Decoder, Encoder, Event, SnapshotHeader};
use arbor_shared::{Hlc, Op, ReplicaId, Stamp, Tree};
use rusqlite::params;

use crate::replica::{Replica, ReplicaError, key, meta_delete, meta_set};
use crate::store::{Changes, SqliteStore, hlc_to_sql};

/// Cold-start progress.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Progress {
    /// Bytes of the snapshot consumed.
    pub bytes: u64,
    /// Rows loaded (nodes, registers and log).
    pub rows: u64,
    /// Rows the header announces.
    pub total_rows: u64,
    /// A replica image's size (its `bytes` are the decoded ones so far,
    /// and it has no rows); 0 for a row snapshot.
    pub total_bytes: u64,
}

/// What a cold start loaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Loaded {
    /// The snapshot's header.
    pub header: SnapshotHeader,
    /// Local ops re-stamped because they were at or below the horizon.
    pub restamped: u64,
    /// Local ops found committed in the snapshot (dropped from the outbox).
    pub committed: u64,
    /// Local ops still in the outbox, re-applied on top.
    pub pending: u64,
}

fn bad(m: impl std::fmt::Display) -> ReplicaError {
    ReplicaError::Snapshot(m.to_string())
}

fn blob<'a>(f: Option<&'a [u8]>, what: &str) -> Result<&'a [u8], ReplicaError> {
    f.ok_or_else(|| bad(format!("NULL {what}")))
}

fn int8(f: Option<&[u8]>) -> Result<i64, ReplicaError> {
    let b: [u8; 8] = f
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| bad("bad int8"))?;
    Ok(i64::from_be_bytes(b))
}

fn text(f: Option<&[u8]>) -> Result<Option<&str>, ReplicaError> {
    f.map(|b| std::str::from_utf8(b).map_err(|_| bad("text is not UTF-8")))
        .transpose()
}

const SECTION_FIELDS: [i16; 3] = [3, 5, 13];

/// Replaces the replica's tree, registers and log with the snapshot read
/// from `chunks`, in one transaction: a cut or corrupted stream (or any
/// error from `chunks`) rolls everything back. Then the outbox is rebased:
/// own ops the snapshot already holds leave it, the rest are re-applied on
/// top (re-stamped if at or below the snapshot's horizon). `progress` is
/// called after every chunk. [`SnapshotLoad`] is the same, fed chunk by
/// chunk (the browser's fetch stream is async).
pub fn load_snapshot<E: std::fmt::Display>(
    replica: &mut Replica,
    chunks: impl IntoIterator<Item = Result<bytes::Bytes, E>>,
    progress: impl FnMut(Progress),
) -> Result<Loaded, ReplicaError> {
    load(SnapshotLoad::begin(replica)?, chunks, progress)
}

/// [`load_snapshot`] for a space's export (or any file whose log section
/// should become history): every op of the log section also goes into the
/// replica's history record, with its author from the file's `owners`. A
/// cold start does not do this: its log section can hold millions of ops,
/// and the server answers history for them.
pub fn load_export<E: std::fmt::Display>(
    replica: &mut Replica,
    chunks: impl IntoIterator<Item = Result<bytes::Bytes, E>>,
    progress: impl FnMut(Progress),
) -> Result<Loaded, ReplicaError> {
    load(
        SnapshotLoad::begin(replica)?.with_history(),
        chunks,
        progress,
    )
}

fn load<E: std::fmt::Display>(
    mut load: SnapshotLoad<'_>,
    chunks: impl IntoIterator<Item = Result<bytes::Bytes, E>>,
    mut progress: impl FnMut(Progress),
) -> Result<Loaded, ReplicaError> {
    for chunk in chunks {
        let chunk = chunk.map_err(|e| bad(format!("stream failed: {e}")))?;
        progress(load.push(&chunk)?);
    }
    load.finish()
}

/// A cold start in progress: one open transaction on the replica, fed the
/// snapshot's bytes as they arrive. Dropped before [`SnapshotLoad::finish`]
/// (an error, a cut stream) it rolls back, leaving the replica as it was.
#[derive(Debug)]
pub struct SnapshotLoad<'r> {
    replica: &'r mut Replica,
    /// This replica's id as stored, to find its own committed ops.
    me: i64,
    /// The space the replica is bound to (the header must match).
    space: Option<String>,
    decoder: Decoder,
    header: Option<SnapshotHeader>,
    /// The open section (its index) and its COPY reader.
    reader: Option<(usize, Reader)>,
    /// Sections finished so far (they come in order: nodes, payloads, log).
    section: usize,
    prog: Progress,
    /// The newest HLC seen, so the clock never goes behind the snapshot.
    max_hlc: i64,
    /// Own ops the snapshot holds: they leave the outbox.
    mine_committed: Vec<(i64, i64)>,
    /// The trailer arrived.
    done: bool,
    /// The transaction is still open (rolled back on drop).
    open: bool,
    /// The log section's ops also go into the history record.
    history: bool,
}

impl Drop for SnapshotLoad<'_> {
    fn drop(&mut self) {
        if self.open {
            let _ = self.replica.conn.execute_batch("ROLLBACK");
        }
    }
}

impl<'r> SnapshotLoad<'r> {
    /// Opens the transaction and empties the tree, registers and log.
    pub fn begin(replica: &'r mut Replica) -> Result<SnapshotLoad<'r>, ReplicaError> {
        let me = replica_to_stored(replica.replica.0);
        let space = replica.space()?;
        replica.commit_held()?;
        replica.conn.execute_batch("BEGIN IMMEDIATE")?;
        let load = SnapshotLoad {
            replica,
            me,
            space,
            decoder: Decoder::new(),
            header: None,
            reader: None,
            section: 0,
            prog: Progress::default(),
            max_hlc: 0,
            mine_committed: Vec::new(),
            done: false,
            open: true,
            history: false,
        };
        load.replica
            .conn
            .execute_batch("DROP INDEX IF EXISTS nodes_children; DROP INDEX IF EXISTS ops_node;")?;
        load.replica
            .conn
            .execute_batch(crate::schema::VALUE_INDEX_DROP)?;
        load.replica
            .conn
            .execute_batch("DELETE FROM nodes; DELETE FROM payloads; DELETE FROM ops;")?;
        Ok(load)
    }

    /// Also puts the log section's ops into the replica's history record
    /// ([`load_export`]; unless the replica was opened without one).
    pub fn with_history(mut self) -> Self {
        self.history = self.replica.record_history;
        self
    }

    /// Feeds the next bytes of the stream; returns the progress so far.
    pub fn push(&mut self, chunk: &[u8]) -> Result<Progress, ReplicaError> {
        let tx = &self.replica.conn;
        let me = self.me;
        let max_hlc = &mut self.max_hlc;
        let mine_committed = &mut self.mine_committed;
        let prog = &mut self.prog;
        let header = &mut self.header;
        let reader = &mut self.reader;
        let section = &mut self.section;
        let decoder = &mut self.decoder;
        let mut ins_node =
            tx.prepare_cached("INSERT INTO nodes (id, parent, key) VALUES (?1, ?2, ?3)")?;
        let mut ins_payload = tx.prepare_cached(
            "INSERT INTO payloads (node, field, value, hlc, replica) VALUES (?1, ?2, ?3, ?4, ?5)",
        )?;
        let mut ins_op = tx.prepare_cached(
            "INSERT INTO ops (hlc, replica, node, parent, key, applied, prev_parent, prev_key)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        )?;
        let record_history = self.history;
        let mut ins_history = tx.prepare_cached(crate::replica::history::INSERT_HISTORY)?;
        decoder.push(chunk);
        while let Some(event) = decoder.next_event().map_err(bad)? {
            match event {
                Event::Header(h) => {
                    if let Some(s) = &self.space {
                        if *s != h.space {
                            return Err(ReplicaError::WrongSpace {
                                have: s.clone(),
                                want: h.space,
                            });
                        }
                    }
                    prog.total_rows = h.nodes + h.payloads + h.log;
                    *header = Some(h);
                }
                Event::SectionStart(_) => {
                    *reader = Some((*section, Reader::new(SECTION_FIELDS[*section])));
                }
                Event::Data(data) => {
                    let Some((i, r)) = reader.as_mut() else {
                        return Err(bad("data outside a section"));
                    };
                    r.push(&data);
                    loop {
                        let row = r.next_with(|f| -> Result<(), ReplicaError> {
                            match *i {
                                0 => {
                                    ins_node.execute(params![
                                        blob(f[0], "id")?,
                                        blob(f[1], "parent")?,
                                        blob(f[2], "key")?
                                    ])?;
                                }
                                1 => {
                                    let hlc = int8(f[3])?;
                                    *max_hlc = (*max_hlc).max(hlc);
                                    ins_payload.execute(params![
                                        blob(f[0], "node")?,
                                        text(f[1])?.ok_or_else(|| bad("NULL field"))?,
                                        text(f[2])?,
                                        hlc,
                                        int8(f[4])?
                                    ])?;
                                }
                                _ => {
                                    let (hlc, rep) = (int8(f[1])?, int8(f[2])?);
                                    *max_hlc = (*max_hlc).max(hlc);
                                    if rep == me {
                                        mine_committed.push((hlc, rep));
                                    }
                                    // Every logged op is history (a move
                                    // or a set), with who made it.
                                    let author = header.as_ref().and_then(|h| {
                                        h.owners.get(&ReplicaId(replica_from_stored(rep)))
                                    });
                                    let is_move = f[3] == Some(b"m");
                                    let applied = f[10] == Some(&[1u8][..]);
                                    if record_history {
                                        ins_history.execute(params![
                                            int8(f[0])?,
                                            hlc,
                                            rep,
                                            int8(f[9])?,
                                            blob(f[4], "node")?,
                                            if is_move {
                                                Some(blob(f[5], "parent")?)
                                            } else {
                                                None
                                            },
                                            if is_move {
                                                Some(blob(f[6], "key")?)
                                            } else {
                                                None
                                            },
                                            if is_move { None } else { text(f[7])? },
                                            if is_move { None } else { text(f[8])? },
                                            rep == replica_to_stored(0),
                                            author,
                                            is_move.then_some(applied),
                                        ])?;
                                    }
                                    if is_move {
                                        ins_op.execute(params![
                                            hlc,
                                            rep,
                                            blob(f[4], "node")?,
                                            blob(f[5], "parent")?,
                                            blob(f[6], "key")?,
                                            applied,
                                            f[11],
                                            f[12]
                                        ])?;
                                    }
                                }
                            }
                            Ok(())
                        });
                        match row.map_err(bad)? {
                            Some(result) => {
                                result?;
                                prog.rows += 1;
                            }
                            None => break,
                        }
                    }
                }
                Event::SectionEnd(_) => {
                    let Some((i, r)) = reader.take() else {
                        return Err(bad("section end outside a section"));
                    };
                    let rows = r.finish().map_err(bad)?;
                    let want = header
                        .as_ref()
                        .map_or(0, |h| [h.nodes, h.payloads, h.log][i]);
                    if rows != want {
                        return Err(bad(format!(
                            "section {i}: {rows} rows, the header says {want}"
                        )));
                    }
                    *section += 1;
                }
                Event::End(_) => self.done = true,
            }
        }
        prog.bytes = decoder.consumed();
        Ok(*prog)
    }

    /// Checks the stream ended whole, builds the index, rebases the outbox
    /// and commits.
    pub fn finish(mut self) -> Result<Loaded, ReplicaError> {
        self.decoder.finish().map_err(bad)?;
        let header = self.header.take().ok_or_else(|| bad("no header"))?;
        if !self.done {
            return Err(bad("no trailer"));
        }
        let mut max_hlc = self.max_hlc;
        let mine_committed = std::mem::take(&mut self.mine_committed);
        let replica = &mut *self.replica;
        let tx = &replica.conn;
        tx.execute_batch(
            "CREATE INDEX nodes_children ON nodes (parent, key, id);
             CREATE INDEX ops_node ON ops (node, hlc, replica);",
        )?;
        tx.execute_batch(crate::schema::VALUE_INDEX_DDL)?;
        tx.execute_batch(crate::schema::VALUE_INDEX_PENDING)?;
        meta_set(
            tx,
            key::CURSOR,
            i64::try_from(header.head_seq).unwrap_or(i64::MAX),
        )?;
        meta_set(tx, key::SPACE, header.space.as_str())?;
        match header.horizon {
            Some(h) => {
                meta_set(tx, key::HORIZON_HLC, hlc_to_sql(h.hlc.0)?)?;
                meta_set(tx, key::HORIZON_REPLICA, replica_to_stored(h.replica.0))?;
                max_hlc = max_hlc.max(hlc_to_sql(h.hlc.0)?);
            }
            None => {
                meta_delete(tx, key::HORIZON_HLC)?;
                meta_delete(tx, key::HORIZON_REPLICA)?;
            }
        }
        if let Some(root) = header.root {
            meta_set(tx, key::ROOT, root.to_bytes().to_vec())?;
        }
        if crate::replica::meta_get(tx, key::ROOT)?.is_some() {
            // A subtree replica's log holds only its own pending moves (its
            // feed is state: `replica/subtree.rs`); the snapshot's state
            // stands without the snapshot's log.
            tx.execute("DELETE FROM ops", [])?;
            // Nor does it keep history (its feed carries no ops).
            tx.execute("DELETE FROM history", [])?;
            meta_delete(tx, key::ROOT_IN_TRASH)?;
        }
        // Rebase the outbox.
        let committed = {
            let mut delete =
                tx.prepare_cached("DELETE FROM outbox WHERE hlc = ?1 AND replica = ?2")?;
            let mut n = 0u64;
            for (h, r) in &mine_committed {
                n += delete.execute(params![h, r])? as u64;
            }
            n
        };
        replica.clock.observe(Hlc(max_hlc.max(0) as u64));
        let pending: Vec<(i64, String)> = {
            let mut stmt = tx.prepare_cached("SELECT ord, op FROM outbox ORDER BY ord")?;
            stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<Result<_, _>>()?
        };
        // Re-stamp only after the server refused an op as stale (ops committed
        // below the horizon whose ack was lost are still deduplicated when
        // pushed with their own stamps), and then from the first stale op on,
        // so later ops keep their order after it.
        let restamp = crate::replica::meta_i64(tx, key::RESTAMP)?.is_some();
        let restamp_from = crate::replica::meta_i64(tx, key::RESTAMP_FROM_HLC)?
            .zip(crate::replica::meta_i64(tx, key::RESTAMP_FROM_REPLICA)?)
            .map(|(h, r)| Stamp::new(h as u64, replica_from_stored(r)));
        for k in [
            key::RESTAMP,
            key::RESTAMP_FROM_HLC,
            key::RESTAMP_FROM_REPLICA,
        ] {
            meta_delete(tx, k)?;
        }
        let mut restamping = false;
        let mut ops = Vec::with_capacity(pending.len());
        let mut restamped = 0u64;
        for (ord, json) in &pending {
            let mut op: Op = serde_json::from_str(json).map_err(|e| bad(format!("outbox: {e}")))?;
            restamping |= restamp
                && (header.horizon.is_some_and(|h| op.stamp() <= h)
                    || restamp_from.is_some_and(|f| op.stamp() >= f));
            if restamping {
                let stamp = replica.clock.tick(crate::replica::now_ms())?;
                set_stamp(&mut op, stamp, header.head_seq);
                tx.prepare_cached(
                    "UPDATE outbox SET hlc = ?1, replica = ?2, op = ?3 WHERE ord = ?4",
                )?
                .execute(params![
                    hlc_to_sql(stamp.hlc.0)?,
                    replica_to_stored(stamp.replica.0),
                    serde_json::to_string(&op).map_err(bad)?,
                    ord
                ])?;
                restamped += 1;
            }
            ops.push(op);
        }
        // An op still at or below the horizon (not re-stamped: the server
        // has not said `stale` yet, it may have committed it with a lost
        // ack) cannot go on top of this state; it stays in the outbox and
        // is pushed with its own stamp: the server answers it as a
        // duplicate, or `stale`, and then it is re-stamped and shown.
        let above: Vec<Op> = ops
            .iter()
            .filter(|op| header.horizon.is_none_or(|h| op.stamp() > h))
            .cloned()
            .collect();
        if !above.is_empty() {
            let mut tree = Tree::new(SqliteStore::new(tx));
            tree.apply(&above)?;
        }
        meta_set(tx, key::CLOCK, hlc_to_sql(replica.clock.last().0)?)?;
        tx.execute_batch("COMMIT")?;
        self.open = false;
        replica.notify_changes(Changes {
            reset: true,
            ..Changes::default()
        });
        if restamped > 0 {
            replica.wake_outbox();
        }
        Ok(Loaded {
            header,
            restamped,
            committed,
            pending: ops.len() as u64,
        })
    }
}

fn set_stamp(op: &mut Op, stamp: Stamp, known_seq: u64) {
    match op {
        Op::Move(m) => {
            m.stamp = stamp;
            m.known_seq = known_seq;
        }
        Op::Set(s) => {
            s.stamp = stamp;
            s.known_seq = known_seq;
        }
    }
}

/// Encodes the replica's state as a snapshot file for `space` (the body of
/// `POST /v1/spaces/{space}/import`): its tree, registers and move log,
/// unacknowledged local ops included. `out` receives the bytes in chunks
/// of about 64 KiB.
pub fn write_snapshot(
    replica: &Replica,
    space: &str,
    mut out: impl FnMut(Vec<u8>) -> std::io::Result<()>,
) -> Result<(), ReplicaError> {
    // One read transaction: the counts and the rows are one state.
    let tx = replica.conn.unchecked_transaction()?;
    let count = |sql: &str| -> Result<u64, ReplicaError> {
        let n: i64 = tx.query_row(sql, [], |r| r.get(0))?;
        Ok(n.max(0) as u64)
    };
    let header = SnapshotHeader {
        space: space.to_string(),
        head_seq: 0,
        horizon: replica.horizon()?,
        nodes: count("SELECT count(*) FROM nodes")?,
        payloads: count("SELECT count(*) FROM payloads")?,
        log: count("SELECT count(*) FROM ops")?,
        root: None,
        owners: Default::default(),
    };
    let io = |e: std::io::Error| bad(format!("writing: {e}"));
    let mut enc = Encoder::new();
    out(enc.header(&header)).map_err(io)?;
    const FLUSH: usize = 64 * 1024;
    let sections: [(u8, &str); 3] = [
        (b'N', "SELECT id, parent, key FROM nodes"),
        (
            b'P',
            "SELECT node, field, value, hlc, replica FROM payloads",
        ),
        (
            b'L',
            "SELECT hlc, replica, node, parent, key, applied, prev_parent, prev_key FROM ops
             ORDER BY hlc, replica",
        ),
    ];
    for (tag, sql) in sections {
        out(enc.section(tag)).map_err(io)?;
        let mut w = Writer::new();
        let mut stmt = tx.prepare(sql)?;
        let mut rows = stmt.query([])?;
        while let Some(r) = rows.next()? {
            match tag {
                b'N' => {
                    let (id, parent, key): (Vec<u8>, Vec<u8>, Vec<u8>) =
                        (r.get(0)?, r.get(1)?, r.get(2)?);
                    w.tuple(&[Some(&id), Some(&parent), Some(&key)]);
                }
                b'P' => {
                    let node: Vec<u8> = r.get(0)?;
                    let field: String = r.get(1)?;
                    let value: Option<String> = r.get(2)?;
                    let (hlc, rep): (i64, i64) = (r.get(3)?, r.get(4)?);
                    w.tuple(&[
                        Some(&node),
                        Some(field.as_bytes()),
                        value.as_deref().map(str::as_bytes),
                        Some(&hlc.to_be_bytes()),
                        Some(&rep.to_be_bytes()),
                    ]);
                }
                _ => {
                    let (hlc, rep): (i64, i64) = (r.get(0)?, r.get(1)?);
                    let (node, parent, key): (Vec<u8>, Vec<u8>, Vec<u8>) =
                        (r.get(2)?, r.get(3)?, r.get(4)?);
                    let applied: bool = r.get(5)?;
                    let (prev_parent, prev_key): (Option<Vec<u8>>, Option<Vec<u8>>) =
                        (r.get(6)?, r.get(7)?);
                    // Log rows carry no seq here: the import uses their
                    // stamps only (to place the new space's horizon).
                    w.tuple(&[
                        Some(&0i64.to_be_bytes()),
                        Some(&hlc.to_be_bytes()),
                        Some(&rep.to_be_bytes()),
                        Some(b"m"),
                        Some(&node),
                        Some(&parent),
                        Some(&key),
                        None,
                        None,
                        Some(&0i64.to_be_bytes()),
                        Some(&[u8::from(applied)]),
                        prev_parent.as_deref(),
                        prev_key.as_deref(),
                    ]);
                }
            }
            if w.buffered() >= FLUSH {
                let data = w.take();
                out(enc.chunk(&data)).map_err(io)?;
            }
        }
        let data = w.finish();
        out(enc.chunk(&data)).map_err(io)?;
        out(enc.end_section()).map_err(io)?;
    }
    out(enc.trailer()).map_err(io)?;
    Ok(())
}
