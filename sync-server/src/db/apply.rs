//! Batches through the `apply_ops` PL/pgSQL function: one batch, or a group of pushes in one transaction with a savepoint each.

use arbor_shared::http::GroupPush;
use arbor_shared::{NodeId, Op, ReplicaId};

use super::*;

/// Who pushes a batch: what `apply_ops_by` (migration 0010) and
/// `apply_ops_scoped` (0012) check it against.
#[derive(Debug, Clone, Copy, Default)]
pub struct Pusher<'a> {
    /// The replica every op must be by (`None`: any).
    pub author: Option<ReplicaId>,
    /// The token subject whose replica ids the batch claims (`None`: no
    /// owner check, the server's own callers).
    pub sub: Option<&'a str>,
    /// The subtree the token is limited to (`None`: the whole space).
    pub root: Option<NodeId>,
}

impl<'a> Pusher<'a> {
    /// The pusher of a group push.
    pub fn of(push: &'a GroupPush) -> Pusher<'a> {
        Pusher {
            author: push.author,
            sub: push.sub.as_deref(),
            root: push.root,
        }
    }
}

/// One `apply_ops_tracked` call on `client` (a connection, transaction or
/// savepoint): `apply_ops`, with the batch's replica ids claimed for the
/// pusher's `sub` when given (migration 0010), through `apply_ops_scoped`
/// when the pusher is limited to a subtree (0012), its place changes
/// recorded for the subtree feed (0013).
pub(super) async fn apply_on<C: deadpool_postgres::GenericClient>(
    client: &C,
    space: &str,
    pusher: Pusher<'_>,
    ops: &[Op],
) -> Result<Vec<Committed>, DbError> {
    let a = OpArrays::encode(ops)?;
    let author = pusher.author.map(|r| replica_to_sql(r.0));
    let sub = pusher.sub;
    let root = pusher.root.map(uuid);
    let stmt = client
        .prepare_cached(
            "SELECT seq, hlc, replica, kind, node, parent, key, field, value, known_seq, origin,
                    author
             FROM apply_ops_tracked($13, $12, $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
        )
        .await?;
    let rows = client
        .query(
            &stmt,
            &[
                &space,
                &author,
                &a.hlc,
                &a.replica,
                &a.kind,
                &a.node,
                &a.parent,
                &a.key,
                &a.field,
                &a.value,
                &a.known_seq,
                &sub,
                &root,
            ],
        )
        .await
        .map_err(map_pg)?;
    rows.iter().map(committed_from_row).collect()
}

/// Largest batch `apply_ops` takes (its own limit; checked here first).
pub const MAX_BATCH: usize = 10_000;

impl Db {
    /// Applies a batch through `apply_ops` in one transaction: validation,
    /// idempotency, the CRDT apply and the restore rule. `author`, when
    /// given, must be every op's replica. Returns every committed op of the
    /// answer in seq order: the batch's new ops, its already-stored ops with
    /// their old seqs, and restores the batch caused. No replica owner is
    /// checked or claimed (the server's own callers); clients' pushes go
    /// through [`Db::apply_by`].
    pub async fn apply(
        &self,
        space: &str,
        author: Option<ReplicaId>,
        ops: &[Op],
    ) -> Result<Vec<Committed>, DbError> {
        self.apply_as(
            space,
            Pusher {
                author,
                ..Pusher::default()
            },
            ops,
        )
        .await
    }

    /// [`Db::apply`] for the token subject `sub`: the batch's replica ids
    /// that nobody owns in the space become `sub`'s, and a batch stamped
    /// with a replica id another subject owns is refused `wrong_replica`
    /// (migration 0010). Each answered op carries its owner.
    pub async fn apply_by(
        &self,
        space: &str,
        author: Option<ReplicaId>,
        sub: Option<&str>,
        ops: &[Op],
    ) -> Result<Vec<Committed>, DbError> {
        let pusher = Pusher {
            author,
            sub,
            root: None,
        };
        self.apply_as(space, pusher, ops).await
    }

    /// [`Db::apply_by`] for any [`Pusher`]: with a `root`, every op that is
    /// not already stored must stay inside that subtree, and so must the
    /// restores the batch causes, else the batch is refused `out_of_scope`
    /// (migration 0012).
    pub async fn apply_as(
        &self,
        space: &str,
        pusher: Pusher<'_>,
        ops: &[Op],
    ) -> Result<Vec<Committed>, DbError> {
        if ops.len() > MAX_BATCH {
            return Err(DbError::rejected(
                RejectCode::BadBatch,
                format!("batch_too_large: {} ops, at most {MAX_BATCH}", ops.len()),
            ));
        }
        let client = self.client().await?;
        apply_on(&client, space, pusher, ops).await
    }

    /// Commits several pushes to `space` in one transaction (group commit:
    /// one WAL flush for all of them), each as if applied alone in the given
    /// order: each runs under its own savepoint, so a refused push changes
    /// nothing and the others still commit. The answers are in push order;
    /// if the commit itself fails, every push gets that error.
    pub async fn apply_group(
        &self,
        space: &str,
        pushes: &[GroupPush],
    ) -> Vec<Result<Vec<Committed>, DbError>> {
        self.apply_group_timed(space, pushes)
            .await
            .into_iter()
            .map(|(answer, _)| answer)
            .collect()
    }

    /// [`Db::apply_group`], with the time each push held the database (its
    /// own statements; the shared commit is not counted): what the push
    /// is charged to its token.
    pub async fn apply_group_timed(
        &self,
        space: &str,
        pushes: &[GroupPush],
    ) -> Vec<(Result<Vec<Committed>, DbError>, std::time::Duration)> {
        let none = std::time::Duration::ZERO;
        if let [p] = pushes {
            let started = std::time::Instant::now();
            let answer = self.apply_as(space, Pusher::of(p), &p.ops).await;
            return vec![(answer, started.elapsed())];
        }
        let mut client = match self.client().await {
            Ok(c) => c,
            Err(e) => {
                return pushes
                    .iter()
                    .map(|_| (Err(DbError::GroupFailed(e.to_string())), none))
                    .collect();
            }
        };
        let mut tx = match client.transaction().await {
            Ok(t) => t,
            Err(e) => {
                let e = DbError::from(e);
                return pushes
                    .iter()
                    .map(|_| (Err(DbError::GroupFailed(e.to_string())), none))
                    .collect();
            }
        };
        let mut answers = Vec::with_capacity(pushes.len());
        for push in pushes {
            let ops = &push.ops;
            if ops.len() > MAX_BATCH {
                answers.push((
                    Err(DbError::rejected(
                        RejectCode::BadBatch,
                        format!("batch_too_large: {} ops, at most {MAX_BATCH}", ops.len()),
                    )),
                    none,
                ));
                continue;
            }
            let started = std::time::Instant::now();
            let answer = match tx.savepoint("push").await {
                Ok(sp) => match apply_on(&sp, space, Pusher::of(push), ops).await {
                    Ok(committed) => sp.commit().await.map(|()| committed).map_err(DbError::from),
                    // Dropping the savepoint rolls it back.
                    Err(e) => Err(e),
                },
                Err(e) => Err(DbError::from(e)),
            };
            answers.push((answer, started.elapsed()));
        }
        if let Err(e) = tx.commit().await {
            let e = DbError::from(e);
            return pushes
                .iter()
                .map(|_| (Err(DbError::GroupFailed(e.to_string())), none))
                .collect();
        }
        answers
    }
}
