-- The record of place changes the subtree feed reads: every change a
-- client's push makes to `nodes` (the push's own moves, undo and redo,
-- restores), with the node's place before it, so the server can tell, for
-- any seq since `spaces.changes_from`, where a node was then. Contract:
-- migrations/README.md ("Node changes").

-- Cursors at or above it can be served from node_changes (its pushes
-- since are all recorded): spaces that existed before this migration
-- start at their head now, new ones at 0.
ALTER TABLE spaces ADD COLUMN changes_from bigint NOT NULL DEFAULT 0;
UPDATE spaces SET changes_from = head_seq;

-- One row per nodes row a tracked call inserted, updated or deleted:
-- `tag` is the space's head seq before the call (the calls of a space are
-- serialized, so the rows of a call are those with its tag), `id` orders
-- the rows of a call, and (old_parent, old_key) is the row before that
-- statement (NULL: the node was not in the tree).
CREATE TABLE node_changes (
    space      bigint    NOT NULL,
    tag        bigint    NOT NULL,
    id         bigserial NOT NULL,
    node       uuid      NOT NULL,
    old_parent uuid,
    old_key    bytea,
    PRIMARY KEY (space, node, tag, id)
);
CREATE INDEX node_changes_tag ON node_changes (space, tag);

-- Statement triggers (one per event: a trigger with transition tables
-- takes one event). They record only inside a tracked call, which sets
-- `arbor.change_tag`; imports, forks and restores write no rows.
CREATE FUNCTION arbor_track_nodes() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    tag bigint := nullif(current_setting('arbor.change_tag', true), '')::bigint;
BEGIN
    IF tag IS NULL THEN
        RETURN NULL;
    END IF;
    IF TG_OP = 'INSERT' THEN
        INSERT INTO node_changes (space, tag, node, old_parent, old_key)
        SELECT n.space, tag, n.id, NULL, NULL FROM new_rows n;
    ELSE
        INSERT INTO node_changes (space, tag, node, old_parent, old_key)
        SELECT o.space, tag, o.id, o.parent, o.key FROM old_rows o;
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER nodes_track_insert AFTER INSERT ON nodes
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION arbor_track_nodes();
CREATE TRIGGER nodes_track_update AFTER UPDATE ON nodes
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION arbor_track_nodes();
CREATE TRIGGER nodes_track_delete AFTER DELETE ON nodes
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION arbor_track_nodes();

-- apply_ops_by (p_root NULL) or apply_ops_scoped, with the call's place
-- changes recorded under the space's head before it.
CREATE FUNCTION apply_ops_tracked(
    p_root uuid,
    p_sub text,
    p_space text,
    p_author bigint,
    p_hlc bigint[],
    p_replica bigint[],
    p_kind "char"[],
    p_node uuid[],
    p_parent uuid[],
    p_key bytea[],
    p_field text[],
    p_value text[],
    p_known_seq bigint[])
RETURNS TABLE (
    seq bigint, hlc bigint, replica bigint, kind "char", node uuid, parent uuid, key bytea,
    field text, value text, known_seq bigint, origin "char", author text)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    v_space bigint;
    v_head bigint;
BEGIN
    SELECT s.id INTO v_space FROM spaces s WHERE s.name = p_space;
    IF FOUND THEN
        PERFORM pg_advisory_xact_lock(v_space);
        SELECT s.head_seq INTO v_head FROM spaces s WHERE s.id = v_space;
        PERFORM set_config('arbor.change_tag', v_head::text, true);
    END IF;
    IF p_root IS NULL THEN
        RETURN QUERY SELECT * FROM apply_ops_by(p_sub, p_space, p_author, p_hlc, p_replica,
            p_kind, p_node, p_parent, p_key, p_field, p_value, p_known_seq);
    ELSE
        RETURN QUERY SELECT * FROM apply_ops_scoped(p_root, p_sub, p_space, p_author, p_hlc,
            p_replica, p_kind, p_node, p_parent, p_key, p_field, p_value, p_known_seq);
    END IF;
    PERFORM set_config('arbor.change_tag', '', true);
END $$;

-- The ancestors of p_node, parent first, up to ROOT, TRASH or a parent
-- not in the tree, in the state at seq p_at (NULL: now); NULL if p_node
-- was not in the tree then. The state at p_at: a node's first recorded
-- change with a tag at or above p_at holds its place before it, else its
-- place now. The depth bound only matters in a damaged store.
CREATE FUNCTION arbor_chain(p_space bigint, p_node uuid, p_at bigint) RETURNS uuid[]
LANGUAGE plpgsql STABLE AS $$
DECLARE
    cur uuid := p_node;
    par uuid;
    present boolean;
    chain uuid[] := '{}';
    steps int := 0;
BEGIN
    LOOP
        present := false;
        IF p_at IS NOT NULL THEN
            SELECT c.old_parent, c.old_parent IS NOT NULL INTO par, present
            FROM node_changes c
            WHERE c.space = p_space AND c.node = cur AND c.tag >= p_at
            ORDER BY c.tag, c.id
            LIMIT 1;
        END IF;
        IF p_at IS NULL OR NOT FOUND THEN
            SELECT n.parent, true INTO par, present
            FROM nodes n WHERE n.space = p_space AND n.id = cur;
            present := FOUND;
        END IF;
        IF NOT present THEN
            RETURN CASE WHEN cur = p_node THEN NULL ELSE chain END;
        END IF;
        chain := chain || par;
        steps := steps + 1;
        IF par = '00000000-0000-0000-0000-000000000000'
           OR par = 'ffffffff-ffff-ffff-ffff-ffffffffffff' OR steps > 1000000 THEN
            RETURN chain;
        END IF;
        cur := par;
    END LOOP;
END $$;

-- The nodes whose place (moved) or registers changed after seq p_after,
-- with their ancestors then (moved nodes only) and now, and their place
-- now. Run in one snapshot with the head it is read at.
CREATE FUNCTION arbor_subtree_changes(p_space bigint, p_after bigint)
RETURNS TABLE (node uuid, moved boolean, before uuid[], after uuid[], parent uuid, key bytea)
LANGUAGE sql STABLE AS $$
    WITH moved AS (
        SELECT DISTINCT c.node FROM node_changes c WHERE c.space = p_space AND c.tag >= p_after),
    written AS (
        SELECT DISTINCT o.node FROM ops o
        WHERE o.space = p_space AND o.seq > p_after AND o.kind = 's'),
    changed AS (
        SELECT m.node, true AS moved FROM moved m
        UNION ALL
        SELECT w.node, false FROM written w WHERE w.node NOT IN (SELECT m.node FROM moved m))
    SELECT ch.node, ch.moved,
           CASE WHEN ch.moved THEN arbor_chain(p_space, ch.node, p_after) END,
           arbor_chain(p_space, ch.node, NULL),
           n.parent, n.key
    FROM changed ch LEFT JOIN nodes n ON n.space = p_space AND n.id = ch.node
$$;
