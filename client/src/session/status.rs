//! What a sync session is doing, as an application sees it ([`SyncStatus`]).

use arbor_shared::protocol::Peer;

use crate::snapshot::Progress;

/// What the sync session is doing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SyncState {
    /// Not connected; retrying after a delay (with the last error).
    Offline {
        /// Why the last attempt ended.
        error: Option<String>,
    },
    /// Opening the connection.
    Connecting,
    /// Loading a snapshot.
    ColdStart(Progress),
    /// Connected, applying committed ops up to the head seen at `hello`.
    CatchingUp,
    /// Connected, caught up, local ops waiting for the server.
    Pushing,
    /// Connected, caught up, outbox empty.
    Live,
    /// Stopped by a refusal that retrying cannot mend (a bad or expired
    /// token, a read-only token pushing, an unknown space, a client the
    /// server does not speak to): the application must act. The outbox is
    /// kept.
    Refused {
        /// The code and message.
        error: String,
    },
    /// Stopped (shutdown, or `sync_once` finished).
    Stopped,
}

/// The observable sync status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncStatus {
    /// The state.
    pub state: SyncState,
    /// The replica's cursor.
    pub cursor: Option<u64>,
    /// Local ops not yet committed.
    pub outbox: u64,
    /// Who else is connected (this connection left out), with their
    /// presence states.
    pub peers: Vec<Peer>,
    /// Local ops the server refused for good: moved from the outbox to the
    /// replica's rejected list (`Replica::rejected`), until cleared.
    pub rejected: u64,
}

impl Default for SyncStatus {
    fn default() -> Self {
        SyncStatus {
            state: SyncState::Offline { error: None },
            cursor: None,
            outbox: 0,
            peers: Vec::new(),
            rejected: 0,
        }
    }
}

impl SyncState {
    /// The state's stable snake_case name (the browser's `Status.state`).
    pub fn name(&self) -> &'static str {
        match self {
            SyncState::Offline { .. } => "offline",
            SyncState::Connecting => "connecting",
            SyncState::ColdStart(_) => "cold_start",
            SyncState::CatchingUp => "catching_up",
            SyncState::Pushing => "pushing",
            SyncState::Live => "live",
            SyncState::Refused { .. } => "refused",
            SyncState::Stopped => "stopped",
        }
    }

    /// The error it carries, if any.
    pub fn error(&self) -> Option<&str> {
        match self {
            SyncState::Offline { error } => error.as_deref(),
            SyncState::Refused { error } => Some(error),
            _ => None,
        }
    }
}
