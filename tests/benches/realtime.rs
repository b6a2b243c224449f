//! Realtime latency benchmark (see the body).
fn main() {}
