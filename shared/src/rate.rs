//! Token buckets with time passed in, one per key: the per-token rate limits of the sync server and the Durable Object.

use std::collections::HashMap;

/// One key's bucket: refills at `rate` a second up to `burst`; a take
/// costs one, a charge any amount (it may go into debt, down to a minute
/// of the rate).
///
/// Written here rather than taken from a crate: the limiters we found
/// (`governor`) read the clock themselves, which the Durable Object's
/// wasm cannot, and the sync server charges work found out after a take.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TokenBucket {
    /// Tokens left; below zero is debt. Invariant: at most `burst`, at
    /// least `-60 * rate`.
    tokens: f64,
    /// When `tokens` was last brought up to date, in seconds.
    at_s: f64,
}

/// A bucket's rate and burst.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    /// Tokens a second, sustained (at least 0.001).
    pub per_s: f64,
    /// Tokens at once (at least 1).
    pub burst: f64,
}

impl Rate {
    /// `per_s` a second, bursts of `per_s * burst_s` (at least one).
    pub fn new(per_s: f64, burst_s: f64) -> Rate {
        let per_s = per_s.max(0.001);
        Rate {
            per_s,
            burst: (per_s * burst_s).max(1.0),
        }
    }
}

impl TokenBucket {
    /// A full bucket at `now_s`.
    pub fn full(rate: &Rate, now_s: f64) -> TokenBucket {
        TokenBucket {
            tokens: rate.burst,
            at_s: now_s,
        }
    }

    fn refill(&mut self, rate: &Rate, now_s: f64) {
        let elapsed = (now_s - self.at_s).max(0.0);
        self.tokens = (self.tokens + elapsed * rate.per_s).min(rate.burst);
        self.at_s = self.at_s.max(now_s);
    }

    /// Takes one token at `now_s`, or says how many seconds to wait.
    pub fn take(&mut self, rate: &Rate, now_s: f64) -> Result<(), f64> {
        self.refill(rate, now_s);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err((1.0 - self.tokens) / rate.per_s)
        }
    }

    /// True if the bucket is full at `now_s`: equal to a new one, so a map
    /// of buckets can forget it.
    pub fn is_full(&self, rate: &Rate, now_s: f64) -> bool {
        self.tokens + (now_s - self.at_s).max(0.0) * rate.per_s >= rate.burst
    }

    /// Charges `units` more at `now_s` (work found out after it was let
    /// in); the debt is bounded by a minute of the rate.
    pub fn charge(&mut self, rate: &Rate, units: f64, now_s: f64) {
        self.refill(rate, now_s);
        if units > 0.0 {
            self.tokens = (self.tokens - units).max(-60.0 * rate.per_s);
        }
    }
}

/// A bucket per key at one rate. Memory is bounded: when the map holds
/// `max_keys` and a new key comes, full buckets (equal to new ones) are
/// dropped first.
#[derive(Debug, Clone)]
pub struct RateMap {
    rate: Rate,
    max_keys: usize,
    buckets: HashMap<String, TokenBucket>,
}

impl RateMap {
    /// Buckets at `rate`, sweeping full ones past `max_keys` keys.
    pub fn new(rate: Rate, max_keys: usize) -> RateMap {
        RateMap {
            rate,
            max_keys,
            buckets: HashMap::new(),
        }
    }

    fn bucket(&mut self, key: &str, now_s: f64) -> &mut TokenBucket {
        let rate = self.rate;
        if self.buckets.len() >= self.max_keys && !self.buckets.contains_key(key) {
            self.buckets.retain(|_, b| !b.is_full(&rate, now_s));
        }
        self.buckets
            .entry(key.to_string())
            .or_insert_with(|| TokenBucket::full(&rate, now_s))
    }

    /// Takes one token of `key` at `now_s`, or says how many seconds to
    /// wait ([`TokenBucket::take`]).
    pub fn take(&mut self, key: &str, now_s: f64) -> Result<(), f64> {
        let rate = self.rate;
        self.bucket(key, now_s).take(&rate, now_s)
    }

    /// Charges `units` more to `key` at `now_s` ([`TokenBucket::charge`]).
    pub fn charge(&mut self, key: &str, units: f64, now_s: f64) {
        if units > 0.0 {
            let rate = self.rate;
            self.bucket(key, now_s).charge(&rate, units, now_s);
        }
    }
}
