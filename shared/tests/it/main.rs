//! Integration tests of the `arbor-shared` core, linked into one binary.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    missing_docs,
    unreachable_pub
)]

mod auth;
mod codes;
mod differential;
mod engine;
mod fuzz;
mod keys;
mod props;
mod rate;
mod regressions;
mod room;
mod scaling;
mod snapshot;
mod subtree;
mod util;
