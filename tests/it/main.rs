//! End-to-end tests across real processes. Linked into one binary.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    missing_docs,
    unreachable_pub
)]

mod backup;
mod balanced;
mod load;
mod pitr;
mod proxy;
mod replicas;
mod s3_backup;
mod scenario;
mod standby;
mod subtree;
mod worker;
mod workerd;
