//! End-to-end tests across real processes. Linked into one binary.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    missing_docs,
    unreachable_pub
)]

mod backup;
mod load;
mod proxy;
mod scenario;
mod worker;
mod workerd;
