//! Integration tests of the database layer against a real Postgres cluster
//! the harness starts itself (one per test binary, a fresh database per
//! test). Linked into one binary.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    missing_docs,
    unreachable_pub
)]

mod basic;
mod concurrency;
mod dev;
mod differential;
mod fuzz;
mod group;
mod harness;
mod history;
mod horizon;
mod http;
mod import;
mod keys;
mod limits;
mod memory;
mod observability;
mod owners;
mod past_move;
mod quotas;
mod restore;
mod scope;
mod snapshot;
mod subtree_changes;
mod tls;
mod validation;
mod values;
mod ws;
