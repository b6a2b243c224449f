//! The session's own presence state: sent when it changes (at most ten times a second), again every ten seconds while set (the room forgets a state after 30 s), and again after each reconnect.

use arbor_shared::protocol::{ClientMsg, MAX_PRESENCE_BYTES, Peer, PresenceState};

/// Least time between two `presence` frames, ms (the room relays at most
/// 20 a second per connection and holds the rest until its next tick).
pub const PRESENCE_MIN_INTERVAL_MS: u64 = 100;

/// A state still set is sent again after this long, ms (the room's time to
/// live is 30 s).
pub const PRESENCE_REFRESH_MS: u64 = 10_000;

/// A presence state larger than the protocol allows.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a presence state is at most {MAX_PRESENCE_BYTES} bytes of JSON (this one is {0})")]
pub struct PresenceTooLarge(pub usize);

/// What the application wants the others to see, and when it was sent.
#[derive(Debug, Default)]
pub(super) struct OwnPresence {
    state: Option<PresenceState>,
    /// `state` has not been sent on this connection since it changed.
    dirty: bool,
    /// When the last `presence` frame went out on this connection, ms.
    sent_at: Option<u64>,
}

impl OwnPresence {
    /// The application's new state (checked against the size limit).
    pub(super) fn set(&mut self, state: Option<PresenceState>) -> Result<(), PresenceTooLarge> {
        if let Some(s) = &state {
            let len = s.encoded_len();
            if len > MAX_PRESENCE_BYTES {
                return Err(PresenceTooLarge(len));
            }
        }
        if state != self.state {
            self.state = state;
            self.dirty = true;
        }
        Ok(())
    }

    /// A new connection was welcomed: a state set is sent on it.
    pub(super) fn welcomed(&mut self) {
        self.sent_at = None;
        self.dirty = self.state.is_some();
    }

    /// When a frame is due next, ms.
    pub(super) fn due(&self) -> Option<u64> {
        match (self.dirty, self.sent_at, &self.state) {
            (true, None, _) => Some(0),
            (true, Some(at), _) => Some(at + PRESENCE_MIN_INTERVAL_MS),
            (false, Some(at), Some(_)) => Some(at + PRESENCE_REFRESH_MS),
            _ => None,
        }
    }

    /// The frame to send at `now`, if one is due.
    pub(super) fn take(&mut self, now: u64) -> Option<ClientMsg> {
        if self.due().is_none_or(|at| now < at) {
            return None;
        }
        self.dirty = false;
        self.sent_at = Some(now);
        Some(ClientMsg::Presence {
            state: self.state.clone(),
        })
    }
}

/// A `presence` frame applied to the peers list: the connection's state
/// is replaced (a connection not listed yet is added: in a large room the
/// peers list comes at the server's next tick).
pub(super) fn apply_peer_presence(
    peers: &mut Vec<Peer>,
    conn: u64,
    sub: String,
    state: Option<PresenceState>,
) {
    match peers.iter_mut().find(|p| p.conn == conn) {
        Some(p) => p.state = state,
        None if state.is_some() => peers.push(Peer {
            conn,
            sub,
            replica: None,
            state,
        }),
        None => {}
    }
}
