//! Presence: each connection's ephemeral state, relayed at once to the connections that see it, rate-limited per connection, expired after a time to live.

use super::{Action, ConnId, Phase, Room};
use crate::error::ErrorCode;
use crate::protocol::{MAX_PRESENCE_BYTES, PresenceState, ServerMsg};
use crate::rate::{Rate, TokenBucket};

/// A presence state not set again within this long is cleared (at the
/// first tick after: natively every second, in the Durable Object every
/// 15 s).
pub const PRESENCE_TTL_MS: u64 = 30_000;

/// Presence changes a connection may have relayed a second (bursts of as
/// many); a faster connection's latest state waits for the next tick.
pub const PRESENCE_PER_S: f64 = 20.0;

pub(super) fn presence_rate() -> Rate {
    Rate::new(PRESENCE_PER_S, 1.0)
}

/// A connection's presence.
#[derive(Debug, Clone)]
pub(super) struct ConnPresence {
    /// Its state now (`None`: none).
    pub(super) state: Option<PresenceState>,
    /// When it was last set, ms (the room's clock).
    pub(super) set_ms: u64,
    /// Its relay budget.
    pub(super) bucket: TokenBucket,
    /// `state` changed and has not been relayed (over the rate): it goes
    /// out at the next tick.
    pub(super) held: bool,
}

impl ConnPresence {
    pub(super) fn new(now_ms: u64) -> ConnPresence {
        ConnPresence {
            state: None,
            set_ms: now_ms,
            bucket: TokenBucket::full(&presence_rate(), secs(now_ms)),
            held: false,
        }
    }
}

fn secs(ms: u64) -> f64 {
    ms as f64 / 1000.0
}

impl Room {
    /// The host's clock, in ms since any fixed point: call it before each
    /// event (presence rates and time to live read it; ticks move it too).
    pub fn set_clock(&mut self, now_ms: u64) {
        self.now_ms = self.now_ms.max(now_ms);
    }

    /// The welcomed connections other than `conn` that see it: those whose
    /// token is not limited to a subtree, and those limited to the subtree
    /// `conn` follows.
    pub(super) fn seen_by(&self, conn: ConnId) -> Vec<ConnId> {
        let Some(root) = self.conns.get(&conn).map(|c| c.root) else {
            return Vec::new();
        };
        self.conns
            .iter()
            .filter(|(id, c)| **id != conn && c.phase != Phase::AwaitingHello)
            .filter(|(_, c)| c.claims.root.is_none() || c.claims.root == root)
            .map(|(id, _)| *id)
            .collect()
    }

    /// A `presence` frame from `conn`.
    pub(super) fn on_presence(
        &mut self,
        conn: ConnId,
        state: Option<PresenceState>,
    ) -> Vec<Action> {
        let now = self.now_ms;
        let Some(c) = self.conns.get_mut(&conn) else {
            return Vec::new();
        };
        if c.phase == Phase::AwaitingHello {
            return Self::refuse_and_close(conn, ErrorCode::Protocol, "say hello first");
        }
        if let Some(s) = &state
            && s.encoded_len() > MAX_PRESENCE_BYTES
        {
            return Self::refuse_and_close(
                conn,
                ErrorCode::Malformed,
                format!("a presence state is at most {MAX_PRESENCE_BYTES} bytes"),
            );
        }
        let p = &mut c.presence;
        p.state = state;
        p.set_ms = now;
        if p.bucket.take(&presence_rate(), secs(now)).is_err() {
            p.held = true;
            return Vec::new();
        }
        p.held = false;
        self.relay_presence(conn)
    }

    /// `conn`'s state now, to everyone who sees it.
    pub(super) fn relay_presence(&self, conn: ConnId) -> Vec<Action> {
        let Some(c) = self.conns.get(&conn) else {
            return Vec::new();
        };
        let to = self.seen_by(conn);
        if to.is_empty() {
            return Vec::new();
        }
        vec![Action::Broadcast {
            conns: to,
            msg: ServerMsg::Presence {
                conn,
                sub: c.claims.sub.clone(),
                state: c.presence.state.clone(),
            },
        }]
    }

    /// At a tick: held states go out, states past their time to live are
    /// cleared.
    pub(super) fn presence_tick(&mut self) -> Vec<Action> {
        let now = self.now_ms;
        let mut due = Vec::new();
        for (id, c) in self.conns.iter_mut() {
            let p = &mut c.presence;
            if p.state.is_some() && now.saturating_sub(p.set_ms) >= PRESENCE_TTL_MS {
                p.state = None;
                p.held = false;
                due.push(*id);
            } else if std::mem::take(&mut p.held) {
                due.push(*id);
            }
        }
        due.into_iter()
            .flat_map(|id| self.relay_presence(id))
            .collect()
    }
}
