//! Integration tests of the client: the replica on real SQLite files, and
//! sync against a real server on a real socket over real Postgres. Linked
//! into one binary.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    missing_docs,
    unreachable_pub
)]

mod calls;
mod cli;
mod conflicts;
mod harness;
mod history;
mod image;
mod inspect;
mod local;
mod outline;
mod presence;
mod revert;
mod sync;
mod transcripts;
mod undo;
mod values;
mod write_behind;
