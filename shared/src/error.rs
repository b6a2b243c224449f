//! The one error vocabulary: every code Arbor puts on a wire or hands to an application.
//!
//! Each [`ErrorCode`] carries its HTTP status, its WebSocket close code (when
//! the socket is closed for it) and its [`Disposition`]: what a client does
//! about it. The sync server, the Durable Object, the client session and the
//! browser client all name codes through this enum; `docs/PROTOCOL.md`'s
//! table of codes is checked against [`ErrorCode::ALL`] by a test.

use serde::{Deserialize, Serialize};

/// What a client does when it receives a code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Disposition {
    /// Transient: try again after a jittered, growing delay.
    Retry,
    /// Stop syncing and keep the outbox: the application must act (a new
    /// token, another space, a newer client). Retrying as is cannot help.
    Reauth,
    /// The cursor cannot be served: load a snapshot, then hello from its head.
    Resnapshot,
    /// The ops are fine, their stamps are not: re-stamp the replica's own
    /// unacknowledged ops and push them again.
    Restamp,
    /// The ops of the push will never be accepted: drop them from the outbox
    /// and report them to the application. Without a push to blame (a
    /// refusal of the connection itself) the client stops as for `Reauth`.
    Refuse,
}

impl Disposition {
    /// The stable snake_case name (`docs/PROTOCOL.md`).
    pub fn as_str(self) -> &'static str {
        match self {
            Disposition::Retry => "retry",
            Disposition::Reauth => "reauth",
            Disposition::Resnapshot => "resnapshot",
            Disposition::Restamp => "restamp",
            Disposition::Refuse => "refuse",
        }
    }
}

/// WebSocket close codes.
pub mod close {
    /// The server is going away (shutdown).
    pub const GOING_AWAY: u16 = 1001;
    /// A frame larger than the limit.
    pub const TOO_BIG: u16 = 1009;
    /// The server could not serve the connection (a catch-up failed).
    pub const INTERNAL: u16 = 1011;
    /// The token expired.
    pub const TOKEN_EXPIRED: u16 = 4001;
    /// The connection fell too far behind.
    pub const TOO_SLOW: u16 = 4002;
    /// A malformed frame or a protocol violation.
    pub const PROTOCOL: u16 = 4003;
    /// The token does not allow what the connection asked.
    pub const FORBIDDEN: u16 = 4004;
    /// The connection said nothing for too long.
    pub const TIMEOUT: u16 = 4008;
    /// The token was revoked.
    pub const TOKEN_REVOKED: u16 = 4005;
    /// The token went over its rate: the reason says when to retry.
    pub const RATE_LIMITED: u16 = 4029;
}

/// Where a code can appear.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// On the wire: HTTP error bodies and WebSocket `error` frames or closes.
    Wire,
    /// Only from a local API (the browser replica and its worker), never sent.
    Local,
}

macro_rules! codes {
    ($( $(#[$doc:meta])* $variant:ident = $name:literal, $status:literal, $close:expr, $disp:ident, $scope:ident; )*) => {
        /// A stable error code. Serialized as its snake_case name.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum ErrorCode {
            $( $(#[$doc])* $variant, )*
        }

        impl ErrorCode {
            /// Every code, in the order of `docs/PROTOCOL.md`'s table.
            pub const ALL: &'static [ErrorCode] = &[ $( ErrorCode::$variant, )* ];

            /// The stable snake_case name.
            pub fn as_str(self) -> &'static str {
                match self { $( ErrorCode::$variant => $name, )* }
            }

            /// The HTTP status of a response carrying it (local codes: the
            /// status they would have, for completeness).
            pub fn http_status(self) -> u16 {
                match self { $( ErrorCode::$variant => $status, )* }
            }

            /// The WebSocket close code that goes with it, if the server
            /// closes the socket for it.
            pub fn close_code(self) -> Option<u16> {
                match self { $( ErrorCode::$variant => $close, )* }
            }

            /// What a client does about it.
            pub fn disposition(self) -> Disposition {
                match self { $( ErrorCode::$variant => Disposition::$disp, )* }
            }

            /// Where it can appear.
            pub fn scope(self) -> Scope {
                match self { $( ErrorCode::$variant => Scope::$scope, )* }
            }

            /// The code named `name` ([`ErrorCode::Unknown`] for a name this
            /// build does not know, e.g. from a newer peer).
            pub fn parse(name: &str) -> ErrorCode {
                match name {
                    $( $name => ErrorCode::$variant, )*
                    _ => ErrorCode::Unknown,
                }
            }
        }
    };
}

codes! {
    /// The request's JSON, query or path is not what the route takes.
    BadRequest = "bad_request", 400, None, Refuse, Wire;
    /// An op breaks a limit (checked before the database).
    BadOp = "bad_op", 400, None, Refuse, Wire;
    /// An op names ROOT or TRASH as its node.
    ReservedNode = "reserved_node", 400, None, Refuse, Wire;
    /// An order key is empty, longer than 256 bytes or ends in 0x00.
    BadKey = "bad_key", 400, None, Refuse, Wire;
    /// A field name is empty or longer than 64 bytes.
    BadField = "bad_field", 400, None, Refuse, Wire;
    /// A value is longer than 65,536 bytes.
    ValueTooLong = "value_too_long", 400, None, Refuse, Wire;
    /// The batch's shape is wrong (arrays of different lengths, two ops
    /// with one stamp and different contents, a field on a move).
    BadBatch = "bad_batch", 400, None, Refuse, Wire;
    /// A snapshot file's framing, checksum, counts or rows are wrong.
    BadSnapshot = "bad_snapshot", 400, None, Refuse, Wire;
    /// An import's rows are inconsistent (a node twice, a cycle).
    BadImport = "bad_import", 400, None, Refuse, Wire;
    /// No bearer token.
    MissingToken = "missing_token", 401, None, Reauth, Wire;
    /// The token is malformed, badly signed or uses another algorithm.
    BadToken = "bad_token", 401, None, Reauth, Wire;
    /// The token expired (a live socket is closed 4001).
    TokenExpired = "token_expired", 401, Some(close::TOKEN_EXPIRED), Reauth, Wire;
    /// The token is not valid yet (`nbf` or `iat` ahead of the server's
    /// clock beyond the leeway): it will be, so retry later.
    TokenNotYetValid = "token_not_yet_valid", 401, None, Retry, Wire;
    /// The token is on the server's revocation list (by its `jti`, or its
    /// subject's): a live socket holding it is closed 4005.
    TokenRevoked = "token_revoked", 401, Some(close::TOKEN_REVOKED), Reauth, Wire;
    /// The token is for another thoughtspace.
    WrongSpace = "wrong_space", 403, None, Reauth, Wire;
    /// The token's role does not allow this.
    Forbidden = "forbidden", 403, None, Reauth, Wire;
    /// The ops are by another replica than the token's `rid` or the
    /// connection's hello (a hello refused so is closed 4004).
    WrongReplica = "wrong_replica", 403, Some(close::FORBIDDEN), Refuse, Wire;
    /// No such thoughtspace.
    UnknownSpace = "unknown_space", 404, None, Reauth, Wire;
    /// No such route.
    NotFound = "not_found", 404, None, Refuse, Wire;
    /// The method is not allowed on this route.
    MethodNotAllowed = "method_not_allowed", 405, None, Refuse, Wire;
    /// An op's stamp is at or below the log horizon.
    Stale = "stale", 409, None, Restamp, Wire;
    /// An op's stamp is already stored with other contents: the client
    /// gives its own op a new stamp (and the ops after it, keeping their
    /// order) and pushes again.
    StampConflict = "stamp_conflict", 409, None, Restamp, Wire;
    /// The space to create exists already.
    SpaceExists = "space_exists", 409, None, Refuse, Wire;
    /// A body is larger than the route's limit.
    TooLarge = "too_large", 413, None, Refuse, Wire;
    /// More ops in one batch than allowed (over the socket the frame is
    /// refused before its batch is read, and the socket is closed 4003).
    BatchTooLarge = "batch_too_large", 413, Some(close::PROTOCOL), Refuse, Wire;
    /// A frame larger than 1 MiB (the socket is closed 1009).
    FrameTooLarge = "frame_too_large", 413, Some(close::TOO_BIG), Refuse, Wire;
    /// A space is over one of its quotas (nodes, log rows, bytes: a push
    /// that would grow it), or a tenant over its quota of spaces (create,
    /// fork, import). It stays refused until an operator raises the quota.
    QuotaExceeded = "quota_exceeded", 403, None, Refuse, Wire;
    /// The token is limited to a subtree (its `root` claim) and the request
    /// reaches outside it: a node outside the subtree (or not stored), an op
    /// that would put a node outside it or restore one there, a route that
    /// serves the whole space, or a `hello` naming another root; also a
    /// `hello` with a root where the endpoint has no subtree feed.
    OutOfScope = "out_of_scope", 403, None, Refuse, Wire;
    /// The request's `Host` is not one the server answers to (the dev
    /// server answers loopback names only, against DNS rebinding).
    BadHost = "bad_host", 421, None, Refuse, Wire;
    /// A WebSocket route asked without an upgrade.
    UpgradeRequired = "upgrade_required", 426, None, Refuse, Wire;
    /// An op names a node (or parent) that is not in the tree.
    UnknownNode = "unknown_node", 422, None, Refuse, Wire;
    /// An op's stamp is ahead of the server's clock beyond the drift limit.
    ClockAhead = "clock_ahead", 422, None, Retry, Wire;
    /// A frame is not a known message (the socket is closed 4003).
    Malformed = "malformed", 400, Some(close::PROTOCOL), Retry, Wire;
    /// A `hello` with a protocol version the server does not speak.
    UnsupportedVersion = "unsupported_version", 400, Some(close::PROTOCOL), Reauth, Wire;
    /// A frame out of turn (a push before hello, hello twice).
    Protocol = "protocol", 400, Some(close::PROTOCOL), Retry, Wire;
    /// More pushes in flight than the server allows: wait for acks.
    TooManyPushes = "too_many_pushes", 429, None, Retry, Wire;
    /// A push reused the id of a batch still in flight.
    DuplicateBatch = "duplicate_batch", 409, None, Retry, Wire;
    /// This token went over its rate (pushes or requests) or holds more than
    /// its share (streams, sockets): wait `Retry-After` (HTTP) or
    /// `retry_after_ms` (the `error` frame; the socket is closed 4029).
    RateLimited = "rate_limited", 429, Some(close::RATE_LIMITED), Retry, Wire;
    /// Every slot of the server's budget for long streams (snapshots,
    /// exports, imports) is in use: retry after `Retry-After`.
    Overloaded = "overloaded", 503, None, Retry, Wire;
    /// The client said nothing for too long: no `hello` in time, or an idle
    /// socket (closed 4008), or request headers that did not come.
    Timeout = "timeout", 408, Some(close::TIMEOUT), Retry, Wire;
    /// The connection fell too far behind the live feed (closed 4002).
    TooSlow = "too_slow", 503, Some(close::TOO_SLOW), Retry, Wire;
    /// The database (or the sync server, seen from the Worker) cannot be
    /// reached; nothing was done.
    Unavailable = "unavailable", 503, Some(close::INTERNAL), Retry, Wire;
    /// The server is shutting down (sockets are closed 1001).
    Draining = "draining", 503, Some(close::GOING_AWAY), Retry, Wire;
    /// A bug or a misconfiguration on the server; details are in its log.
    Internal = "internal", 500, None, Retry, Wire;
    /// A code this build does not know (sent by a newer peer).
    Unknown = "unknown", 500, None, Retry, Wire;
    /// Local API: the id is not a node id.
    BadId = "bad_id", 400, None, Refuse, Local;
    /// Local API: a position is not `first`, `last`, `{before}` or `{after}`.
    BadPosition = "bad_position", 400, None, Refuse, Local;
    /// Local API: fields are not an object of strings.
    BadFields = "bad_fields", 400, None, Refuse, Local;
    /// Local API: the sibling named by a position has another parent.
    NotASibling = "not_a_sibling", 400, None, Refuse, Local;
    /// Local API: the move would put a node under itself.
    Cycle = "cycle", 400, None, Refuse, Local;
    /// Local API: a snapshot could not be loaded (nothing changed).
    Snapshot = "snapshot", 400, None, Retry, Local;
    /// Local API: durable storage (OPFS) could not be opened.
    Storage = "storage", 503, None, Retry, Local;
    /// Local API: the replica is busy (a snapshot is loading).
    Busy = "busy", 503, None, Retry, Local;
    /// Local API: the local store failed.
    Replica = "replica", 500, None, Refuse, Local;
    /// Local API: the browser worker has no such method.
    BadMethod = "bad_method", 400, None, Refuse, Local;
    /// Local API: the browser worker failed outside the replica.
    Worker = "worker", 500, None, Refuse, Local;
    /// Local API: a presence state over 2,048 bytes of JSON.
    PresenceTooLarge = "presence_too_large", 413, None, Refuse, Local;
    /// Local API: a presence state that is not a presence object.
    BadPresence = "bad_presence", 400, None, Refuse, Local;
}

impl ErrorCode {
    /// The code a close code stands for when a socket closes without an
    /// `error` frame (the first code of the table with that close code);
    /// `None` for codes the table does not use (1000, 1006, ...).
    pub fn from_close(code: u16) -> Option<ErrorCode> {
        ErrorCode::ALL
            .iter()
            .copied()
            .find(|c| c.scope() == Scope::Wire && c.close_code() == Some(code))
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for ErrorCode {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for ErrorCode {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<ErrorCode, D::Error> {
        let name = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Ok(ErrorCode::parse(&name))
    }
}

/// The JSON error body of every HTTP refusal: `{"error": {"code", "message"}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// The refusal.
    pub error: ErrorDetail,
}

/// The inside of [`ErrorBody`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorDetail {
    /// The code.
    pub code: ErrorCode,
    /// Human-readable detail; never carries database or internal text.
    pub message: String,
}

impl ErrorBody {
    /// A body for `code` and `message`.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> ErrorBody {
        ErrorBody {
            error: ErrorDetail {
                code,
                message: message.into(),
            },
        }
    }
}
