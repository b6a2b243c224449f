-- apply_ops_scoped restated (migration 0012 is applied and never edited):
-- a create by a scoped token may not use an id that stored nodes already
-- hang under. Such nodes (moved under a parent the space has not stored
-- yet, which the move operation allows) are outside every subtree; a
-- create of their parent's id inside the subtree would pull them in, and
-- the scoped writer would read them. Everything else is as in 0012.
-- Contract: migrations/README.md ("Scoped pushes").

CREATE OR REPLACE FUNCTION apply_ops_scoped(
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
    bad bigint;
    outside uuid;
BEGIN
    SELECT s.id INTO v_space FROM spaces s WHERE s.name = p_space;
    IF NOT FOUND OR p_root IS NULL
       OR p_root = 'ffffffff-ffff-ffff-ffff-ffffffffffff' THEN
        -- apply_ops raises unknown_space; a NULL or TRASH root is a caller's bug.
        IF FOUND THEN
            RAISE EXCEPTION 'out_of_scope: no subtree root' USING ERRCODE = 'AR016';
        END IF;
        RETURN QUERY SELECT * FROM apply_ops_by(p_sub, p_space, p_author, p_hlc, p_replica,
            p_kind, p_node, p_parent, p_key, p_field, p_value, p_known_seq);
        RETURN;
    END IF;
    PERFORM pg_advisory_xact_lock(v_space);
    SELECT s.head_seq INTO v_head FROM spaces s WHERE s.id = v_space;

    WITH o AS (
        SELECT t.ord, t.kind, t.node, t.parent,
               EXISTS (SELECT 1 FROM nodes n WHERE n.space = v_space AND n.id = t.node) AS sn,
               EXISTS (SELECT 1 FROM nodes n WHERE n.space = v_space AND n.id = t.parent) AS sp,
               EXISTS (SELECT 1 FROM nodes n WHERE n.space = v_space AND n.parent = t.node) AS waited
        FROM unnest(p_hlc, p_replica, p_kind, p_node, p_parent)
             WITH ORDINALITY AS t (hlc, replica, kind, node, parent, ord)
        WHERE NOT EXISTS (SELECT 1 FROM ops x
                          WHERE x.space = v_space AND x.hlc = t.hlc AND x.replica = t.replica)
    ),
    ids AS (SELECT o.node AS id FROM o WHERE o.sn UNION SELECT o.parent FROM o WHERE o.sp),
    inside AS (
        SELECT m.node AS id
        FROM arbor_scope_members(v_space, p_root, ARRAY (SELECT ids.id FROM ids)) AS m),
    deleted AS (
        SELECT d.node AS id
        FROM arbor_deleted_from_scope(v_space, p_root, ARRAY (
            SELECT DISTINCT o.node FROM o
            WHERE o.sn AND o.node NOT IN (SELECT inside.id FROM inside))) AS d),
    created AS (
        SELECT o.node AS id, min(o.ord) AS ord FROM o
        WHERE o.kind = 'm' AND NOT o.sn GROUP BY o.node)
    SELECT min(o.ord) INTO bad
    FROM o
    LEFT JOIN inside ni ON ni.id = o.node
    LEFT JOIN deleted nd ON nd.id = o.node
    LEFT JOIN inside pi ON pi.id = o.parent
    LEFT JOIN created pc ON pc.id = o.parent AND pc.ord < o.ord
    LEFT JOIN created nc ON nc.id = o.node AND nc.ord < o.ord
    WHERE NOT CASE
        WHEN o.kind = 'm' THEN
            o.node IS DISTINCT FROM p_root
            AND ((NOT o.sn AND NOT o.waited) OR ni.id IS NOT NULL OR nd.id IS NOT NULL)
            AND (o.parent = 'ffffffff-ffff-ffff-ffff-ffffffffffff' OR o.parent = p_root
                 OR pi.id IS NOT NULL OR (NOT o.sp AND pc.id IS NOT NULL))
        ELSE
            ni.id IS NOT NULL OR nd.id IS NOT NULL OR (NOT o.sn AND nc.id IS NOT NULL)
        END;
    IF bad IS NOT NULL THEN
        RAISE EXCEPTION 'out_of_scope: op % reaches outside the token''s subtree', bad - 1
            USING ERRCODE = 'AR016';
    END IF;

    RETURN QUERY SELECT * FROM apply_ops_by(p_sub, p_space, p_author, p_hlc, p_replica,
        p_kind, p_node, p_parent, p_key, p_field, p_value, p_known_seq);

    -- The restores this call appended (replica 0, above the old head).
    SELECT r.node INTO outside
    FROM ops r
    WHERE r.space = v_space AND r.seq > v_head AND r.replica = -9223372036854775808
      AND (r.node = p_root OR NOT EXISTS (
          SELECT 1 FROM arbor_scope_members(v_space, p_root, ARRAY[r.node])))
    LIMIT 1;
    IF outside IS NOT NULL THEN
        RAISE EXCEPTION 'out_of_scope: the push would restore a node outside the token''s subtree'
            USING ERRCODE = 'AR016';
    END IF;
END $$;
