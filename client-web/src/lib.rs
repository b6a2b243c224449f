//! Arbor in the browser: the client [`Replica`] on SQLite in OPFS (the
//! `opfs-sahpool` VFS), or in memory where OPFS is missing, and the sync
//! loop over a `web-sys` WebSocket, exported to JavaScript with
//! wasm-bindgen. It runs in a dedicated Web Worker (`web/src/worker.ts`),
//! which owns one replica per origin and thoughtspace (or subtree of one)
//! and serves every tab.
//!
//! # Layout
//!
//! - [`WebReplica`]: the exported class; the local API (create, move,
//!   delete, restore, set, children, node, count), change and status
//!   callbacks, `connect` / `disconnect`, and `setPresence` (this
//!   replica's presence state, kept across sessions).
//! - [`calls`]: the key of a call forwarded by a follower tab, recorded
//!   with its edit, so a call resent after a handover is not made twice.
//! - [`checkpoint`]: WAL checkpoints run when the worker is idle, not in
//!   an edit's commit.
//! - [`save`]: held edits (write-behind: shown when applied) committed
//!   once edits pause; `saved()` resolves then.
//! - [`history`]: undo and redo, the conflict list, a node's history
//!   from the server and reverting a subtree to a past seq.
//! - [`inspect`]: the inspector's reads (outbox, recent ops, restores,
//!   sizes).
//! - [`search`]: full-text search from the replica or the server.
//! - [`values`]: lookups by value (a value's holders from the replica
//!   or the server, children by value, merging duplicate children).
//! - [`sync`]: the browser driver of `arbor_client::session` (the same
//!   session the native client drives): the `web-sys` WebSocket, one
//!   timer, and the streamed cold start over `fetch`.
//! - [`js`]: small bridges to browser APIs (timers, errors as `{code,
//!   message}` objects, the WebSocket as a stream of events).
//!
//! Values cross the boundary as JSON strings (parsed by the worker), which
//! keeps the binding small and the types in one place (`web/src/types.ts`).

pub mod calls;
pub mod checkpoint;
pub mod history;
pub mod inspect;
pub mod js;
pub mod save;
pub mod search;
pub mod sync;
pub mod values;

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::mpsc;

use arbor_client::session::PresenceTooLarge;
use arbor_client::{Changes, Position, Replica, ReplicaError};
use arbor_shared::protocol::{MAX_PRESENCE_BYTES, PresenceState};
use arbor_shared::{ErrorCode, NodeId};
use rusqlite::params;
use serde::{Deserialize, Serialize};
use wasm_bindgen::prelude::*;

use crate::js::{JsResult, err};

/// The replica's status as `web/src/types.ts` `Status` describes it.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    /// `offline`, `connecting`, `cold_start`, `catching_up`, `pushing`,
    /// `live` or `refused`.
    pub state: &'static str,
    /// Why the last session ended.
    pub error: Option<String>,
    /// The last server seq applied.
    pub cursor: Option<u64>,
    /// Local ops not yet acknowledged.
    pub outbox: u64,
    /// Who else is connected to the thoughtspace (this connection left
    /// out), each with its presence state.
    pub peers: Vec<PeerJs>,
    /// Cold-start progress, while in `cold_start`.
    pub progress: Option<ProgressJs>,
    /// `opfs` or `memory`.
    pub storage: &'static str,
    /// Always `owner` here (the worker marks followers).
    pub role: &'static str,
    /// Local ops the server refused for good.
    pub rejected: u64,
    /// A subtree replica's root (`None`: a replica of the whole space).
    pub root: Option<String>,
    /// A subtree replica whose root the server said is in the trash (the
    /// replica keeps its contents).
    #[serde(rename = "rootInTrash")]
    pub root_in_trash: bool,
    /// This replica's own presence state, as the others see it while a
    /// session is open (`None`: none). Kept here, not in the session: it
    /// outlives `connect` / `disconnect`, and followers learn it from the
    /// status, so a tab that takes ownership sends it again.
    pub presence: Option<PresenceState>,
}

/// A peer (presence).
#[derive(Debug, Clone, Serialize)]
pub struct PeerJs {
    pub(crate) conn: u64,
    pub(crate) sub: String,
    /// Decimal: a u64 does not fit a JS number.
    pub(crate) replica: Option<String>,
    /// Its presence state (`null`: none set).
    pub(crate) state: Option<PresenceState>,
}

/// Cold-start progress.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct ProgressJs {
    rows: u64,
    total: u64,
    bytes: u64,
    /// A replica image's size (`bytes` are those decoded); 0 for rows.
    #[serde(rename = "totalBytes")]
    total_bytes: u64,
}

/// Shared by the exported handle and the sync loop (one thread: `Rc`).
pub(crate) struct Inner {
    pub(crate) replica: RefCell<Replica>,
    /// The thoughtspace (kept here: the replica is borrowed while a cold
    /// start loads).
    space: String,
    /// A subtree replica's root.
    root: Option<NodeId>,
    /// The replica's change feed, drained after every write and apply.
    changes: mpsc::Receiver<Arc<Changes>>,
    on_changes: RefCell<Option<js_sys::Function>>,
    on_status: RefCell<Option<js_sys::Function>>,
    pub(crate) status: RefCell<Status>,
    /// Bumped by `connect` and `disconnect`: a sync loop whose generation
    /// is no longer current stops at its next step.
    pub(crate) generation: Cell<u64>,
    /// The server and token of the last `connect` (none after
    /// `disconnect`): history and revert read the server with them.
    pub(crate) http: RefCell<Option<history::Http>>,
    /// Wakes the running session (a local write queued ops; a disconnect).
    pub(crate) wake: RefCell<Option<futures_channel::mpsc::UnboundedSender<sync::Event>>>,
    /// When the next idle checkpoint runs (`checkpoint.rs`).
    pub(crate) checkpoint: checkpoint::IdleCheckpoint,
    /// When held edits are committed (`save.rs`).
    pub(crate) save: save::SaveTimer,
    /// The OPFS pool the replica file lives in (`None`: in memory): a
    /// replica image is imported into it under the replica file's name.
    pub(crate) pool: Option<sqlite_wasm_vfs::sahpool::OpfsSAHPoolUtil>,
    /// This `Inner` itself (for the tasks it spawns).
    me: std::rc::Weak<Inner>,
}

impl Inner {
    /// Sends pending change notifications to the page.
    pub(crate) fn flush_changes(&self) {
        let mut all = Changes::default();
        while let Ok(c) = self.changes.try_recv() {
            all.extend((*c).clone());
        }
        if all.is_empty() {
            return;
        }
        checkpoint::wrote(self);
        let ids = |s: &std::collections::BTreeSet<NodeId>| -> Vec<String> {
            s.iter().map(ToString::to_string).collect()
        };
        let mut json = serde_json::json!({
            "reset": all.reset,
            "parents": ids(&all.parents),
            "moved": ids(&all.moved),
            "fields": ids(&all.fields),
            "conflicts": all.conflicts.iter().map(history::conflict_json).collect::<Vec<_>>(),
        });
        // The view's data for a few nodes, so it need not read them back: a
        // moved node's place (its `deleted` walks its ancestors), a node
        // that only changed fields its fields (one read).
        if !all.reset
            && all.moved.len() + all.fields.len() <= CHANGE_NODES_MAX
            && let Ok(r) = self.replica.try_borrow()
        {
            let nodes: Option<serde_json::Map<String, serde_json::Value>> = all
                .moved
                .iter()
                .map(|&id| node_json(&r, id).ok().map(|v| (id.to_string(), v)))
                .collect();
            let values: Option<serde_json::Map<String, serde_json::Value>> = all
                .fields
                .difference(&all.moved)
                .map(|&id| {
                    let fields = r.fields(id).ok()?;
                    Some((id.to_string(), serde_json::json!(fields)))
                })
                .collect();
            if let (Some(nodes), Some(values)) = (nodes, values) {
                json["nodes"] = serde_json::Value::Object(nodes);
                json["values"] = serde_json::Value::Object(values);
            }
        }
        let json = json.to_string();
        if let Some(f) = self.on_changes.borrow().as_ref() {
            let _ = f.call1(&JsValue::NULL, &JsValue::from_str(&json));
        }
    }

    /// Updates the status and tells the page.
    pub(crate) fn set_status(&self, f: impl FnOnce(&mut Status)) {
        {
            let mut s = self.status.borrow_mut();
            f(&mut s);
            if let Ok(r) = self.replica.try_borrow() {
                s.cursor = r.cursor().ok().flatten();
                s.outbox = r.outbox_len().unwrap_or(s.outbox);
                if s.root.is_some() {
                    s.root_in_trash = r
                        .subtree_root_in_trash()
                        .ok()
                        .flatten()
                        .unwrap_or(s.root_in_trash);
                }
            }
        }
        let json = serde_json::to_string(&*self.status.borrow()).unwrap_or_default();
        if let Some(f) = self.on_status.borrow().as_ref() {
            let _ = f.call1(&JsValue::NULL, &JsValue::from_str(&json));
        }
    }

    fn replica_mut(&self) -> JsResult<std::cell::RefMut<'_, Replica>> {
        self.replica
            .try_borrow_mut()
            .map_err(|_| err(ErrorCode::Busy, "the replica is loading a snapshot"))
    }

    fn replica(&self) -> JsResult<std::cell::Ref<'_, Replica>> {
        self.replica
            .try_borrow()
            .map_err(|_| err(ErrorCode::Busy, "the replica is loading a snapshot"))
    }

    /// After a local write: notify (the edit is shown), have it saved soon
    /// (the sync loop is woken then: only saved ops are pushed), report the
    /// outbox.
    fn wrote(&self) {
        self.flush_changes();
        save::edited(self);
        self.set_status(|_| {});
    }

    /// Wakes the running sync session (local ops to push).
    pub(crate) fn wake_sync(&self) {
        if let Some(w) = self.wake.borrow().as_ref() {
            let _ = w.unbounded_send(sync::Event::Wake);
        }
    }
}

/// A replica error as a `{code, message}` JS object.
pub(crate) fn replica_err(e: ReplicaError) -> JsValue {
    let code = match &e {
        ReplicaError::UnknownNode(_) => ErrorCode::UnknownNode,
        ReplicaError::Reserved(_) => ErrorCode::ReservedNode,
        ReplicaError::NotASibling { .. } => ErrorCode::NotASibling,
        ReplicaError::Cycle { .. } => ErrorCode::Cycle,
        ReplicaError::Op(_) | ReplicaError::Outline(_) => ErrorCode::BadOp,
        ReplicaError::WrongSpace { .. } => ErrorCode::WrongSpace,
        ReplicaError::Snapshot(_) | ReplicaError::Image(_) => ErrorCode::Snapshot,
        _ => ErrorCode::Replica,
    };
    err(code, &e.to_string())
}

/// A node as `node()` answers it (`{id, parent, key, fields, deleted}`),
/// or `null` when the replica does not hold it.
fn node_json(r: &Replica, id: NodeId) -> Result<serde_json::Value, ReplicaError> {
    if !r.contains(id)? {
        return Ok(serde_json::Value::Null);
    }
    let place = r.place(id)?;
    Ok(serde_json::json!({
        "id": id.to_string(),
        "parent": place.as_ref().map(|p| p.parent.to_string()),
        "key": place.as_ref().map(|p| hex(p.key.as_bytes())),
        "fields": r.fields(id)?,
        "deleted": r.is_deleted(id)?,
    }))
}

/// The most nodes a change event carries the data of (`Changes.nodes`):
/// an edit's few at once, a big batch's left for the view to read.
pub const CHANGE_NODES_MAX: usize = 64;

/// Lowercase hex: ordering hex strings orders the bytes (what sibling
/// order is: key bytes, then id), so the page can place a moved node
/// without reloading its siblings.
fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn node_id(s: &str) -> JsResult<NodeId> {
    s.parse()
        .map_err(|_| err(ErrorCode::BadId, &format!("not a node id: {s:?}")))
}

/// `"first" | "last" | {"before": id} | {"after": id}`.
#[derive(Deserialize)]
#[serde(rename_all = "lowercase")]
enum PositionJs {
    First,
    Last,
    Before(String),
    After(String),
}

fn position(json: &str) -> JsResult<Position> {
    let p: PositionJs =
        serde_json::from_str(json).map_err(|e| err(ErrorCode::BadPosition, &e.to_string()))?;
    Ok(match p {
        PositionJs::First => Position::First,
        PositionJs::Last => Position::Last,
        PositionJs::Before(s) => Position::Before(node_id(&s)?),
        PositionJs::After(s) => Position::After(node_id(&s)?),
    })
}

/// A replica of one thoughtspace in this worker.
#[wasm_bindgen]
pub struct WebReplica {
    inner: Rc<Inner>,
}

/// Installs the OPFS pool in `directory` (retrying while another worker
/// of this origin still holds it: ownership is moving between tabs).
/// `Ok(None)`: this browser has no OPFS sync access handles.
async fn install_opfs(
    directory: &str,
) -> Result<Option<sqlite_wasm_vfs::sahpool::OpfsSAHPoolUtil>, String> {
    use sqlite_wasm_vfs::sahpool::{OpfsSAHPoolCfgBuilder, install};
    let cfg = OpfsSAHPoolCfgBuilder::new().directory(directory).build();
    let mut last = String::new();
    for attempt in 0..40u32 {
        match install::<sqlite_wasm_rs::WasmOsCallback>(&cfg, true).await {
            Ok(util) => return Ok(Some(util)),
            Err(e) => {
                last = e.to_string();
                let unsupported = !js::has_opfs();
                if unsupported {
                    return Ok(None);
                }
                js::sleep_ms(50 + 25 * attempt).await;
            }
        }
    }
    Err(last)
}

#[wasm_bindgen]
impl WebReplica {
    /// Opens the replica of `space`: on OPFS unless `memory` is set or
    /// OPFS is missing (then `status().storage` is `memory`). With `root`
    /// (a node id), the replica of that node's subtree: its own file, bound
    /// to the root before its first sync (`Replica::bind_subtree`), so its
    /// cold start loads the subtree snapshot and the server sends it the
    /// subtree feed.
    pub async fn open(
        space: String,
        memory: bool,
        root: Option<String>,
    ) -> Result<WebReplica, JsValue> {
        let root = root.as_deref().map(node_id).transpose()?;
        if let Some(r) = root
            && r.is_reserved()
        {
            return Err(err(
                ErrorCode::ReservedNode,
                &format!("{r} is not a subtree root: open the whole space without a root"),
            ));
        }
        // File names in a pool are flat, and a pool has one owner (the
        // worker that installed it): a thoughtspace's replica is
        // `/<space>.arbor` in the pool `arbor/`, a subtree replica
        // `/<space>~<root>.arbor` in a pool of its own,
        // `arbor/<space>~<root>/`, so it never mixes with the full replica
        // and both can be open at once (in two tabs, two owners).
        let mut name: String = space
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .collect();
        let mut directory = "arbor".to_string();
        if let Some(r) = root {
            name = format!("{name}~{r}");
            directory = format!("arbor/{name}");
        }
        let pool = if memory {
            None
        } else {
            install_opfs(&directory)
                .await
                .map_err(|e| err(ErrorCode::Storage, &e))?
        };
        let durable = pool.is_some();
        let mut replica = if durable {
            Replica::open(std::path::Path::new(&format!("/{name}.arbor"))).map_err(replica_err)?
        } else {
            Replica::open_in_memory().map_err(replica_err)?
        };
        replica.bind_space(&space).map_err(replica_err)?;
        if let Some(r) = root {
            match replica.subtree_root().map_err(replica_err)? {
                Some(have) if have == r => {}
                None if replica.cursor().map_err(replica_err)?.is_none() => {
                    replica.bind_subtree(r).map_err(replica_err)?;
                }
                have => {
                    let what = have.map_or_else(|| "the whole space".into(), |h| h.to_string());
                    return Err(err(
                        ErrorCode::Replica,
                        &format!("this file replicates {what}, not the subtree of {r}"),
                    ));
                }
            }
        }
        let root_in_trash = replica
            .subtree_root_in_trash()
            .map_err(replica_err)?
            .unwrap_or(false);
        // Edits are shown when applied and committed together once they
        // pause (`save.rs`).
        replica.set_write_behind(true).map_err(replica_err)?;
        let changes = replica.subscribe();
        let outbox = replica.outbox_len().unwrap_or(0);
        let cursor = replica.cursor().ok().flatten();
        let rejected = replica.rejected_len().unwrap_or(0);
        if durable {
            checkpoint::configure(replica.connection())
                .map_err(|e| err(ErrorCode::Storage, &format!("the replica file: {e}")))?;
        }
        let inner = Rc::new_cyclic(|me| Inner {
            me: me.clone(),
            checkpoint: checkpoint::IdleCheckpoint::default(),
            save: save::SaveTimer::default(),
            replica: RefCell::new(replica),
            space,
            root,
            changes,
            on_changes: RefCell::new(None),
            on_status: RefCell::new(None),
            status: RefCell::new(Status {
                state: "offline",
                error: None,
                cursor,
                outbox,
                peers: Vec::new(),
                progress: None,
                storage: if durable { "opfs" } else { "memory" },
                role: "owner",
                rejected,
                root: root.map(|r| r.to_string()),
                root_in_trash,
                presence: None,
            }),
            generation: Cell::new(0),
            http: RefCell::new(None),
            wake: RefCell::new(None),
            pool,
        });
        Ok(WebReplica { inner })
    }

    /// Resolves once every edit made so far is saved (committed to the
    /// replica file); rejects with `storage` if the commit failed (the
    /// held edits are gone, and a `reset` change went out).
    pub fn saved(&self) -> js_sys::Promise {
        let inner = self.inner.clone();
        wasm_bindgen_futures::future_to_promise(async move {
            save::saved(&inner).await.map(|()| JsValue::UNDEFINED)
        })
    }

    /// The status as JSON.
    pub fn status(&self) -> String {
        serde_json::to_string(&*self.inner.status.borrow()).unwrap_or_default()
    }

    /// Calls `f(changesJson)` after every change.
    #[wasm_bindgen(js_name = onChanges)]
    pub fn on_changes(&self, f: js_sys::Function) {
        *self.inner.on_changes.borrow_mut() = Some(f);
    }

    /// Calls `f(statusJson)` on every status change.
    #[wasm_bindgen(js_name = onStatus)]
    pub fn on_status(&self, f: js_sys::Function) {
        *self.inner.on_status.borrow_mut() = Some(f);
    }

    /// Creates a node; `pos` and `fields` are JSON. Returns its id.
    pub fn create(&self, parent: &str, pos: &str, fields: &str) -> Result<String, JsValue> {
        let parent = node_id(parent)?;
        let pos = position(pos)?;
        let fields: BTreeMap<String, String> =
            serde_json::from_str(fields).map_err(|e| err(ErrorCode::BadFields, &e.to_string()))?;
        let fields: Vec<(&str, &str)> = fields
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let id = self
            .inner
            .replica_mut()?
            .create_with(parent, pos, &fields)
            .map_err(replica_err)?;
        self.inner.wrote();
        Ok(id.to_string())
    }

    /// Moves `node` under `parent` at `pos` (JSON).
    #[wasm_bindgen(js_name = moveNode)]
    pub fn move_node(&self, node: &str, parent: &str, pos: &str) -> Result<(), JsValue> {
        let (node, parent, pos) = (node_id(node)?, node_id(parent)?, position(pos)?);
        self.inner
            .replica_mut()?
            .move_node(node, parent, pos)
            .map_err(replica_err)?;
        self.inner.wrote();
        Ok(())
    }

    /// Moves `node` to TRASH.
    pub fn delete(&self, node: &str) -> Result<(), JsValue> {
        let node = node_id(node)?;
        self.inner
            .replica_mut()?
            .delete(node)
            .map_err(replica_err)?;
        self.inner.wrote();
        Ok(())
    }

    /// Brings a deleted node back where it was.
    pub fn restore(&self, node: &str) -> Result<(), JsValue> {
        let node = node_id(node)?;
        self.inner
            .replica_mut()?
            .restore(node)
            .map_err(replica_err)?;
        self.inner.wrote();
        Ok(())
    }

    /// Sets (or with `None`, clears) a field.
    pub fn set(&self, node: &str, field: &str, value: Option<String>) -> Result<(), JsValue> {
        let node = node_id(node)?;
        self.inner
            .replica_mut()?
            .set(node, field, value.as_deref())
            .map_err(replica_err)?;
        self.inner.wrote();
        Ok(())
    }

    /// A page of children as JSON `[{id, fields, hasChildren}]`.
    pub fn children(
        &self,
        parent: &str,
        after: Option<String>,
        limit: u32,
    ) -> Result<String, JsValue> {
        let parent = node_id(parent)?;
        let after = after.as_deref().map(node_id).transpose()?;
        let r = self.inner.replica()?;
        let page = r
            .children(parent, after, limit as usize)
            .map_err(replica_err)?;
        let mut has = r
            .connection()
            .prepare_cached("SELECT EXISTS (SELECT 1 FROM nodes WHERE parent = ?1)")
            .map_err(|e| replica_err(e.into()))?;
        let mut out = Vec::with_capacity(page.len());
        for v in page {
            let has_children: bool = has
                .query_row(params![v.id.to_bytes().to_vec()], |row| row.get(0))
                .map_err(|e| replica_err(e.into()))?;
            out.push(serde_json::json!({
                "id": v.id.to_string(),
                "key": hex(v.key.as_bytes()),
                "fields": v.fields,
                "hasChildren": has_children,
            }));
        }
        Ok(serde_json::Value::Array(out).to_string())
    }

    /// `{id, parent, fields, deleted}` as JSON, or `null`.
    pub fn node(&self, id: &str) -> Result<String, JsValue> {
        let id = node_id(id)?;
        let r = self.inner.replica()?;
        Ok(node_json(&r, id).map_err(replica_err)?.to_string())
    }

    /// Nodes in the tree (ROOT and TRASH excluded).
    pub fn count(&self) -> Result<f64, JsValue> {
        Ok(self.inner.replica()?.node_count().map_err(replica_err)? as f64)
    }

    /// The local ops the server refused for good, oldest first, as JSON
    /// `[{op, code, message}]` (they left the outbox and are never pushed
    /// again).
    pub fn rejected(&self) -> Result<String, JsValue> {
        let list = self.inner.replica()?.rejected().map_err(replica_err)?;
        let json: Vec<serde_json::Value> = list
            .into_iter()
            .map(|r| serde_json::json!({ "op": r.op, "code": r.code, "message": r.message }))
            .collect();
        Ok(serde_json::Value::Array(json).to_string())
    }

    /// Empties the rejected list; returns how many ops it held.
    pub fn clear_rejected(&self) -> Result<f64, JsValue> {
        let n = self
            .inner
            .replica_mut()?
            .clear_rejected()
            .map_err(replica_err)?;
        self.inner.set_status(|s| s.rejected = 0);
        Ok(n as f64)
    }

    /// Starts syncing with `server` (HTTP base), `realtime` (WebSocket
    /// base, empty: the server's) and `token`, until `disconnect`;
    /// `keepalive_ms` is the ping period (0: the default); `images`: a
    /// cold start tries the server's replica image first.
    pub fn connect(
        &self,
        server: String,
        realtime: String,
        token: String,
        keepalive_ms: f64,
        images: bool,
    ) {
        let generation = self.inner.generation.get() + 1;
        self.inner.generation.set(generation);
        if let Some(w) = self.inner.wake.borrow_mut().take() {
            let _ = w.unbounded_send(sync::Event::Stop);
        }
        *self.inner.http.borrow_mut() = Some(history::Http {
            server: server.clone(),
            token: token.clone(),
        });
        let config = sync::Config {
            server,
            realtime: (!realtime.is_empty()).then_some(realtime),
            space: self.inner.space.clone(),
            root: self.inner.root,
            token,
            images,
            keepalive_ms: (keepalive_ms > 0.0).then_some(keepalive_ms as u64),
        };
        wasm_bindgen_futures::spawn_local(sync::run(self.inner.clone(), config, generation));
    }

    /// Sets this replica's presence state (JSON: a `PresenceState` object,
    /// or `null` to clear it): sent by the running session (at most every
    /// 100 ms, the latest winning; again every 10 s and after each
    /// reconnect), and by every later session until changed. Kept in the
    /// status (`presence`). A state over 2,048 bytes as the server encodes
    /// it is refused (`presence_too_large`) and nothing changes; malformed
    /// JSON is `bad_presence`.
    #[wasm_bindgen(js_name = setPresence)]
    pub fn set_presence(&self, state: &str) -> Result<(), JsValue> {
        let state: Option<PresenceState> =
            serde_json::from_str(state).map_err(|e| err(ErrorCode::BadPresence, &e.to_string()))?;
        if let Some(s) = &state {
            let len = s.encoded_len();
            if len > MAX_PRESENCE_BYTES {
                return Err(err(
                    ErrorCode::PresenceTooLarge,
                    &PresenceTooLarge(len).to_string(),
                ));
            }
        }
        if self.inner.status.borrow().presence == state {
            return Ok(());
        }
        self.inner.set_status(|s| s.presence = state);
        if let Some(w) = self.inner.wake.borrow().as_ref() {
            let _ = w.unbounded_send(sync::Event::Presence);
        }
        Ok(())
    }

    /// Stops syncing; local edits keep queueing.
    pub fn disconnect(&self) {
        self.inner.generation.set(self.inner.generation.get() + 1);
        *self.inner.http.borrow_mut() = None;
        if let Some(w) = self.inner.wake.borrow_mut().take() {
            let _ = w.unbounded_send(sync::Event::Stop);
        }
        self.inner.set_status(|s| {
            s.state = "offline";
            s.error = None;
            s.peers.clear();
            s.progress = None;
        });
    }
}
