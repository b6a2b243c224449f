//! Reconnect delays: jittered exponential backoff, with the randomness passed in as a seed.

/// Jittered exponential backoff.
#[derive(Debug, Clone)]
pub(super) struct Backoff {
    min_ms: u64,
    max_ms: u64,
    /// The next delay before jitter (invariant: `min_ms <= next_ms <= max_ms`).
    next_ms: u64,
    /// splitmix64 state (`arbor_shared::sim::splitmix`): the session reads
    /// no randomness of its own.
    rng: u64,
}

impl Backoff {
    pub(super) fn new(min_ms: u64, max_ms: u64, seed: u64) -> Backoff {
        let min_ms = min_ms.max(1);
        let max_ms = max_ms.max(min_ms);
        Backoff {
            min_ms,
            max_ms,
            next_ms: min_ms,
            rng: seed,
        }
    }

    /// The next delay: between half and all of the current step (so clients
    /// that lost the server together do not come back together); the step
    /// doubles up to the maximum.
    pub(super) fn next_delay(&mut self) -> u64 {
        let step = self.next_ms;
        self.next_ms = (self.next_ms.saturating_mul(2)).min(self.max_ms);
        step / 2 + arbor_shared::sim::splitmix(&mut self.rng) % (step / 2 + 1)
    }

    /// Starts over from the minimum (after a connection stayed healthy).
    pub(super) fn reset(&mut self) {
        self.next_ms = self.min_ms;
    }
}
