-- A node's history: every op of a node (its moves, the restores of it, the
-- sets of its fields) by seq, for GET .../nodes/{id}/history. One more
-- index entry per op at ingest; built inside the migration's transaction,
-- so a large space's ingest waits for the build once. Contract:
-- migrations/README.md ("Node history").
CREATE INDEX ops_node_seq ON ops (space, node, seq);
