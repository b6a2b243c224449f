//! Hybrid logical clock and stamps (the op ids and their total order).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::id::ReplicaId;

/// A hybrid logical clock value: `unix_millis << 16 | counter`.
///
/// Comparing two values compares wall time first, then the logical counter.
/// A counter overflow carries into the millisecond part, which keeps the
/// value strictly increasing.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Debug)]
pub struct Hlc(pub u64);

impl Hlc {
    /// Number of low bits that hold the logical counter.
    pub const COUNTER_BITS: u32 = 16;

    /// The value at `millis` with a zero counter.
    pub fn from_millis(millis: u64) -> Self {
        Hlc(millis.saturating_mul(1 << Self::COUNTER_BITS))
    }

    /// The wall-clock part, in unix milliseconds.
    pub fn millis(self) -> u64 {
        self.0 >> Self::COUNTER_BITS
    }

    /// The logical counter part.
    pub fn counter(self) -> u16 {
        (self.0 & 0xFFFF) as u16
    }
}

/// Errors of the hybrid logical clock.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClockError {
    /// A remote value is further ahead of local wall time than allowed.
    #[error(
        "remote clock {remote_ms} ms is {ahead_ms} ms ahead of local time (limit {limit_ms} ms)"
    )]
    TooFarAhead {
        /// The remote value's milliseconds.
        remote_ms: u64,
        /// How far ahead it is.
        ahead_ms: u64,
        /// The allowed drift.
        limit_ms: u64,
    },
    /// The clock reached its maximum value and cannot issue another.
    #[error("hybrid logical clock exhausted")]
    Exhausted,
}

/// Checks that `remote` is at most `max_ahead_ms` ahead of `now_ms`.
///
/// Receivers call this before [`Clock::observe`] so that one peer with a
/// broken clock cannot drag every other clock into the future.
pub fn check_drift(remote: Hlc, now_ms: u64, max_ahead_ms: u64) -> Result<(), ClockError> {
    let ahead = remote.millis().saturating_sub(now_ms);
    if ahead > max_ahead_ms {
        return Err(ClockError::TooFarAhead {
            remote_ms: remote.millis(),
            ahead_ms: ahead,
            limit_ms: max_ahead_ms,
        });
    }
    Ok(())
}

/// A replica's hybrid logical clock. Time is passed in: the engine never
/// reads the wall clock.
#[derive(Debug, Clone)]
pub struct Clock {
    replica: ReplicaId,
    /// Invariant: the highest value issued or observed; never decreases, and
    /// every issued value is strictly greater than the one before.
    last: Hlc,
}

impl Clock {
    /// A clock for `replica` that resumes after `last` (0 for a new replica).
    pub fn new(replica: ReplicaId, last: Hlc) -> Self {
        Clock { replica, last }
    }

    /// The replica this clock stamps for.
    pub fn replica(&self) -> ReplicaId {
        self.replica
    }

    /// The highest value issued or observed so far (persist it).
    pub fn last(&self) -> Hlc {
        self.last
    }

    /// Issues the next stamp: greater than everything issued or observed,
    /// and at least the wall time `now_ms`.
    pub fn tick(&mut self, now_ms: u64) -> Result<Stamp, ClockError> {
        let next = self.last.0.checked_add(1).ok_or(ClockError::Exhausted)?;
        self.last = Hlc(next.max(Hlc::from_millis(now_ms).0));
        Ok(Stamp {
            hlc: self.last,
            replica: self.replica,
        })
    }

    /// Merges a received value (the receive rule): later ticks are greater
    /// than `remote`. Check it with [`check_drift`] first.
    pub fn observe(&mut self, remote: Hlc) {
        self.last = self.last.max(remote);
    }
}

/// The id of an op and the total order of all ops: `(hlc, replica)`.
///
/// Text form: `HHHHHHHHHHHHHHHH-RRRRRRRRRRRRRRRR` (16 hex digits of the HLC, a
/// dash, 16 hex digits of the replica), fixed width, so the text sorts in
/// stamp order.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Stamp {
    /// The hybrid logical clock value (compared first).
    pub hlc: Hlc,
    /// The author (breaks ties between equal HLC values).
    pub replica: ReplicaId,
}

impl Stamp {
    /// The lowest stamp.
    pub const MIN: Stamp = Stamp {
        hlc: Hlc(0),
        replica: ReplicaId(0),
    };

    /// A stamp from its parts.
    pub fn new(hlc: u64, replica: u64) -> Self {
        Stamp {
            hlc: Hlc(hlc),
            replica: ReplicaId(replica),
        }
    }
}

impl fmt::Display for Stamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}-{:016x}", self.hlc.0, self.replica.0)
    }
}

impl fmt::Debug for Stamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}.{}@{:x}",
            self.hlc.millis(),
            self.hlc.counter(),
            self.replica.0
        )
    }
}

/// Error returned when a stamp's text form is invalid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid stamp {0:?}: expected 16 hex digits, '-', 16 hex digits")]
pub struct StampParseError(pub String);

impl FromStr for Stamp {
    type Err = StampParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || StampParseError(s.chars().take(64).collect());
        let (h, r) = s.split_once('-').ok_or_else(err)?;
        let hex16 = |p: &str| {
            if p.len() == 16 && p.bytes().all(|c| c.is_ascii_hexdigit()) {
                u64::from_str_radix(p, 16).ok()
            } else {
                None
            }
        };
        match (hex16(h), hex16(r)) {
            (Some(h), Some(r)) => Ok(Stamp::new(h, r)),
            _ => Err(err()),
        }
    }
}

impl Serialize for Stamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Stamp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tick_never_goes_backwards_and_never_repeats() {
        let mut c = Clock::new(ReplicaId(7), Hlc(0));
        let a = c.tick(1_000).unwrap_or_default();
        let b = c.tick(999).unwrap_or_default(); // wall clock went back
        let d = c.tick(1_000).unwrap_or_default();
        assert!(a < b && b < d);
        assert_eq!(a.hlc, Hlc::from_millis(1_000));
        assert_eq!(b.hlc.0, a.hlc.0 + 1);
        let e = c.tick(2_000).unwrap_or_default();
        assert_eq!(e.hlc, Hlc::from_millis(2_000));
    }

    #[test]
    fn observe_moves_the_clock_past_remote_values() {
        let mut c = Clock::new(ReplicaId(1), Hlc(0));
        c.observe(Hlc::from_millis(5_000));
        let s = c.tick(1_000).unwrap_or_default();
        assert!(s.hlc > Hlc::from_millis(5_000));
        c.observe(Hlc(3)); // older values change nothing
        assert_eq!(c.last(), s.hlc);
    }

    #[test]
    fn counter_overflow_carries_and_exhaustion_is_an_error() {
        let mut c = Clock::new(ReplicaId(1), Hlc((5 << 16) | 0xFFFF));
        let s = c.tick(0).unwrap_or_default();
        assert_eq!((s.hlc.millis(), s.hlc.counter()), (6, 0));
        let mut c = Clock::new(ReplicaId(1), Hlc(u64::MAX));
        assert_eq!(c.tick(0), Err(ClockError::Exhausted));
    }

    #[test]
    fn drift_check() {
        assert!(check_drift(Hlc::from_millis(1_500), 1_000, 500).is_ok());
        assert!(matches!(
            check_drift(Hlc::from_millis(1_501), 1_000, 500),
            Err(ClockError::TooFarAhead { ahead_ms: 501, .. })
        ));
        assert!(check_drift(Hlc::from_millis(10), 1_000, 0).is_ok());
    }

    #[test]
    fn stamp_text_sorts_like_stamps() {
        let a = Stamp::new(0x10, 0xff);
        let b = Stamp::new(0x100, 0x1);
        assert!(a < b && a.to_string() < b.to_string());
        assert_eq!(a.to_string().parse::<Stamp>(), Ok(a));
        assert!("10-ff".parse::<Stamp>().is_err());
    }
}
