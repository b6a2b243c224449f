//! Latency figures of benchmarks: the median, a percentile, milliseconds.

use std::time::Duration;

/// The median (the upper one of an even count). Panics on no samples.
pub fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// The `p` quantile (0 to 1) of `v`, which it sorts: the sample at
/// `len * p`, rounded down, at most the last. Panics on no samples.
pub fn percentile(v: &mut [Duration], p: f64) -> Duration {
    v.sort();
    v[((v.len() as f64 * p) as usize).min(v.len() - 1)]
}

/// `d` in milliseconds.
pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}
