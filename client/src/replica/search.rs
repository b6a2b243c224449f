//! Full-text search over field values (SQLite FTS5 over the value index), optionally within a subtree.

use arbor_shared::NodeId;
use rusqlite::params;

use super::{Replica, Result};
use crate::store::id_from_blob;

/// Most hits [`Replica::search`] returns.
pub const MAX_SEARCH_HITS: usize = 1_000;

/// A register whose value matches a search.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SearchHit {
    /// The node.
    pub node: NodeId,
    /// Its parent.
    pub parent: NodeId,
    /// The field that matched.
    pub field: String,
    /// Its value.
    pub value: String,
}

/// The words of a search: maximal runs of alphanumeric characters,
/// lowercased, as both the replica's tokenizer (FTS5 `unicode61`) and the
/// server's (`to_tsvector('simple', ...)`) split plain words. Everything
/// else (quotes, operators, punctuation) separates words, so no input is
/// a query syntax error.
pub fn search_words(query: &str) -> Vec<String> {
    query
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect()
}

impl Replica {
    /// The registers whose value holds every word of `query` (the last as
    /// a prefix, so a search can follow typing), best first (BM25), at
    /// most `limit` (capped at [`MAX_SEARCH_HITS`]). `field` limits it to
    /// one field; `within` to that node and its descendants. Deleted nodes
    /// are left out. A query without words finds nothing.
    pub fn search(
        &mut self,
        query: &str,
        field: Option<&str>,
        within: Option<NodeId>,
        limit: usize,
    ) -> Result<Vec<SearchHit>> {
        let words = search_words(query);
        let limit = limit.min(MAX_SEARCH_HITS);
        if words.is_empty() || limit == 0 {
            return Ok(Vec::new());
        }
        self.build_value_index()?;
        // Each word a quoted FTS5 string (no operator can get in: words are
        // alphanumeric), the last one a prefix.
        let last = words.len() - 1;
        let fts: Vec<String> = words
            .iter()
            .enumerate()
            .map(|(i, w)| {
                if i == last {
                    format!("\"{w}\"*")
                } else {
                    format!("\"{w}\"")
                }
            })
            .collect();
        let mut stmt = self.conn.prepare_cached(
            "SELECT v.node, v.parent, v.field, p.value
             FROM value_search s
             JOIN value_index v ON v.id = s.rowid
             JOIN payloads p ON p.node = v.node AND p.field = v.field
             WHERE value_search MATCH ?1 AND v.parent IS NOT NULL
               AND (?2 IS NULL OR v.field = ?2)
             ORDER BY s.rank, v.node, v.field",
        )?;
        let mut rows = stmt.query(params![fts.join(" "), field])?;
        let tree = self.tree();
        let mut out = Vec::new();
        while let Some(r) = rows.next()? {
            let node = id_from_blob(&r.get::<_, Vec<u8>>(0)?)?;
            // A walk up per hit: out of the subtree or in the trash.
            let inside = match within {
                Some(root) => node == root || tree.is_ancestor(root, node)?,
                None => !tree.is_in_trash(node)?,
            };
            if !inside || (within.is_some() && tree.is_in_trash(node)?) {
                continue;
            }
            out.push(SearchHit {
                node,
                parent: id_from_blob(&r.get::<_, Vec<u8>>(1)?)?,
                field: r.get(2)?,
                value: r.get::<_, Option<String>>(3)?.unwrap_or_default(),
            });
            if out.len() == limit {
                break;
            }
        }
        Ok(out)
    }
}
