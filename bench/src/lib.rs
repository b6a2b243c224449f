//! Workloads for the comparative benchmarks (`cargo bench -p arbor-bench`).
//!
//! # Layout
//!
//! - [`WOp`]: an abstract tree edit (node, new parent, where among the
//!   siblings) that every library under test replays, so all see identical
//!   workloads.
//! - [`ArborReplica`]: an Arbor replica that turns abstract edits into
//!   stamped, keyed ops the way a client does.
//! - [`Generator`]: the two move generators (uniform random, outliner-like)
//!   and the tree builders, run against an Arbor replica's view.
//! - [`CountingAlloc`]: a global allocator wrapper that tracks live and peak
//!   heap bytes, for the memory benchmark.
//! - [`Stats`]: medians and percentiles.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use arbor_shared::sim::splitmix;
use arbor_shared::{
    Clock, Hlc, KeyGen, MemoryStore, MoveOp, NodeId, Op, ReplicaId, Tree, TreeStore,
};

/// Where a moved or created node lands among its new siblings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Where {
    /// After the last child.
    Last,
    /// Before the first child.
    First,
    /// Right after this sibling (a node index).
    After(u32),
}

/// An abstract edit: make node `node` (index; 0 is ROOT) a child of
/// `parent` at `at`. Node `i` is `NodeId(i)` in Arbor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WOp {
    /// Node index (>= 1).
    pub node: u32,
    /// Parent index (0 = ROOT).
    pub parent: u32,
    /// Position among the new siblings.
    pub at: Where,
}

/// Node index to Arbor id.
pub fn id(i: u32) -> NodeId {
    NodeId(u128::from(i))
}

/// An Arbor replica as a client drives it: keys from the neighbours, stamps
/// from the clock, each local op applied on its own.
#[derive(Debug, Clone)]
pub struct ArborReplica {
    /// The replica's tree.
    pub tree: Tree<MemoryStore>,
    clock: Clock,
    keys: KeyGen,
}

impl ArborReplica {
    /// A replica with id `replica` over `store`.
    pub fn new(replica: u64, store: MemoryStore) -> Self {
        // A replica's clock has observed every op it holds.
        let last = store.log_last().ok().flatten().map_or(Hlc(0), |s| s.hlc);
        ArborReplica {
            tree: Tree::new(store),
            clock: Clock::new(ReplicaId(replica), last),
            keys: KeyGen::new(replica.wrapping_mul(0x9E37_79B9_7F4A_7C15)),
        }
    }

    /// Turns an abstract edit into an op at wall time `now_ms`, applies it
    /// locally and returns it (to send to other replicas).
    pub fn local(&mut self, w: WOp, now_ms: u64) -> Option<Op> {
        let parent = id(w.parent);
        let key = match w.at {
            Where::Last => {
                let last = self.tree.last_child(parent).ok()?;
                self.keys.append_after(last.as_ref().map(|c| &c.key))
            }
            Where::First => {
                let first = self.tree.children(parent, None, 1).ok()?;
                self.keys
                    .between(None, first.first().map(|c| &c.key))
                    .ok()?
            }
            Where::After(s) => {
                let place = self.tree.place(id(s)).ok()??;
                let cursor = arbor_shared::Child {
                    id: id(s),
                    key: place.key.clone(),
                };
                let next = self.tree.children(parent, Some(&cursor), 2).ok()?;
                let next = next.iter().find(|c| c.id != id(w.node)).map(|c| &c.key);
                match self.keys.between(Some(&place.key), next) {
                    Ok(k) => k,
                    Err(_) => self.keys.after_key(&place.key),
                }
            }
        };
        let stamp = self.clock.tick(now_ms).ok()?;
        let op = Op::Move(MoveOp {
            stamp,
            known_seq: 0,
            node: id(w.node),
            parent,
            key,
        });
        self.tree.apply(std::slice::from_ref(&op)).ok()?;
        Some(op)
    }

    /// Applies a remote batch (one undo/redo).
    pub fn import(&mut self, ops: &[Op]) {
        for op in ops {
            self.clock.observe(op.stamp().hlc);
        }
        let _ = self.tree.apply(ops);
    }
}

/// Which move generator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// Uniform random node under uniform random parent (cycles refused
    /// locally): adversarial, trees get deep.
    Uniform,
    /// Indent / outdent / reorder with depth at most 32.
    Outliner,
}

/// Deepest level the outliner generator produces.
pub const OUTLINER_MAX_DEPTH: usize = 32;

/// Deterministic workload generator.
#[derive(Debug, Clone)]
pub struct Generator {
    state: u64,
}

impl Generator {
    /// A generator seeded with `seed`.
    pub fn new(seed: u64) -> Self {
        Generator { state: seed }
    }

    fn below(&mut self, n: u64) -> u64 {
        splitmix(&mut self.state) % n.max(1)
    }

    /// Creates of nodes `1..=n`. Uniform: each under a uniformly random
    /// earlier node or ROOT (a random recursive tree, depth ~ e ln n).
    /// Outliner: under a random earlier node of depth < 12, else ROOT.
    pub fn build(&mut self, n: u32, shape: Shape) -> Vec<WOp> {
        let mut depth = vec![0u8; n as usize + 1];
        (1..=n)
            .map(|i| {
                let mut parent = self.below(u64::from(i)) as u32;
                if shape == Shape::Outliner {
                    for _ in 0..4 {
                        if depth[parent as usize] < 12 {
                            break;
                        }
                        parent = self.below(u64::from(i)) as u32;
                    }
                    if depth[parent as usize] >= 12 {
                        parent = 0;
                    }
                }
                depth[i as usize] = depth[parent as usize].saturating_add(1);
                WOp {
                    node: i,
                    parent,
                    at: Where::Last,
                }
            })
            .collect()
    }

    /// One random move valid in `tree`'s view (never a local cycle), over
    /// nodes `1..=n`.
    pub fn next_move(&mut self, tree: &Tree<MemoryStore>, n: u32, shape: Shape) -> WOp {
        loop {
            let node = 1 + self.below(u64::from(n)) as u32;
            let w = match shape {
                Shape::Uniform => {
                    let parent = self.below(u64::from(n) + 1) as u32;
                    if parent == node || tree.is_ancestor(id(node), id(parent)).unwrap_or(true) {
                        continue;
                    }
                    WOp {
                        node,
                        parent,
                        at: Where::Last,
                    }
                }
                Shape::Outliner => match self.outliner_move(tree, node) {
                    Some(w) => w,
                    None => continue,
                },
            };
            return w;
        }
    }

    fn outliner_move(&mut self, tree: &Tree<MemoryStore>, node: u32) -> Option<WOp> {
        let x = id(node);
        let place = tree.place(x).ok()??;
        let p = place.parent;
        let cursor = arbor_shared::Child {
            id: x,
            key: place.key,
        };
        let next = tree.children(p, Some(&cursor), 2).ok()?;
        let idx = |n: NodeId| u32::try_from(n.0).ok();
        match self.below(4) {
            // Reorder: one or two places down, or to the top.
            0 | 1 => match next.get(self.below(2) as usize).or(next.first()) {
                Some(s) => Some(WOp {
                    node,
                    parent: idx(p)?,
                    at: Where::After(idx(s.id)?),
                }),
                None => Some(WOp {
                    node,
                    parent: idx(p)?,
                    at: Where::First,
                }),
            },
            // Indent under the following sibling, if depth stays <= 32.
            2 => {
                let s = next.first()?;
                let depth = tree.ancestors(s.id).ok()?.len() + 1;
                let mut height = 0;
                for (i, r) in tree.subtree(x).enumerate() {
                    if i > 2_000 {
                        return None;
                    }
                    height = height.max(r.ok()?.1);
                }
                (depth + 1 + height <= OUTLINER_MAX_DEPTH).then(|| WOp {
                    node,
                    parent: idx(s.id).unwrap_or(0),
                    at: Where::Last,
                })
            }
            // Outdent: after the parent, under the grandparent.
            _ => {
                let g = tree.parent(p).ok()??;
                Some(WOp {
                    node,
                    parent: idx(g)?,
                    at: Where::After(idx(p)?),
                })
            }
        }
    }
}

/// Global allocator wrapper counting live and peak heap bytes.
#[derive(Debug)]
pub struct CountingAlloc;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

impl CountingAlloc {
    /// Heap bytes allocated and not yet freed.
    pub fn live() -> usize {
        LIVE.load(Ordering::Relaxed)
    }

    /// Highest `live()` since the last [`CountingAlloc::reset_peak`].
    pub fn peak() -> usize {
        PEAK.load(Ordering::Relaxed)
    }

    /// Sets the peak to the current live bytes.
    pub fn reset_peak() {
        PEAK.store(LIVE.load(Ordering::Relaxed), Ordering::Relaxed);
    }

    fn add(n: usize) {
        let live = LIVE.fetch_add(n, Ordering::Relaxed) + n;
        PEAK.fetch_max(live, Ordering::Relaxed);
    }
}

// SAFETY of the impl: every method forwards to `System` unchanged and only
// updates counters; layouts are passed through as received.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        Self::add(layout.size());
        // SAFETY: forwarded contract.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: forwarded contract.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        Self::add(layout.size());
        // SAFETY: forwarded contract.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if new_size >= layout.size() {
            Self::add(new_size - layout.size());
        } else {
            LIVE.fetch_sub(layout.size() - new_size, Ordering::Relaxed);
        }
        // SAFETY: forwarded contract.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

/// Summary statistics of a sample of durations (seconds).
#[derive(Debug, Clone, Copy)]
pub struct Stats {
    /// Median.
    pub median: f64,
    /// 99th percentile (nearest rank).
    pub p99: f64,
}

impl Stats {
    /// Statistics of `xs` (empty: zeros).
    pub fn of(xs: &[f64]) -> Stats {
        let mut v = xs.to_vec();
        v.sort_by(f64::total_cmp);
        let at = |q: f64| {
            if v.is_empty() {
                0.0
            } else {
                v[((q * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1]
            }
        };
        Stats {
            median: at(0.5),
            p99: at(0.99),
        }
    }
}
