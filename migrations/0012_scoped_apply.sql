-- Pushes by tokens limited to a subtree (the `root` claim): which stored
-- nodes lie in a subtree, and apply_ops_by with the scope checked before
-- and after. Contract: migrations/README.md ("Scoped pushes").

-- The nodes of p_nodes that are p_root or below it (stored nodes only: an
-- id the space has not stored is in no subtree). One walk up from each
-- node, stopping at p_root or at the top; the depth bound only matters in
-- a damaged store whose parent links close a cycle (those nodes are then
-- outside every subtree).
CREATE FUNCTION arbor_scope_members(p_space bigint, p_root uuid, p_nodes uuid[])
RETURNS TABLE (node uuid)
LANGUAGE sql STABLE AS $$
    WITH RECURSIVE up (start, id, parent, depth) AS (
        SELECT n.id, n.id, n.parent, 0
        FROM nodes n WHERE n.space = p_space AND n.id = ANY (p_nodes)
        UNION ALL
        SELECT up.start, n.id, n.parent, up.depth + 1
        FROM up JOIN nodes n ON n.space = p_space AND n.id = up.parent
        WHERE up.id <> p_root AND up.parent <> p_root AND up.depth < 1000000
    )
    -- p_root may be ROOT, which has no row: a walk reaching it ends at a
    -- row whose parent it is.
    SELECT DISTINCT up.start FROM up WHERE up.id = p_root OR up.parent = p_root
$$;

-- The nodes of p_nodes that are in the trash and were deleted from inside
-- p_root's subtree: the child of TRASH above each (its trash root) was put
-- there by a delete whose previous parent is p_root or below it now.
CREATE FUNCTION arbor_deleted_from_scope(p_space bigint, p_root uuid, p_nodes uuid[])
RETURNS TABLE (node uuid)
LANGUAGE plpgsql STABLE AS $$
DECLARE
    n uuid;
    t uuid;
    prev uuid;
BEGIN
    FOREACH n IN ARRAY coalesce(p_nodes, '{}') LOOP
        t := arbor_trash_root(p_space, n);
        CONTINUE WHEN t IS NULL;
        SELECT o.prev_parent INTO prev
        FROM ops o
        WHERE o.space = p_space AND o.node = t AND o.kind = 'm' AND o.applied
          AND o.parent = 'ffffffff-ffff-ffff-ffff-ffffffffffff'
        ORDER BY o.hlc DESC, o.replica DESC
        LIMIT 1;
        IF prev IS NOT NULL
           AND EXISTS (SELECT 1 FROM arbor_scope_members(p_space, p_root, ARRAY[prev])) THEN
            node := n;
            RETURN NEXT;
        END IF;
    END LOOP;
END $$;

-- apply_ops_by for a token limited to the subtree of p_root. Under the
-- space's ingest lock, before anything is applied, every op that is not
-- already stored (a re-push of a stored op is answered as a duplicate,
-- whatever happened since) must stay inside the subtree:
--   a move: its node is not p_root; its node is below p_root, or not
--   stored (a create), or in the trash deleted from inside the subtree;
--   its parent is TRASH, p_root or below it, or the node of an earlier
--   move of the batch that was not stored (created by the batch);
--   a set: its node is p_root or below it, in the trash deleted from
--   inside the subtree, or created by an earlier move of the batch.
-- After the apply, every restore the batch caused must have put its node
-- below p_root (a restore of p_root or of a node outside it would be a
-- write outside the subtree). Either failure raises AR016 naming the op
-- (or the restore) and the whole call writes nothing. An id the space has
-- not stored counts as outside, so a refusal never tells a scoped writer
-- whether a node outside its subtree exists.
CREATE FUNCTION apply_ops_scoped(
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
               EXISTS (SELECT 1 FROM nodes n WHERE n.space = v_space AND n.id = t.parent) AS sp
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
            AND (NOT o.sn OR ni.id IS NOT NULL OR nd.id IS NOT NULL)
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
