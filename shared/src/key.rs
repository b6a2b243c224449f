//! Order keys: fractional indexes that order siblings.
//!
//! # Format
//!
//! A key is 1 to [`MAX_KEY_LEN`] bytes, compared lexicographically, whose
//! last byte is never `0x00` (so there is always room between two distinct
//! keys). Siblings sort by `(key, node id)`, so equal keys are legal and
//! still give one total order.
//!
//! Generated keys start with a *head* byte that gives the length of an
//! integer part that follows: heads `0x80..=0xFF` hold non-negative
//! integers of `head - 0x7F` bytes, heads `0x00..=0x7F` negative ones of
//! `0x80 - head` bytes (a longer negative integer sorts lower). Appending
//! after the last sibling increments the integer, prepending decrements it,
//! so a list built by appending or prepending `n` times has keys of
//! `O(log n)` bytes. Inserting between two keys takes the lexicographic
//! midpoint region. Any byte string in the format is accepted as input: the
//! head scheme is only how this generator keeps keys short.
//!
//! Jitter: every generated step or digit is drawn from a per-replica
//! pseudo-random sequence, so two replicas inserting at the same spot
//! concurrently get different keys (with high probability).
//!
//! Why our own code: the crates we looked at (`fractional_index`,
//! `lexicon_fractional_index`) have no jitter, and the first grows keys by
//! one byte per ~127 appends instead of logarithmically.

use std::cmp::Ordering;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Longest accepted key, in bytes.
pub const MAX_KEY_LEN: usize = 256;

const INLINE: usize = 7;

/// A sibling order key (see the module docs for the format).
///
/// 16 bytes in memory; keys up to 7 bytes (the common case) need no heap,
/// longer ones share one immutable heap copy between clones.
#[derive(Clone)]
pub struct OrderKey(Repr);

#[derive(Clone)]
enum Repr {
    /// Invariant: `len <= INLINE`; bytes past `len` are zero.
    Inline { len: u8, buf: [u8; INLINE] },
    /// Invariant: more than `INLINE` bytes. Shared, so the clones the log
    /// and the tree keep of one key cost a reference count, not a copy.
    Heap(Arc<[u8]>),
}

/// Errors about order keys.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// The key is empty, longer than [`MAX_KEY_LEN`], or ends in `0x00`.
    #[error("invalid order key: must be 1..={MAX_KEY_LEN} bytes not ending in 0x00")]
    Invalid,
    /// The key text is not lowercase hex.
    #[error("invalid order key text: expected an even number of hex digits")]
    BadHex,
    /// `between(lo, hi)` with `lo >= hi`: the caller must re-key siblings.
    #[error("no key between {lo} and {hi}: lower bound is not below upper bound")]
    NoRoom {
        /// The lower bound.
        lo: OrderKey,
        /// The upper bound.
        hi: OrderKey,
    },
}

impl OrderKey {
    /// Wraps bytes that satisfy the key format.
    pub fn new(bytes: &[u8]) -> Result<Self, KeyError> {
        if bytes.is_empty() || bytes.len() > MAX_KEY_LEN || bytes.last() == Some(&0) {
            return Err(KeyError::Invalid);
        }
        Ok(Self::from_bytes_unchecked(bytes))
    }

    fn from_bytes_unchecked(bytes: &[u8]) -> Self {
        if bytes.len() <= INLINE {
            let mut buf = [0u8; INLINE];
            buf[..bytes.len()].copy_from_slice(bytes);
            OrderKey(Repr::Inline {
                len: bytes.len() as u8,
                buf,
            })
        } else {
            OrderKey(Repr::Heap(bytes.into()))
        }
    }

    /// The key's bytes.
    pub fn as_bytes(&self) -> &[u8] {
        match &self.0 {
            Repr::Inline { len, buf } => &buf[..usize::from(*len)],
            Repr::Heap(b) => b,
        }
    }

    /// Lowercase hex text of the key (its JSON form).
    pub fn to_hex(&self) -> String {
        let mut s = String::with_capacity(self.as_bytes().len() * 2);
        for b in self.as_bytes() {
            use std::fmt::Write;
            let _ = write!(s, "{b:02x}");
        }
        s
    }

    /// Parses the hex text form.
    pub fn from_hex(s: &str) -> Result<Self, KeyError> {
        if s.len() % 2 != 0 || s.len() > MAX_KEY_LEN * 2 {
            return Err(if s.len() % 2 != 0 {
                KeyError::BadHex
            } else {
                KeyError::Invalid
            });
        }
        let mut out = Vec::with_capacity(s.len() / 2);
        for pair in s.as_bytes().chunks(2) {
            let hi = (pair[0] as char).to_digit(16).ok_or(KeyError::BadHex)?;
            let lo = (pair[1] as char).to_digit(16).ok_or(KeyError::BadHex)?;
            out.push((hi << 4 | lo) as u8);
        }
        Self::new(&out)
    }
}

impl PartialEq for OrderKey {
    fn eq(&self, other: &Self) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}
impl Eq for OrderKey {}
impl PartialOrd for OrderKey {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for OrderKey {
    fn cmp(&self, other: &Self) -> Ordering {
        self.as_bytes().cmp(other.as_bytes())
    }
}
impl Hash for OrderKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.as_bytes().hash(state);
    }
}
impl fmt::Debug for OrderKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "k{}", self.to_hex())
    }
}
impl fmt::Display for OrderKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl Serialize for OrderKey {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}

impl<'de> Deserialize<'de> for OrderKey {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        OrderKey::from_hex(&s).map_err(serde::de::Error::custom)
    }
}

/// Generates order keys with per-replica jitter. Pure: the jitter is a
/// deterministic sequence seeded by the caller (e.g. with the replica id).
#[derive(Debug, Clone)]
pub struct KeyGen {
    /// splitmix64 state.
    state: u64,
}

/// Largest step when appending or prepending (steps are 1..=MAX_STEP).
const MAX_STEP: u16 = 16;

impl KeyGen {
    /// A generator whose jitter sequence is determined by `seed` (use the
    /// replica id, mixed with anything else that differs between runs).
    pub fn new(seed: u64) -> Self {
        KeyGen { state: seed }
    }

    fn next(&mut self) -> u64 {
        // splitmix64: tiny, fast, and well distributed; jitter needs no more.
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn step(&mut self) -> u16 {
        1 + (self.next() % u64::from(MAX_STEP)) as u16
    }

    /// A key strictly between `lo` and `hi` (`None` = unbounded on that
    /// side). Errors with [`KeyError::NoRoom`] when `lo >= hi`.
    pub fn between(
        &mut self,
        lo: Option<&OrderKey>,
        hi: Option<&OrderKey>,
    ) -> Result<OrderKey, KeyError> {
        let bytes = match (lo, hi) {
            (None, None) => self.first(),
            (Some(lo), None) => self.after(lo.as_bytes()),
            (None, Some(hi)) => self.before(hi.as_bytes()),
            (Some(lo), Some(hi)) => {
                if lo >= hi {
                    return Err(KeyError::NoRoom {
                        lo: lo.clone(),
                        hi: hi.clone(),
                    });
                }
                self.midpoint(lo.as_bytes(), Some(hi.as_bytes()))
            }
        };
        // Every path above yields 1..=MAX_KEY_LEN+8 bytes without a trailing
        // zero; a key that would exceed the limit means the caller must
        // re-key the siblings.
        if bytes.len() > MAX_KEY_LEN {
            return Err(KeyError::Invalid);
        }
        Ok(OrderKey::from_bytes_unchecked(&bytes))
    }

    /// A key after every key in a list whose last key is `last`.
    pub fn after_key(&mut self, last: &OrderKey) -> OrderKey {
        OrderKey::from_bytes_unchecked(&self.after(last.as_bytes()))
    }

    /// A key for appending to a list whose last key is `last` (`None`: the
    /// list is empty).
    pub fn append_after(&mut self, last: Option<&OrderKey>) -> OrderKey {
        let bytes = match last {
            Some(k) => self.after(k.as_bytes()),
            None => self.first(),
        };
        OrderKey::from_bytes_unchecked(&bytes)
    }

    /// The first key of an empty list.
    fn first(&mut self) -> Vec<u8> {
        vec![0x80, 0x78 + self.step() as u8]
    }

    fn after(&mut self, k: &[u8]) -> Vec<u8> {
        let Some(&head) = k.first() else {
            return vec![0x80, 0x80];
        };
        let n = int_len(head);
        let mut digits: Vec<u8> = (0..n).map(|i| k.get(1 + i).copied().unwrap_or(0)).collect();
        let step = self.step();
        let mut out = if add_be(&mut digits, step) {
            let mut o = Vec::with_capacity(n + 1);
            o.push(head);
            o.extend_from_slice(&digits);
            o
        } else if head == 0xFF {
            return self.midpoint(k, None);
        } else {
            // The integer overflowed its length: the next head up holds the
            // smallest integers of the next class.
            let h = head + 1;
            let mut o = vec![0u8; 1 + int_len(h)];
            o[0] = h;
            add_be(&mut o[1..], step);
            o
        };
        if out.last() == Some(&0) {
            out.push(0x80);
        }
        out
    }

    fn before(&mut self, k: &[u8]) -> Vec<u8> {
        let Some(&head) = k.first() else {
            return vec![0x80, 0x80];
        };
        let n = int_len(head);
        let mut digits: Vec<u8> = (0..n).map(|i| k.get(1 + i).copied().unwrap_or(0)).collect();
        let step = self.step();
        let mut out = if sub_be(&mut digits, step) {
            let mut o = Vec::with_capacity(n + 1);
            o.push(head);
            o.extend_from_slice(&digits);
            o
        } else if head == 0x00 {
            return self.midpoint(&[], Some(k));
        } else {
            // Underflow: the next head down holds the largest integers of
            // the class below.
            let h = head - 1;
            let mut o = vec![0xFFu8; 1 + int_len(h)];
            o[0] = h;
            sub_be(&mut o[1..], step - 1);
            o
        };
        if out.last() == Some(&0) {
            out.push(0x80);
        }
        out
    }

    /// Lexicographic midpoint region of `(lo, hi)`; `lo` may be empty
    /// (unbounded below). Requires `lo < hi` and inputs without trailing
    /// zeros.
    fn midpoint(&mut self, lo: &[u8], hi: Option<&[u8]>) -> Vec<u8> {
        let mut out = Vec::with_capacity(lo.len() + 2);
        let mut hi = hi;
        let mut i = 0;
        loop {
            let l = u16::from(lo.get(i).copied().unwrap_or(0));
            let h = match hi {
                Some(hb) => match hb.get(i) {
                    Some(&b) => u16::from(b),
                    // Unreachable for valid input (see above); be total anyway.
                    None => 256,
                },
                None => 256,
            };
            if h > l + 1 {
                let gap = h - l - 1; // digits strictly between l and h
                // Middle half of the gap, jittered: repeated inserts at one
                // spot cost about one byte per 8 inserts in either direction.
                let quarter = gap / 4;
                let span = gap - 2 * quarter;
                let pick = quarter + 1 + (self.next() % u64::from(span)) as u16;
                out.push((l + pick) as u8);
                return out;
            }
            out.push(l as u8);
            if h == l + 1 {
                hi = None;
            }
            i += 1;
            if i > MAX_KEY_LEN + 1 {
                // Defensive bound for malformed input (trailing zeros).
                out.push(0x80);
                return out;
            }
        }
    }
}

fn int_len(head: u8) -> usize {
    if head >= 0x80 {
        usize::from(head - 0x7F)
    } else {
        usize::from(0x80 - head)
    }
}

/// Adds `v` to a big-endian number; false on overflow.
fn add_be(digits: &mut [u8], v: u16) -> bool {
    let mut carry = u32::from(v);
    for d in digits.iter_mut().rev() {
        if carry == 0 {
            break;
        }
        let s = u32::from(*d) + carry;
        *d = (s & 0xFF) as u8;
        carry = s >> 8;
    }
    carry == 0
}

/// Subtracts `v` from a big-endian number; false on underflow.
fn sub_be(digits: &mut [u8], v: u16) -> bool {
    let mut borrow = i32::from(v);
    for d in digits.iter_mut().rev() {
        if borrow == 0 {
            break;
        }
        let s = i32::from(*d) - (borrow & 0xFF);
        borrow >>= 8;
        if s < 0 {
            *d = (s + 256) as u8;
            borrow += 1;
        } else {
            *d = s as u8;
        }
    }
    borrow == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(k: &OrderKey) {
        let b = k.as_bytes();
        assert!(
            !b.is_empty() && b.len() <= MAX_KEY_LEN && b.last() != Some(&0),
            "{k:?}"
        );
    }

    #[test]
    fn order_key_is_16_bytes() {
        assert_eq!(std::mem::size_of::<OrderKey>(), 16);
    }

    #[test]
    fn appending_and_prepending_keep_keys_short_and_ordered() {
        let mut g = KeyGen::new(1);
        let first = g
            .between(None, None)
            .unwrap_or_else(|e| unreachable!("{e}"));
        let mut last = first.clone();
        for _ in 0..100_000 {
            let k = g
                .between(Some(&last), None)
                .unwrap_or_else(|e| unreachable!("{e}"));
            check(&k);
            assert!(k > last);
            last = k;
        }
        assert!(last.as_bytes().len() <= 5, "{last:?}");
        let mut lowest = first;
        for _ in 0..100_000 {
            let k = g
                .between(None, Some(&lowest))
                .unwrap_or_else(|e| unreachable!("{e}"));
            check(&k);
            assert!(k < lowest, "{k:?} {lowest:?}");
            lowest = k;
        }
        assert!(lowest.as_bytes().len() <= 5, "{lowest:?}");
    }

    #[test]
    fn between_is_strictly_between() {
        let mut g = KeyGen::new(7);
        let a = OrderKey::new(&[0x80, 5]).unwrap_or_else(|e| unreachable!("{e}"));
        let b = OrderKey::new(&[0x80, 6]).unwrap_or_else(|e| unreachable!("{e}"));
        let (mut lo, hi) = (a.clone(), b.clone());
        // Repeatedly insert after the previous insert (typing forward).
        for _ in 0..1_000 {
            let k = g
                .between(Some(&lo), Some(&hi))
                .unwrap_or_else(|e| unreachable!("{e}"));
            check(&k);
            assert!(lo < k && k < hi, "{lo:?} {k:?} {hi:?}");
            lo = k;
        }
        assert!(lo.as_bytes().len() < 200, "{}", lo.as_bytes().len());
        // Repeatedly insert before the previous insert (typing backward).
        let mut hi = b;
        for _ in 0..1_000 {
            let k = g
                .between(Some(&a), Some(&hi))
                .unwrap_or_else(|e| unreachable!("{e}"));
            check(&k);
            assert!(a < k && k < hi);
            hi = k;
        }
        assert!(hi.as_bytes().len() < 200, "{}", hi.as_bytes().len());
        assert!(matches!(
            g.between(Some(&a), Some(&a)),
            Err(KeyError::NoRoom { .. })
        ));
    }

    #[test]
    fn jitter_separates_replicas() {
        let base = OrderKey::new(&[0x80, 5]).unwrap_or_else(|e| unreachable!("{e}"));
        let (mut g1, mut g2) = (KeyGen::new(11), KeyGen::new(12));
        let differ = (0..100)
            .filter(|_| g1.between(Some(&base), None).ok() != g2.between(Some(&base), None).ok())
            .count();
        assert!(differ > 80, "{differ}");
    }

    #[test]
    fn hex_round_trip_and_validation() {
        let k = OrderKey::new(&[0x80, 0x01, 0xff]).unwrap_or_else(|e| unreachable!("{e}"));
        assert_eq!(k.to_hex(), "8001ff");
        assert_eq!(OrderKey::from_hex("8001ff"), Ok(k));
        assert_eq!(OrderKey::from_hex("800"), Err(KeyError::BadHex));
        assert_eq!(OrderKey::from_hex("8000"), Err(KeyError::Invalid));
        assert_eq!(OrderKey::from_hex(""), Err(KeyError::Invalid));
        assert_eq!(OrderKey::from_hex("zz"), Err(KeyError::BadHex));
    }
}
