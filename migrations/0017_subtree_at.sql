-- A subtree as it was at a seq, from the record of place changes (0013):
-- for GET .../subtree/{id}/at. Contract: migrations/README.md ("A subtree
-- at a seq").

-- The nodes of p_root's subtree at seq p_at (p_root excluded), with their
-- parent and key then, at most p_limit rows. A node's place at p_at is the
-- old place of its first change at or after p_at, or its place now if it
-- has none. Only meaningful for p_at >= spaces.changes_from.
CREATE FUNCTION arbor_subtree_at(p_space bigint, p_root uuid, p_at bigint, p_limit bigint)
RETURNS TABLE (id uuid, parent uuid, key bytea)
LANGUAGE sql STABLE AS $$
    WITH RECURSIVE
    since AS MATERIALIZED (
        SELECT DISTINCT ON (c.node) c.node, c.old_parent, c.old_key
        FROM node_changes c
        WHERE c.space = p_space AND c.tag >= p_at
        ORDER BY c.node, c.tag, c.id),
    edges (id, parent, key) AS (
        SELECT n.id, n.parent, n.key FROM nodes n
        WHERE n.space = p_space AND NOT EXISTS (SELECT 1 FROM since s WHERE s.node = n.id)
        UNION ALL
        SELECT s.node, s.old_parent, s.old_key FROM since s WHERE s.old_parent IS NOT NULL),
    sub (id, parent, key) AS (
        SELECT e.id, e.parent, e.key FROM edges e WHERE e.parent = p_root
        UNION
        SELECT e.id, e.parent, e.key FROM sub JOIN edges e ON e.parent = sub.id)
    SELECT sub.id, sub.parent, sub.key FROM sub LIMIT p_limit
$$;

-- The place of each of p_nodes at seq p_at (no row: not in the tree then).
CREATE FUNCTION arbor_places_at(p_space bigint, p_nodes uuid[], p_at bigint)
RETURNS TABLE (id uuid, parent uuid, key bytea)
LANGUAGE sql STABLE AS $$
    SELECT x.id, x.parent, x.key FROM (
        SELECT u.id,
               coalesce(ch.present, n.id IS NOT NULL) AS present,
               CASE WHEN ch.present IS NOT NULL THEN ch.old_parent ELSE n.parent END AS parent,
               CASE WHEN ch.present IS NOT NULL THEN ch.old_key ELSE n.key END AS key
        FROM unnest(p_nodes) AS u (id)
        LEFT JOIN LATERAL (
            SELECT c.old_parent, c.old_key, c.old_parent IS NOT NULL AS present
            FROM node_changes c
            WHERE c.space = p_space AND c.node = u.id AND c.tag >= p_at
            ORDER BY c.tag, c.id LIMIT 1) ch ON true
        LEFT JOIN nodes n ON n.space = p_space AND n.id = u.id
    ) x WHERE x.present
$$;
