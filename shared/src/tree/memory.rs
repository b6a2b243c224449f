//! The in-memory [`TreeStore`]: compact slots indexed by `u32`.

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::hash::BuildHasher;

use foldhash::fast::RandomState;
use hashbrown::HashTable;

use super::{Child, Effect, LogEntry, Payload, Place, TreeStore};
use crate::clock::Stamp;
use crate::id::NodeId;
use crate::key::OrderKey;

/// A node id as two words: 8-byte aligned, so index entries and slots stay
/// small (`u128` is 16-byte aligned).
type Id2 = [u64; 2];

fn id2(id: NodeId) -> Id2 {
    [(id.0 >> 64) as u64, id.0 as u64]
}

fn from_id2(id: Id2) -> NodeId {
    NodeId((u128::from(id[0]) << 64) | u128::from(id[1]))
}

/// No slot (no parent, no child list).
const NONE: u32 = u32::MAX;
/// `MemLog::prev_parent` of a skipped move.
const SKIPPED: u32 = u32::MAX - 1;
const ROOT_IX: u32 = 0;
const TRASH_IX: u32 = 1;
/// A small child list becomes a B-tree above this many children...
const LARGE_AT: usize = 512;
/// ...and a B-tree becomes a small list again below this many.
const SMALL_AT: usize = 128;

/// The cold part of a node known to the store (id and key). 32 bytes.
#[derive(Debug, Clone)]
struct Slot {
    /// Invariant: `index[id]` is this slot's position.
    id: Id2,
    /// Order key among the parent's children (meaningless without parent).
    key: OrderKey,
}

/// The hot part of a node: what ancestor walks and link/unlink touch. Kept
/// in its own dense array (8 bytes a node) so walks stay in cache.
#[derive(Debug, Clone, Copy)]
struct Topo {
    /// Parent slot; [`NONE`] when the node is not in the tree (a placeholder
    /// for an id only referenced so far, a removed node, or ROOT/TRASH).
    parent: u32,
    /// Position in `lists` of this node's children, or [`NONE`] if it has
    /// none. Invariant: a list is never empty.
    children: u32,
}

/// Children of one parent in `(key, id)` order.
#[derive(Debug, Clone)]
enum ChildList {
    /// Invariant: sorted by `(slots[c].key, slots[c].id)`; every `c` has
    /// this list's owner as parent.
    Small(Vec<u32>),
    /// For large sibling sets (100k siblings under one parent): inserts and
    /// removals in `O(log n)` instead of a memmove.
    /// Boxed so the enum stays 24 bytes (one per parent node).
    #[allow(clippy::box_collection)]
    Large(Box<BTreeMap<(OrderKey, NodeId), u32>>),
}

/// A logged move, by slot. 64 bytes.
#[derive(Debug, Clone)]
struct MemLog {
    stamp: Stamp,
    node: u32,
    parent: u32,
    key: OrderKey,
    /// Previous parent slot; [`NONE`] if the node was not in the tree,
    /// [`SKIPPED`] if the move was skipped.
    prev_parent: u32,
    prev_key: OrderKey,
}

/// Infallible in-memory store. Memory per node of a 1M-node tree built by
/// creates, log included: see `docs/BENCHMARKS.md`.
#[derive(Debug, Clone)]
pub struct MemoryStore {
    /// Invariant: maps every slot's id to its position; slots are never
    /// freed (a removed node keeps its slot as a placeholder).
    /// Slot positions hashed by their slot's id: 4 bytes (plus one control
    /// byte) a bucket instead of 24 for an id-keyed map, at the price of
    /// reading the slot to confirm a match.
    index: HashTable<u32>,
    hasher: RandomState,
    slots: Vec<Slot>,
    /// Invariant: same length as `slots`.
    topo: Vec<Topo>,
    /// Child lists; entries on `free_lists` are empty and unused.
    lists: Vec<ChildList>,
    free_lists: Vec<u32>,
    /// Invariant: number of slots other than ROOT/TRASH with a parent.
    live: u64,
    /// Invariant: strictly increasing stamps, all above `horizon`.
    log: Vec<MemLog>,
    horizon: Option<Stamp>,
    /// Registers per node, each list sorted by field name.
    payloads: HashMap<NodeId, Vec<(Box<str>, Payload)>, RandomState>,
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryStore {
    /// An empty tree (ROOT and TRASH only).
    pub fn new() -> Self {
        Self::with_capacity(0)
    }

    /// An empty tree with room for `nodes` nodes and log entries.
    pub fn with_capacity(nodes: usize) -> Self {
        let mut s = MemoryStore {
            index: HashTable::with_capacity(nodes + 2),
            hasher: RandomState::default(),
            slots: Vec::with_capacity(nodes + 2),
            topo: Vec::with_capacity(nodes + 2),
            lists: Vec::new(),
            free_lists: Vec::new(),
            live: 0,
            log: Vec::with_capacity(nodes),
            horizon: None,
            payloads: HashMap::with_hasher(RandomState::default()),
        };
        s.intern(NodeId::ROOT);
        s.intern(NodeId::TRASH);
        s
    }

    fn intern(&mut self, id: NodeId) -> u32 {
        if let Some(ix) = self.find(id) {
            return ix;
        }
        let ix = self.slots.len() as u32;
        self.slots.push(Slot {
            id: id2(id),
            key: OrderKey::new(&[0x80]).unwrap_or_else(|_| unreachable!()),
        });
        self.topo.push(Topo {
            parent: NONE,
            children: NONE,
        });
        let (slots, hasher) = (&self.slots, &self.hasher);
        self.index
            .insert_unique(hasher.hash_one(id2(id)), ix, |&i| {
                hasher.hash_one(slots[i as usize].id)
            });
        ix
    }

    fn find(&self, id: NodeId) -> Option<u32> {
        let id = id2(id);
        self.index
            .find(self.hasher.hash_one(id), |&i| {
                self.slots[i as usize].id == id
            })
            .copied()
    }

    fn slot(&self, ix: u32) -> &Slot {
        &self.slots[ix as usize]
    }

    fn cmp_child(&self, c: u32, key: &OrderKey, id: NodeId) -> std::cmp::Ordering {
        cmp_child(&self.slots, c, key, id)
    }

    /// Removes `ix` from its parent's list (using its current key).
    fn unlink(&mut self, ix: u32) {
        let parent = self.topo[ix as usize].parent;
        let li = self.topo[parent as usize].children;
        let empty = match &mut self.lists[li as usize] {
            ChildList::Small(v) => {
                // A linear scan of the u32 list touches no sibling slot,
                // unlike a binary search by key (cache misses dominate).
                if let Some(p) = v.iter().position(|&c| c == ix) {
                    v.remove(p);
                }
                v.is_empty()
            }
            ChildList::Large(m) => {
                let s = &self.slots[ix as usize];
                m.remove(&(s.key.clone(), from_id2(s.id)));
                if m.len() < SMALL_AT {
                    let v: Vec<u32> = m.values().copied().collect();
                    self.lists[li as usize] = ChildList::Small(v);
                }
                false
            }
        };
        if empty {
            self.free_lists.push(li);
            self.topo[parent as usize].children = NONE;
        }
    }

    /// Inserts `ix` into its parent's list (its slot already updated).
    fn link(&mut self, ix: u32) {
        let parent = self.topo[ix as usize].parent;
        let (key, id) = {
            let s = self.slot(ix);
            (s.key.clone(), from_id2(s.id))
        };
        let li = self.topo[parent as usize].children;
        if li == NONE {
            let li = match self.free_lists.pop() {
                Some(li) => {
                    self.lists[li as usize] = ChildList::Small(vec![ix]);
                    li
                }
                None => {
                    self.lists.push(ChildList::Small(vec![ix]));
                    (self.lists.len() - 1) as u32
                }
            };
            self.topo[parent as usize].children = li;
            return;
        }
        match &mut self.lists[li as usize] {
            ChildList::Small(v) => {
                let slots = &self.slots;
                // Appending is the common case: one comparison.
                match v.last() {
                    Some(&last) if cmp_child(slots, last, &key, id).is_lt() => v.push(ix),
                    _ => {
                        let pos = v
                            .binary_search_by(|&c| cmp_child(slots, c, &key, id))
                            .unwrap_or_else(|p| p);
                        v.insert(pos, ix);
                    }
                }
                if v.len() > LARGE_AT {
                    let m = v
                        .iter()
                        .map(|&c| {
                            let s = &slots[c as usize];
                            ((s.key.clone(), from_id2(s.id)), c)
                        })
                        .collect();
                    self.lists[li as usize] = ChildList::Large(Box::new(m));
                }
            }
            ChildList::Large(m) => {
                m.insert((key, id), ix);
            }
        }
    }

    fn exists(&self, ix: u32) -> bool {
        ix == ROOT_IX || ix == TRASH_IX || self.topo[ix as usize].parent != NONE
    }

    fn to_entry(&self, e: &MemLog) -> LogEntry {
        let effect = match e.prev_parent {
            SKIPPED => Effect::Skipped,
            NONE => Effect::Moved { prev: None },
            p => Effect::Moved {
                prev: Some(Place {
                    parent: from_id2(self.slot(p).id),
                    key: e.prev_key.clone(),
                }),
            },
        };
        LogEntry {
            stamp: e.stamp,
            node: from_id2(self.slot(e.node).id),
            parent: from_id2(self.slot(e.parent).id),
            key: e.key.clone(),
            effect,
        }
    }
}

fn cmp_child(slots: &[Slot], c: u32, key: &OrderKey, id: NodeId) -> std::cmp::Ordering {
    let s = &slots[c as usize];
    (&s.key, from_id2(s.id)).cmp(&(key, id))
}

impl TreeStore for MemoryStore {
    type Error = Infallible;
    type Node = u32;

    fn lookup(&self, id: NodeId) -> Result<Option<u32>, Infallible> {
        Ok(self.find(id))
    }

    fn intern(&mut self, id: NodeId) -> Result<u32, Infallible> {
        Ok(MemoryStore::intern(self, id))
    }

    fn id(&self, node: u32) -> Result<NodeId, Infallible> {
        Ok(from_id2(self.slot(node).id))
    }

    fn place(&self, node: u32) -> Result<Option<Place<u32>>, Infallible> {
        let parent = self.topo[node as usize].parent;
        Ok((parent != NONE).then(|| Place {
            parent,
            key: self.slot(node).key.clone(),
        }))
    }

    fn parent(&self, node: u32) -> Result<Option<u32>, Infallible> {
        let p = self.topo[node as usize].parent;
        Ok((p != NONE).then_some(p))
    }

    fn is_ancestor(&self, a: u32, b: u32) -> Result<Option<bool>, Infallible> {
        // One memory access per level; more levels than slots is a loop.
        let mut cur = b;
        let mut steps = 0usize;
        while cur != NONE {
            if cur == a {
                return Ok(Some(true));
            }
            cur = self.topo[cur as usize].parent;
            steps += 1;
            if steps > self.topo.len() {
                return Ok(None);
            }
        }
        Ok(Some(false))
    }

    fn contains(&self, node: u32) -> Result<bool, Infallible> {
        Ok(self.exists(node))
    }

    fn has_children(&self, node: u32) -> Result<bool, Infallible> {
        Ok(self.topo[node as usize].children != NONE)
    }

    fn set_place(&mut self, node: u32, place: Place<u32>) -> Result<(), Infallible> {
        if self.topo[node as usize].parent != NONE {
            self.unlink(node);
        } else {
            self.live += 1;
        }
        self.topo[node as usize].parent = place.parent;
        self.slots[node as usize].key = place.key;
        self.link(node);
        Ok(())
    }

    fn remove(&mut self, node: u32) -> Result<(), Infallible> {
        if self.topo[node as usize].parent != NONE {
            self.unlink(node);
            self.topo[node as usize].parent = NONE;
            self.live -= 1;
        }
        Ok(())
    }

    fn children(
        &self,
        parent: u32,
        after: Option<(&OrderKey, NodeId)>,
        limit: usize,
    ) -> Result<Vec<Child>, Infallible> {
        let li = self.topo[parent as usize].children;
        if li == NONE || limit == 0 {
            return Ok(Vec::new());
        }
        let child = |c: u32| {
            let s = self.slot(c);
            Child {
                id: from_id2(s.id),
                key: s.key.clone(),
            }
        };
        Ok(match &self.lists[li as usize] {
            ChildList::Small(v) => {
                let start = match after {
                    None => 0,
                    Some((k, id)) => v.partition_point(|&c| self.cmp_child(c, k, id).is_le()),
                };
                v[start..].iter().take(limit).map(|&c| child(c)).collect()
            }
            ChildList::Large(m) => match after {
                None => m.values().take(limit).map(|&c| child(c)).collect(),
                Some((k, id)) => {
                    use std::ops::Bound;
                    m.range((Bound::Excluded((k.clone(), id)), Bound::Unbounded))
                        .take(limit)
                        .map(|(_, &c)| child(c))
                        .collect()
                }
            },
        })
    }

    fn last_child(&self, parent: u32) -> Result<Option<Child>, Infallible> {
        let li = self.topo[parent as usize].children;
        if li == NONE {
            return Ok(None);
        }
        let last = match &self.lists[li as usize] {
            ChildList::Small(v) => v.last().copied(),
            ChildList::Large(m) => m.values().next_back().copied(),
        };
        Ok(last.map(|c| {
            let s = self.slot(c);
            Child {
                id: from_id2(s.id),
                key: s.key.clone(),
            }
        }))
    }

    fn node_count(&self) -> Result<u64, Infallible> {
        Ok(self.live)
    }

    fn all_nodes(&self) -> Result<Vec<(NodeId, Place)>, Infallible> {
        Ok(self
            .slots
            .iter()
            .zip(&self.topo)
            .filter(|(_, t)| t.parent != NONE)
            .map(|(s, t)| {
                (
                    from_id2(s.id),
                    Place {
                        parent: from_id2(self.slot(t.parent).id),
                        key: s.key.clone(),
                    },
                )
            })
            .collect())
    }

    fn log_last(&self) -> Result<Option<Stamp>, Infallible> {
        Ok(self.log.last().map(|e| e.stamp))
    }

    fn log_contains(&self, stamp: Stamp) -> Result<bool, Infallible> {
        Ok(self.log.binary_search_by_key(&stamp, |e| e.stamp).is_ok())
    }

    fn log_push(&mut self, entry: LogEntry<u32>) -> Result<(), Infallible> {
        let (prev_parent, prev_key) = match entry.effect {
            Effect::Skipped => (SKIPPED, entry.key.clone()),
            Effect::Moved { prev: None } => (NONE, entry.key.clone()),
            Effect::Moved { prev: Some(p) } => (p.parent, p.key),
        };
        self.log.push(MemLog {
            stamp: entry.stamp,
            node: entry.node,
            parent: entry.parent,
            key: entry.key,
            prev_parent,
            prev_key,
        });
        Ok(())
    }

    fn log_pop_above(
        &mut self,
        stamp: Stamp,
        out: &mut Vec<LogEntry<u32>>,
    ) -> Result<(), Infallible> {
        let cut = self.log.partition_point(|e| e.stamp <= stamp);
        out.reserve(self.log.len() - cut);
        while self.log.len() > cut {
            let Some(e) = self.log.pop() else { break };
            let effect = match e.prev_parent {
                SKIPPED => Effect::Skipped,
                NONE => Effect::Moved { prev: None },
                p => Effect::Moved {
                    prev: Some(Place {
                        parent: p,
                        key: e.prev_key,
                    }),
                },
            };
            out.push(LogEntry {
                stamp: e.stamp,
                node: e.node,
                parent: e.parent,
                key: e.key,
                effect,
            });
        }
        Ok(())
    }

    fn log_truncate_through(&mut self, stamp: Stamp) -> Result<u64, Infallible> {
        let cut = self.log.partition_point(|e| e.stamp <= stamp);
        self.log.drain(..cut);
        if self.log.capacity() > 2 * self.log.len() + 1024 {
            self.log.shrink_to_fit();
        }
        Ok(cut as u64)
    }

    fn log_len(&self) -> Result<u64, Infallible> {
        Ok(self.log.len() as u64)
    }

    fn log_entries(&self) -> Result<Vec<LogEntry>, Infallible> {
        Ok(self.log.iter().map(|e| self.to_entry(e)).collect())
    }

    fn horizon(&self) -> Result<Option<Stamp>, Infallible> {
        Ok(self.horizon)
    }

    fn set_horizon(&mut self, horizon: Stamp) -> Result<(), Infallible> {
        self.horizon = Some(horizon);
        Ok(())
    }

    fn payload(&self, node: NodeId, field: &str) -> Result<Option<Payload>, Infallible> {
        Ok(self.payloads.get(&node).and_then(|v| {
            v.binary_search_by(|(f, _)| (**f).cmp(field))
                .ok()
                .and_then(|i| v.get(i))
                .map(|(_, p)| p.clone())
        }))
    }

    fn set_payload(
        &mut self,
        node: NodeId,
        field: &str,
        payload: Payload,
    ) -> Result<(), Infallible> {
        let v = self.payloads.entry(node).or_default();
        match v.binary_search_by(|(f, _)| (**f).cmp(field)) {
            Ok(i) => v[i].1 = payload,
            Err(i) => v.insert(i, (field.into(), payload)),
        }
        Ok(())
    }

    fn payloads(&self, node: NodeId) -> Result<Vec<(String, Payload)>, Infallible> {
        Ok(self
            .payloads
            .get(&node)
            .map(|v| v.iter().map(|(f, p)| (f.to_string(), p.clone())).collect())
            .unwrap_or_default())
    }

    fn all_payloads(&self) -> Result<Vec<(NodeId, String, Payload)>, Infallible> {
        Ok(self
            .payloads
            .iter()
            .flat_map(|(n, v)| v.iter().map(move |(f, p)| (*n, f.to_string(), p.clone())))
            .collect())
    }

    fn check_store(&self) -> Result<(), String> {
        if self.index.len() != self.slots.len() || self.topo.len() != self.slots.len() {
            return Err("index, slots and topo differ in size".into());
        }
        for (i, (s, t)) in self.slots.iter().zip(&self.topo).enumerate() {
            if self.find(from_id2(s.id)) != Some(i as u32) {
                return Err(format!("index does not map {:?} to its slot", s.id));
            }
            if (i as u32 == ROOT_IX || i as u32 == TRASH_IX) && t.parent != NONE {
                return Err("ROOT or TRASH has a parent".into());
            }
            if t.children != NONE {
                match &self.lists[t.children as usize] {
                    ChildList::Small(v) => {
                        if v.is_empty() || v.len() > LARGE_AT {
                            return Err(format!("bad small child list size {}", v.len()));
                        }
                        if v.iter().any(|&c| self.topo[c as usize].parent != i as u32) {
                            return Err(format!("child list of {:?} holds a foreign node", s.id));
                        }
                    }
                    ChildList::Large(m) => {
                        for ((k, id), &c) in m.iter() {
                            let cs = self.slot(c);
                            if self.topo[c as usize].parent != i as u32
                                || &cs.key != k
                                || from_id2(cs.id) != *id
                            {
                                return Err(format!("large child list of {:?} is stale", s.id));
                            }
                        }
                    }
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_stay_compact() {
        assert_eq!(std::mem::size_of::<Slot>(), 32);
        assert_eq!(std::mem::size_of::<Topo>(), 8);
        assert_eq!(std::mem::size_of::<MemLog>(), 64);
        assert_eq!(std::mem::size_of::<ChildList>(), 24);
    }
}
