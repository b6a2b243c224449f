//! What a test or benchmark reads from its environment: the wall clock, a replayable seed (and the generator it drives), settings from variables.

/// Milliseconds since the epoch (stamps must not be ahead of Postgres'
/// clock).
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Seconds since the epoch (token times).
pub fn now_s() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The seed in `ARBOR_SEED`, or else one from the clock.
pub fn seed_from_env() -> u64 {
    parsed("ARBOR_SEED").unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
    })
}

/// [`seed_from_env`], printed with `name` so a failure can be replayed.
pub fn seed(name: &str) -> u64 {
    let seed = seed_from_env();
    eprintln!("{name}: seed {seed} (replay with ARBOR_SEED={seed})");
    seed
}

/// The variable `name` parsed as a `T`; `None` when unset or unparsable.
pub fn parsed<T: std::str::FromStr>(name: &str) -> Option<T> {
    std::env::var(name).ok().and_then(|s| s.parse().ok())
}

/// True when the variable `name` is `1`.
pub fn flag(name: &str) -> bool {
    std::env::var(name).is_ok_and(|v| v == "1")
}

/// A xorshift64 generator for seeded workloads (not for anything secret):
/// the same seed gives the same sequence. The state must not be 0 (`Rng(seed | 1)`).
#[derive(Debug, Clone)]
pub struct Rng(pub u64);

impl Rng {
    /// The next 64 bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// A value in `0..n` (`n` 0 counts as 1).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
}
