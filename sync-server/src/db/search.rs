//! Full-text search over register values (the value index's GIN index, migration 0018), optionally within a subtree.

use arbor_shared::NodeId;

use super::reads::require_in_scope;
use super::*;

/// Most hits a search returns.
pub const MAX_SEARCH_HITS: u32 = 1_000;

/// How many matches a search ranks at most: the best hits are the best of
/// the first this many matches the index gives (a bound on the work of a
/// search for a common word).
pub const SEARCH_CANDIDATES: i64 = 10_000;

/// A register whose value matched.
#[derive(Debug, Clone, PartialEq)]
pub struct SearchRow {
    /// The node.
    pub node: NodeId,
    /// Its parent.
    pub parent: NodeId,
    /// The field that matched.
    pub field: String,
    /// Its value.
    pub value: String,
    /// Its rank (`ts_rank`; higher is better).
    pub rank: f32,
}

/// `words` as a `tsquery` text: each word quoted, all required, the last
/// a prefix. The words are alphanumeric (`arbor_client::replica::search_words`),
/// so quoting them is enough for the text to parse.
pub fn tsquery_text(words: &[String]) -> String {
    let last = words.len().saturating_sub(1);
    words
        .iter()
        .enumerate()
        .map(|(i, w)| {
            let w = w.replace('\'', "''");
            if i == last {
                format!("'{w}':*")
            } else {
                format!("'{w}'")
            }
        })
        .collect::<Vec<_>>()
        .join(" & ")
}

impl Db {
    /// The registers whose value holds every word of `words` (the last as
    /// a prefix), best first, at most `limit`: among the first
    /// [`SEARCH_CANDIDATES`] matches, those of `field` (if given) whose
    /// node is `within` or below it and not deleted. With `scope` (a
    /// token's `root` claim), `within` must be inside it (else
    /// `out_of_scope`) and defaults to it.
    pub async fn search(
        &self,
        space: &str,
        words: &[String],
        field: Option<&str>,
        within: Option<NodeId>,
        scope: Option<NodeId>,
        limit: u32,
    ) -> Result<(u64, Vec<SearchRow>), DbError> {
        let info = self.space_id(space).await?;
        let limit = i64::from(limit.clamp(1, MAX_SEARCH_HITS));
        let mut client = self.client().await?;
        let tx = read_snapshot(&mut client).await?;
        if let (Some(root), Some(w)) = (scope, within) {
            require_in_scope(&tx, info.id, root, w).await?;
        }
        if words.is_empty() {
            tx.commit().await?;
            return Ok((info.head_seq, Vec::new()));
        }
        let within = within.or(scope).unwrap_or(NodeId::ROOT);
        let stmt = tx
            .prepare_cached(
                "SELECT t.node, t.parent, t.field, p.value, t.rank FROM (
                     SELECT r.node, r.parent, r.field, r.rank FROM (
                         SELECT c.node, c.parent, c.field,
                                ts_rank(to_tsvector('simple'::regconfig, c.norm),
                                        to_tsquery('simple'::regconfig, $2)) AS rank
                         FROM (SELECT v.node, v.parent, v.field, v.norm FROM value_index v
                               WHERE arbor_search_doc(v.space, v.norm)
                                     @@ (to_tsquery('simple'::regconfig, $2) && $3::text::tsquery)
                                 AND v.space = $1 AND v.parent IS NOT NULL
                                 AND ($4::text IS NULL OR v.field = $4)
                               LIMIT $7) c
                         ORDER BY rank DESC, c.node, c.field) r
                     WHERE EXISTS (SELECT 1 FROM arbor_scope_members($1, $5, ARRAY[r.node]))
                       AND ($5 = '00000000-0000-0000-0000-000000000000'::uuid
                            OR EXISTS (SELECT 1 FROM arbor_scope_members(
                                $1, '00000000-0000-0000-0000-000000000000'::uuid, ARRAY[r.node])))
                     LIMIT $6) t
                 JOIN payloads p ON p.space = $1 AND p.node = t.node AND p.field = t.field",
            )
            .await?;
        let space_lexeme = format!("'@space{}'", info.id);
        let rows = tx
            .query(
                &stmt,
                &[
                    &info.id,
                    &tsquery_text(words),
                    &space_lexeme,
                    &field,
                    &uuid(within),
                    &limit,
                    &SEARCH_CANDIDATES,
                ],
            )
            .await?;
        tx.commit().await?;
        let mut hits = rows
            .iter()
            .map(|r| {
                Ok(SearchRow {
                    node: node(r.try_get(0)?),
                    parent: node(r.try_get(1)?),
                    field: r.try_get(2)?,
                    value: r.try_get::<_, Option<String>>(3)?.unwrap_or_default(),
                    rank: r.try_get(4)?,
                })
            })
            .collect::<Result<Vec<_>, DbError>>()?;
        hits.sort_by(|a, b| {
            b.rank
                .total_cmp(&a.rank)
                .then(a.node.cmp(&b.node))
                .then(a.field.cmp(&b.field))
        });
        Ok((info.head_seq, hits))
    }
}
