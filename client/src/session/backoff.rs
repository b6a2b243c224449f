//! Reconnect delays: jittered exponential backoff, with the randomness passed in as a seed.

/// Jittered exponential backoff.
#[derive(Debug, Clone)]
pub(super) struct Backoff {
    min_ms: u64,
    max_ms: u64,
    /// The next delay before jitter (invariant: `min_ms <= next_ms <= max_ms`).
    next_ms: u64,
    /// splitmix64 state: the session reads no randomness of its own.
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

    fn random(&mut self) -> u64 {
        self.rng = self.rng.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// The next delay: between half and all of the current step (so clients
    /// that lost the server together do not come back together); the step
    /// doubles up to the maximum.
    pub(super) fn next_delay(&mut self) -> u64 {
        let step = self.next_ms;
        self.next_ms = (self.next_ms.saturating_mul(2)).min(self.max_ms);
        step / 2 + self.random() % (step / 2 + 1)
    }

    /// Starts over from the minimum (after a connection stayed healthy).
    pub(super) fn reset(&mut self) {
        self.next_ms = self.min_ms;
    }
}
