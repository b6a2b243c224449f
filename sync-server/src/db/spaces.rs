//! Spaces: create, look up, fork, raise the horizon.

use arbor_shared::Stamp;

use super::*;

impl Db {
    /// Creates the thoughtspace if it does not exist; returns its row.
    pub async fn create_space(&self, name: &str) -> Result<SpaceInfo, DbError> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached("INSERT INTO spaces (name) VALUES ($1) ON CONFLICT (name) DO NOTHING")
            .await?;
        client.execute(&stmt, &[&name]).await.map_err(|e| {
            if e.code() == Some(&tokio_postgres::error::SqlState::CHECK_VIOLATION) {
                DbError::rejected(
                    RejectCode::UnknownSpace,
                    "a space name is 1..64 of [A-Za-z0-9_.-]",
                )
            } else {
                map_pg(e)
            }
        })?;
        // Back to the pool first: `space` takes a connection of its own (a
        // pool of one would wait for itself).
        drop(client);
        self.space(name).await?.ok_or_else(|| {
            DbError::rejected(RejectCode::UnknownSpace, format!("space {name} vanished"))
        })
    }

    /// [`Db::create_space`] for `owner`: a space that does not exist yet
    /// counts against its tenant's quota of spaces and records the tenant.
    pub async fn create_space_owned(
        &self,
        name: &str,
        owner: &Owner<'_>,
    ) -> Result<SpaceInfo, DbError> {
        if let Some(info) = self.space(name).await? {
            return Ok(info);
        }
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        claim_space_slot(&tx, owner).await?;
        tx.execute(
            "INSERT INTO spaces (name, tenant) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING",
            &[&name, &owner.tenant],
        )
        .await
        .map_err(map_pg)?;
        tx.commit().await?;
        drop(client);
        self.space_id(name).await
    }

    /// The thoughtspace's row, if it exists.
    pub async fn space(&self, name: &str) -> Result<Option<SpaceInfo>, DbError> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(
                "SELECT s.id, s.name, s.head_seq, s.horizon_hlc, s.horizon_replica,
                        (SELECT min(o.seq) FROM ops o WHERE o.space = s.id)
                 FROM spaces s WHERE s.name = $1",
            )
            .await?;
        let Some(row) = client.query_opt(&stmt, &[&name]).await? else {
            return Ok(None);
        };
        let horizon = match (
            row.try_get::<_, Option<i64>>(3)?,
            row.try_get::<_, Option<i64>>(4)?,
        ) {
            (Some(h), Some(r)) => Some(stamp_from(h, r)?),
            _ => None,
        };
        let head_seq = u64_of(row.try_get(2)?, "head_seq")?;
        // A horizon means the log does not start from an empty space: the
        // space was imported (its state came from a file), or its log was
        // truncated below the horizon.
        let min_cursor = match (horizon, row.try_get::<_, Option<i64>>(5)?) {
            (None, _) => None,
            (Some(_), Some(first)) => Some(u64_of(first, "seq")?.saturating_sub(1)),
            (Some(_), None) => Some(head_seq),
        };
        Ok(Some(SpaceInfo {
            id: row.try_get(0)?,
            name: row.try_get(1)?,
            head_seq,
            horizon,
            min_cursor,
        }))
    }

    /// The head of `space` and the lowest seq a replica image must hold to
    /// be served: catch-up must cover everything after it (for a subtree
    /// image, the subtree feed too, from `changes_from`).
    pub async fn image_window(&self, name: &str, subtree: bool) -> Result<(u64, u64), DbError> {
        let info = self.space_id(name).await?;
        let mut floor = info.min_cursor.unwrap_or(0);
        if subtree {
            let client = self.client().await?;
            let row = client
                .query_one("SELECT changes_from FROM spaces WHERE id = $1", &[&info.id])
                .await?;
            floor = floor.max(u64_of(row.try_get(0)?, "changes_from")?);
        }
        Ok((info.head_seq, floor))
    }

    pub(super) async fn space_id(&self, name: &str) -> Result<SpaceInfo, DbError> {
        self.space(name).await?.ok_or_else(|| {
            DbError::rejected(RejectCode::UnknownSpace, format!("unknown_space: {name}"))
        })
    }

    /// Copies `src` into a new space `dst` (tree, registers, the op log with
    /// its seqs, restores, head and horizon) in one transaction.
    pub async fn fork(&self, src: &str, dst: &str) -> Result<SpaceInfo, DbError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let stmt = tx
            .prepare_cached("SELECT fork_space_with_owners($1, $2)")
            .await?;
        tx.query_one(&stmt, &[&src, &dst]).await.map_err(|e| {
            if e.code() == Some(&tokio_postgres::error::SqlState::CHECK_VIOLATION) {
                DbError::rejected(
                    RejectCode::BadBatch,
                    "a space name is 1..64 of [A-Za-z0-9_.-]",
                )
            } else {
                map_pg(e)
            }
        })?;
        // The fork's place changes before its head are not recorded
        // (migration 0013): a subtree cursor below it loads a snapshot.
        tx.execute(
            "UPDATE spaces SET changes_from = head_seq WHERE name = $1",
            &[&dst],
        )
        .await?;
        tx.commit().await?;
        self.space_id(dst).await
    }

    /// [`Db::fork`] for `owner`: the new space counts against its tenant's
    /// quota of spaces and records the tenant.
    pub async fn fork_owned(
        &self,
        src: &str,
        dst: &str,
        owner: &Owner<'_>,
    ) -> Result<SpaceInfo, DbError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        claim_space_slot(&tx, owner).await?;
        tx.query_one("SELECT fork_space_with_owners($1, $2)", &[&src, &dst])
            .await
            .map_err(map_pg)?;
        set_tenant(&tx, dst, owner).await?;
        tx.commit().await?;
        drop(client);
        self.space_id(dst).await
    }

    /// Raises every space's horizon that is below `cutoff` (or unset) to
    /// it, each under its space's ingest lock; returns how many were
    /// raised. The horizon policy's step.
    pub async fn raise_horizons(&self, cutoff: Stamp) -> Result<u64, DbError> {
        let hlc = i64::try_from(cutoff.hlc.0)
            .map_err(|_| DbError::rejected(RejectCode::BadBatch, "horizon hlc above 2^63"))?;
        let rep = replica_to_sql(cutoff.replica.0);
        let names: Vec<String> = {
            let client = self.client().await?;
            client
                .query(
                    "SELECT name FROM spaces
                     WHERE horizon_hlc IS NULL OR (horizon_hlc, horizon_replica) < ($1, $2)",
                    &[&hlc, &rep],
                )
                .await?
                .iter()
                .map(|r| r.try_get(0))
                .collect::<Result<_, _>>()?
        };
        let mut raised = 0;
        for name in names {
            match self.raise_horizon(&name, cutoff).await {
                Ok(()) => raised += 1,
                // Deleted meanwhile.
                Err(e) if e.reject_code() == Some(RejectCode::UnknownSpace) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(raised)
    }

    /// Raises the space's horizon (never lowers it): ops at or below it are
    /// refused as stale from now on.
    pub async fn raise_horizon(&self, space: &str, horizon: Stamp) -> Result<(), DbError> {
        let info = self.space_id(space).await?;
        let hlc = i64::try_from(horizon.hlc.0)
            .map_err(|_| DbError::rejected(RejectCode::BadBatch, "horizon hlc above 2^63"))?;
        let rep = replica_to_sql(horizon.replica.0);
        let mut client = self.client().await?;
        // Under the space's ingest lock: an apply that read the old horizon
        // commits before the new one is visible, never after.
        let tx = client.transaction().await?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&info.id])
            .await?;
        tx.execute(
            "UPDATE spaces SET horizon_hlc = $2, horizon_replica = $3
             WHERE id = $1 AND (horizon_hlc IS NULL OR (horizon_hlc, horizon_replica) < ($2, $3))",
            &[&info.id, &hlc, &rep],
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }
}
