-- A scoped push's side effects stay inside its subtree: apply_ops_tracked
-- as in 0013, and for a push by a token limited to the subtree of p_root,
-- every node the call changed that is not the node of one of its moves
-- (undo and redo of moves from the past can flip another move between
-- applied and skipped) must end where it was, or inside p_root having
-- been inside it or in the trash; else AR016 and nothing is written.
-- Contract: migrations/README.md ("Scoped pushes").
CREATE OR REPLACE FUNCTION apply_ops_tracked(
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
    moved uuid;
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
        SELECT c.node INTO moved
        FROM (SELECT DISTINCT x.node FROM node_changes x
              WHERE x.space = v_space AND x.tag = v_head) AS c
        CROSS JOIN LATERAL (
            SELECT f.old_parent, f.old_key FROM node_changes f
            WHERE f.space = v_space AND f.node = c.node AND f.tag = v_head
            ORDER BY f.id LIMIT 1) AS b
        LEFT JOIN nodes a ON a.space = v_space AND a.id = c.node
        WHERE c.node <> ALL (ARRAY (
                SELECT t.n FROM unnest(p_node, p_kind) AS t (n, k) WHERE t.k = 'm'))
          AND NOT (b.old_parent IS NOT DISTINCT FROM a.parent
                   AND b.old_key IS NOT DISTINCT FROM a.key)
          AND NOT (c.node <> p_root
                   AND p_root = ANY (coalesce(arbor_chain(v_space, c.node, NULL), '{}'))
                   AND (p_root = ANY (coalesce(arbor_chain(v_space, c.node, v_head), '{}'))
                        OR 'ffffffff-ffff-ffff-ffff-ffffffffffff'::uuid
                           = ANY (coalesce(arbor_chain(v_space, c.node, v_head), '{}'))))
        LIMIT 1;
        IF moved IS NOT NULL THEN
            RAISE EXCEPTION 'out_of_scope: the push would move node % outside the token''s subtree', moved
                USING ERRCODE = 'AR016';
        END IF;
    END IF;
    PERFORM set_config('arbor.change_tag', '', true);
END $$;
