//! The replica's `meta` table (its id, clock, cursor, space, horizon, settings) and the wall clock and randomness it draws on.

use rusqlite::{Connection, OptionalExtension as _, params};

/// Meta keys.
pub(crate) mod key {
    pub(crate) const REPLICA: &str = "replica";
    pub(crate) const CLOCK: &str = "clock";
    pub(crate) const CURSOR: &str = "cursor";
    pub(crate) const SPACE: &str = "space";
    pub(crate) const HORIZON_HLC: &str = "horizon_hlc";
    pub(crate) const HORIZON_REPLICA: &str = "horizon_replica";
    pub(crate) const ROOT: &str = "root";
    pub(crate) const ROOT_IN_TRASH: &str = "root_in_trash";
    pub(crate) const RESTAMP: &str = "restamp";
    pub(crate) const RESTAMP_FROM_HLC: &str = "restamp_from_hlc";
    pub(crate) const RESTAMP_FROM_REPLICA: &str = "restamp_from_replica";
}

/// Wall-clock milliseconds for the HLC.
#[cfg(not(all(target_arch = "wasm32", target_os = "unknown")))]
pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Wall-clock milliseconds for the HLC (`SystemTime` panics in browsers).
#[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
pub(crate) fn now_ms() -> u64 {
    js_sys::Date::now() as u64
}

pub(crate) fn random_u64() -> u64 {
    let mut b = [0u8; 8];
    if getrandom::fill(&mut b).is_err() {
        // No OS generator (should not happen on supported targets): the
        // clock, spread by a multiply, still differs between replicas.
        return now_ms().wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    }
    u64::from_le_bytes(b)
}

pub(crate) fn random_u128() -> u128 {
    (u128::from(random_u64()) << 64) | u128::from(random_u64())
}

pub(crate) fn meta_get(
    conn: &Connection,
    k: &str,
) -> rusqlite::Result<Option<rusqlite::types::Value>> {
    conn.prepare_cached("SELECT value FROM meta WHERE key = ?1")?
        .query_row([k], |r| r.get(0))
        .optional()
}

pub(crate) fn meta_i64(conn: &Connection, k: &str) -> rusqlite::Result<Option<i64>> {
    Ok(match meta_get(conn, k)? {
        Some(rusqlite::types::Value::Integer(i)) => Some(i),
        _ => None,
    })
}

pub(crate) fn meta_text(conn: &Connection, k: &str) -> rusqlite::Result<Option<String>> {
    Ok(match meta_get(conn, k)? {
        Some(rusqlite::types::Value::Text(t)) => Some(t),
        _ => None,
    })
}

pub(crate) fn meta_set(
    conn: &Connection,
    k: &str,
    v: impl rusqlite::ToSql,
) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT INTO meta (key, value) VALUES (?1, ?2)
         ON CONFLICT (key) DO UPDATE SET value = excluded.value",
    )?
    .execute(params![k, v])?;
    Ok(())
}

pub(crate) fn meta_delete(conn: &Connection, k: &str) -> rusqlite::Result<()> {
    conn.prepare_cached("DELETE FROM meta WHERE key = ?1")?
        .execute([k])?;
    Ok(())
}
