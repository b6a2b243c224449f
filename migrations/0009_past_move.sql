-- A move older than the log's newest, placed without undo and redo; and
-- "children of X" planned as an index probe whatever the tree's shape.
-- Contract: migrations/README.md ("A move from the past", "Planner
-- statistics").
--
-- 1. Before this migration, one new move stamped below the newest logged
--    move undid and redid every newer logged move under the space's lock
--    (200k newer moves: seconds). arbor_past_move places such a move
--    directly when no newer move can change outcome because of it, which it
--    decides by walking two ancestor chains (see the function). apply_ops is
--    restated from 0002 (applied files are never edited) with one change:
--    a batch whose only new move is out of order tries arbor_past_move
--    first and falls back to the undo/redo when it declines.
-- 2. The per-node log lookups it needs (a node's moves after a stamp) get
--    an index, which history per node also reads.
-- 3. In a flat space (most nodes under one parent) ANALYZE finds a handful
--    of distinct parents, and the planner's estimate for "children of an
--    unknown node" becomes "most of the table": the child-existence probes
--    of apply_ops ran as sequential scans (50k nodes: 2.4 s per 1,000-op
--    push instead of 30 ms). A tree's parents are a sizeable fraction of its
--    nodes; the column's n_distinct says so.

CREATE INDEX ops_node_moves ON ops (space, node, hlc, replica) WHERE kind = 'm';

ALTER TABLE nodes ALTER COLUMN parent SET (n_distinct = -0.1);
ANALYZE nodes;

-- A node's parent just before the stamp (t_hlc, t_rep): the previous place
-- recorded by its first applied move after the stamp, else its parent now.
-- NULL: not in the tree then.
CREATE FUNCTION arbor_parent_at(p_space bigint, p_node uuid, t_hlc bigint, t_rep bigint)
RETURNS uuid LANGUAGE plpgsql STABLE AS $$
DECLARE
    r uuid;
BEGIN
    SELECT o.prev_parent INTO r FROM ops o
    WHERE o.space = p_space AND o.kind = 'm' AND o.node = p_node AND o.applied
      AND (o.hlc, o.replica) > (t_hlc, t_rep)
    ORDER BY o.hlc, o.replica LIMIT 1;
    IF FOUND THEN
        RETURN r;
    END IF;
    RETURN (SELECT n.parent FROM nodes n WHERE n.space = p_space AND n.id = p_node);
END $$;

-- Places the new move (t_hlc, t_rep) of p_node under p_parent at p_key,
-- older than some logged moves, without undo and redo, when that gives the
-- state undo and redo would give; otherwise returns applied = NULL and
-- writes nothing (the caller then undoes and redoes).
--
-- Why it is exact. Let t1 be p_node's first applied move after the stamp
-- (or none). With and without the new move the histories differ only in
-- p_node's parent between the stamp and t1, until some newer move's
-- outcome differs. A move of x under y can change outcome only if x is an
-- ancestor of p_node, on one side, at that move's turn (the cycle check
-- asks whether x is y or above it, and only p_node's parent link differs).
-- p_node's ancestors are, on one side, p_parent's chain, and on the other,
-- the chain of its parent before the stamp. When no node on either chain
-- (as they were at the stamp) moves between the stamp and t1, the chains
-- stay as they were, no moved node is ever on them, and no outcome changes.
-- Then:
-- - the new move is skipped when p_node is p_parent or on p_parent's chain;
-- - else it is applied; its previous place is p_node's place at the stamp;
--   t1 (if any) now records the new move's place as its previous place,
--   and p_node's place now is unchanged; without t1 p_node moves now.
-- Walks are bounded by the space's node count (a longer walk is a damaged
-- tree: AR014, as arbor_is_ancestor).
CREATE FUNCTION arbor_past_move(
    p_space bigint, t_hlc bigint, t_rep bigint, p_node uuid, p_parent uuid, p_key bytea,
    OUT applied boolean, OUT prev_parent uuid, OUT prev_key bytea)
LANGUAGE plpgsql AS $$
DECLARE
    t1 record;
    x uuid;
    steps bigint;
    bound bigint;
    side int;
    cycle boolean := false;
BEGIN
    SELECT o.seq, o.hlc, o.replica, o.prev_parent, o.prev_key INTO t1 FROM ops o
    WHERE o.space = p_space AND o.kind = 'm' AND o.node = p_node AND o.applied
      AND (o.hlc, o.replica) > (t_hlc, t_rep)
    ORDER BY o.hlc, o.replica LIMIT 1;
    IF FOUND THEN
        prev_parent := t1.prev_parent;
        prev_key := t1.prev_key;
    ELSE
        SELECT n.parent, n.key INTO prev_parent, prev_key
        FROM nodes n WHERE n.space = p_space AND n.id = p_node;
    END IF;
    SELECT s.node_count + 2 INTO bound FROM spaces s WHERE s.id = p_space;
    -- Side 1: p_parent's chain (and the cycle check); side 2: the chain of
    -- p_node's parent at the stamp.
    FOR side IN 1 .. 2 LOOP
        x := CASE side WHEN 1 THEN p_parent ELSE prev_parent END;
        steps := 0;
        WHILE x IS NOT NULL AND x NOT IN ('00000000-0000-0000-0000-000000000000',
                                         'ffffffff-ffff-ffff-ffff-ffffffffffff') LOOP
            IF side = 1 AND x = p_node THEN
                cycle := true;
                EXIT;
            END IF;
            IF EXISTS (SELECT 1 FROM ops o
                       WHERE o.space = p_space AND o.kind = 'm' AND o.node = x
                         AND (o.hlc, o.replica) > (t_hlc, t_rep)
                         AND (t1.seq IS NULL OR (o.hlc, o.replica) < (t1.hlc, t1.replica))) THEN
                applied := NULL;
                prev_parent := NULL;
                prev_key := NULL;
                RETURN;
            END IF;
            steps := steps + 1;
            IF steps > bound THEN
                RAISE EXCEPTION 'corrupt: the parent links at a past stamp form a cycle'
                    USING ERRCODE = 'AR014';
            END IF;
            x := arbor_parent_at(p_space, x, t_hlc, t_rep);
        END LOOP;
        EXIT WHEN cycle;
    END LOOP;
    IF cycle THEN
        applied := false;
        prev_parent := NULL;
        prev_key := NULL;
        RETURN;
    END IF;
    applied := true;
    IF t1.seq IS NOT NULL THEN
        UPDATE ops o SET prev_parent = p_parent, prev_key = p_key
        WHERE o.space = p_space AND o.seq = t1.seq;
    ELSE
        INSERT INTO nodes AS n (space, id, parent, key) VALUES (p_space, p_node, p_parent, p_key)
        ON CONFLICT (space, id) DO UPDATE SET parent = EXCLUDED.parent, key = EXCLUDED.key;
    END IF;
END $$;

CREATE OR REPLACE FUNCTION apply_ops(
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
    field text, value text, known_seq bigint, origin "char")
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    n int := coalesce(array_length(p_hlc, 1), 0);
    v_space bigint;
    sp record;
    bad record;
    v_now bigint;
    old_head bigint;
    dup_seqs bigint[];
    targets uuid[];
    stored_conflict boolean;
    conflict_ord bigint;
    stale_ord bigint;
    batch_dups boolean;
    -- New ops, sorted by stamp; seqs old_head + 1 ...
    n_seq bigint[];
    n_hlc bigint[];
    n_rep bigint[];
    n_kind "char"[];
    n_node uuid[];
    n_parent uuid[];
    n_key bytea[];
    n_field text[];
    n_value text[];
    n_known bigint[];
    n_count int;
    lo record;
    in_order boolean;
    -- The batch's one new move, placed by arbor_past_move (no undo/redo).
    past record;
    past_fx record;
    past_done boolean := false;
    -- The (re)do sequence: undone log entries merged with new moves.
    s_seq bigint[];
    s_node uuid[];
    s_parent uuid[];
    s_key bytea[];
    s_simple boolean[];
    s_first boolean[];
    s_skip boolean[];
    m_app boolean[];
    m_pp uuid[];
    m_pk bytea[];
    walk_idx bigint[];
    walk_cycle boolean[];
    walk_safe boolean[];
    s_cur_parent uuid[];
    s_cur_key bytea[];
    s_len int;
    r_app boolean[] := '{}';
    r_pp uuid[] := '{}';
    r_pk bytea[] := '{}';
    run_pp uuid[];
    run_pk bytea[];
    one_pp uuid;
    one_target uuid;
    one_pk bytea;
    i int;
    j int;
BEGIN
    IF coalesce(array_length(p_replica, 1), 0) <> n OR coalesce(array_length(p_kind, 1), 0) <> n
       OR coalesce(array_length(p_node, 1), 0) <> n OR coalesce(array_length(p_parent, 1), 0) <> n
       OR coalesce(array_length(p_key, 1), 0) <> n OR coalesce(array_length(p_field, 1), 0) <> n
       OR coalesce(array_length(p_value, 1), 0) <> n
       OR coalesce(array_length(p_known_seq, 1), 0) <> n THEN
        RAISE EXCEPTION 'bad_batch: the op arrays have different lengths' USING ERRCODE = 'AR011';
    END IF;
    IF n > 10000 THEN
        RAISE EXCEPTION 'batch_too_large: % ops, at most 10000', n USING ERRCODE = 'AR011';
    END IF;
    SELECT s.id INTO v_space FROM spaces s WHERE s.name = p_space;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'unknown_space: %', p_space USING ERRCODE = 'AR010';
    END IF;
    -- Serializes ingest per space: seqs are gapless and in commit order.
    PERFORM pg_advisory_xact_lock(v_space);
    SELECT * INTO sp FROM spaces s WHERE s.id = v_space;
    old_head := sp.head_seq;
    IF n = 0 THEN
        RETURN;
    END IF;
    v_now := (extract(epoch FROM clock_timestamp()) * 1000)::bigint;

    -- Validation, in array order; the first failure aborts the whole batch.
    SELECT b.ord, b.code,
        CASE b.code
            WHEN 'AR001' THEN 'reserved_node: ROOT and TRASH never move and have no fields'
            WHEN 'AR002' THEN 'bad_key: an order key is 1..256 bytes, not ending in 0x00'
            WHEN 'AR003' THEN 'bad_field: a field name is 1..64 bytes'
            WHEN 'AR004' THEN 'value_too_long: a value is at most 65536 bytes'
            WHEN 'AR006' THEN 'clock_ahead: stamp too far ahead of the server clock'
            WHEN 'AR007' THEN 'wrong_replica: replica 0 is the server''s, and an author must match the caller'
            ELSE 'bad_op: NULL element, unknown kind, negative number, or fields of the other kind'
        END AS msg
    INTO bad FROM (
        SELECT t.ord,
            CASE
                WHEN t.hlc IS NULL OR t.rep IS NULL OR t.kind IS NULL OR t.node IS NULL
                     OR t.known IS NULL OR t.kind NOT IN ('m', 's') OR t.hlc < 0 OR t.known < 0
                    THEN 'AR011'
                WHEN t.node IN ('00000000-0000-0000-0000-000000000000',
                                'ffffffff-ffff-ffff-ffff-ffffffffffff') THEN 'AR001'
                WHEN t.rep = -9223372036854775808
                     OR (p_author IS NOT NULL AND t.rep <> p_author) THEN 'AR007'
                WHEN t.kind = 'm' AND (t.parent IS NULL OR t.key IS NULL OR t.field IS NOT NULL
                                       OR t.value IS NOT NULL) THEN 'AR011'
                WHEN t.kind = 'm' AND CASE WHEN length(t.key) NOT BETWEEN 1 AND 256
                                           THEN true
                                           ELSE get_byte(t.key, length(t.key) - 1) = 0 END
                    THEN 'AR002'
                WHEN t.kind = 's' AND (t.parent IS NOT NULL OR t.key IS NOT NULL
                                       OR t.field IS NULL) THEN 'AR011'
                WHEN t.kind = 's' AND octet_length(t.field) NOT BETWEEN 1 AND 64
                    THEN 'AR003'
                WHEN t.kind = 's' AND coalesce(octet_length(t.value), 0) > 65536 THEN 'AR004'
                WHEN t.hlc > ((v_now + sp.max_ahead_ms) << 16) + 65535 THEN 'AR006'
            END AS code
        FROM unnest(p_hlc, p_replica, p_kind, p_node, p_parent, p_key, p_field, p_value, p_known_seq)
             WITH ORDINALITY AS t (hlc, rep, kind, node, parent, key, field, value, known, ord)
    ) b WHERE b.code IS NOT NULL ORDER BY b.ord LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION '% (op %)', bad.msg, bad.ord - 1 USING ERRCODE = bad.code;
    END IF;

    -- Fast path for the realtime case: one op newer than every stored op (so
    -- not a duplicate, and in order). Same checks and effects as below, in
    -- plain single-row statements (the set-based machinery has a fixed cost
    -- that dominates a one-op batch).
    IF n = 1 AND p_hlc[1] > sp.clock_hlc THEN
        IF sp.horizon_hlc IS NOT NULL
           AND (p_hlc[1], p_replica[1]) <= (sp.horizon_hlc, sp.horizon_replica) THEN
            RAISE EXCEPTION 'stale: op 0 is at or below the horizon; re-stamp and retry'
                USING ERRCODE = 'AR005';
        END IF;
        one_target := CASE WHEN p_kind[1] = 'm' THEN p_parent[1] ELSE p_node[1] END;
        IF one_target NOT IN ('00000000-0000-0000-0000-000000000000',
                              'ffffffff-ffff-ffff-ffff-ffffffffffff')
           AND NOT EXISTS (SELECT 1 FROM nodes x WHERE x.space = v_space AND x.id = one_target)
        THEN
            RAISE EXCEPTION 'unknown_node: op 0 names a node that is not in the tree'
                USING ERRCODE = 'AR008';
        END IF;
        IF p_kind[1] = 'm' THEN
            SELECT x.parent, x.key INTO one_pp, one_pk
            FROM nodes x WHERE x.space = v_space AND x.id = p_node[1];
            IF p_node[1] = p_parent[1]
               OR (one_pp IS DISTINCT FROM p_parent[1]
                   AND EXISTS (SELECT 1 FROM nodes c
                               WHERE c.space = v_space AND c.parent = p_node[1])
                   AND arbor_is_ancestor(v_space, p_node[1], p_parent[1])) THEN
                INSERT INTO ops (space, seq, hlc, replica, kind, node, parent, key, known_seq,
                                 applied, prev_parent, prev_key)
                VALUES (v_space, old_head + 1, p_hlc[1], p_replica[1], 'm', p_node[1],
                        p_parent[1], p_key[1], p_known_seq[1], false, NULL, NULL);
            ELSE
                IF one_pp IS NULL THEN
                    INSERT INTO nodes (space, id, parent, key)
                    VALUES (v_space, p_node[1], p_parent[1], p_key[1]);
                ELSE
                    UPDATE nodes x SET parent = p_parent[1], key = p_key[1]
                    WHERE x.space = v_space AND x.id = p_node[1];
                END IF;
                INSERT INTO ops (space, seq, hlc, replica, kind, node, parent, key, known_seq,
                                 applied, prev_parent, prev_key)
                VALUES (v_space, old_head + 1, p_hlc[1], p_replica[1], 'm', p_node[1],
                        p_parent[1], p_key[1], p_known_seq[1], true, one_pp, one_pk);
            END IF;
            UPDATE spaces s SET head_seq = old_head + 1, clock_hlc = p_hlc[1],
                                log_hlc = p_hlc[1], log_replica = p_replica[1]
            WHERE s.id = v_space;
        ELSE
            INSERT INTO payloads AS y (space, node, field, value, hlc, replica)
            VALUES (v_space, p_node[1], p_field[1], p_value[1], p_hlc[1], p_replica[1])
            ON CONFLICT (space, node, field) DO UPDATE
            SET value = EXCLUDED.value, hlc = EXCLUDED.hlc, replica = EXCLUDED.replica
            WHERE (y.hlc, y.replica) < (EXCLUDED.hlc, EXCLUDED.replica);
            INSERT INTO ops (space, seq, hlc, replica, kind, node, field, value, known_seq)
            VALUES (v_space, old_head + 1, p_hlc[1], p_replica[1], 's', p_node[1], p_field[1],
                    p_value[1], p_known_seq[1]);
            UPDATE spaces s SET head_seq = old_head + 1, clock_hlc = p_hlc[1]
            WHERE s.id = v_space;
        END IF;
        IF EXISTS (SELECT 1 FROM ops o
                   WHERE o.space = v_space AND o.kind = 'm'
                     AND o.parent = 'ffffffff-ffff-ffff-ffff-ffffffffffff'
                     AND o.seq > p_known_seq[1]) THEN
            LOOP
                EXIT WHEN arbor_restore_pass(v_space, old_head) = 0;
            END LOOP;
        END IF;
        RETURN QUERY
        SELECT o.seq, o.hlc, o.replica, o.kind, o.node, o.parent, o.key, o.field::text, o.value,
               o.known_seq,
               (CASE WHEN o.replica = -9223372036854775808 THEN 'r' ELSE 'n' END)::"char"
        FROM ops o
        WHERE o.space = v_space AND o.seq > old_head
        ORDER BY o.seq;
        RETURN;
    END IF;

    -- Known targets: a move's parent and a set's node must be ROOT, TRASH,
    -- in the tree, or moved by an earlier op of the batch. One sorted pass
    -- finds the targets no earlier op moves (a join here can be planned as
    -- a quadratic loop); one index scan with the sorted, distinct ids
    -- counts those in the tree; only if some is missing do we look for the
    -- first one, to name it.
    SELECT array_agg(DISTINCT t.id) INTO targets
    FROM (
        SELECT x.id, x.is_target,
               bool_or(NOT x.is_target) OVER (
                   PARTITION BY x.id ORDER BY x.ord, x.is_target DESC
                   ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) AS moved_before
        FROM (
            SELECT CASE WHEN u.kind = 'm' THEN u.parent ELSE u.node END AS id, u.ord,
                   true AS is_target
            FROM unnest(p_kind, p_node, p_parent) WITH ORDINALITY AS u (kind, node, parent, ord)
            UNION ALL
            SELECT u.node, u.ord, false
            FROM unnest(p_kind, p_node) WITH ORDINALITY AS u (kind, node, ord)
            WHERE u.kind = 'm'
        ) x
    ) t
    WHERE t.is_target AND NOT coalesce(t.moved_before, false)
      AND t.id NOT IN ('00000000-0000-0000-0000-000000000000',
                       'ffffffff-ffff-ffff-ffff-ffffffffffff');
    IF coalesce(array_length(targets, 1), 0)
       <> (SELECT count(*) FROM nodes n WHERE n.space = v_space AND n.id = ANY (targets)) THEN
        SELECT t.ord INTO bad
        FROM unnest(p_kind, p_node, p_parent) WITH ORDINALITY AS t (kind, node, parent, ord)
        WHERE CASE WHEN t.kind = 'm' THEN t.parent ELSE t.node END = ANY (targets)
          AND NOT EXISTS (SELECT 1 FROM nodes n WHERE n.space = v_space
                            AND n.id = CASE WHEN t.kind = 'm' THEN t.parent ELSE t.node END)
        ORDER BY t.ord LIMIT 1;
        RAISE EXCEPTION 'unknown_node: op % names a node that is not in the tree', bad.ord - 1
            USING ERRCODE = 'AR008';
    END IF;

    -- Idempotency, in one pass over the batch joined to stored stamps: an op
    -- already stored keeps its seq (other content under its stamp is
    -- refused); the rest, one per stamp and sorted by stamp, are new.
    -- (The subquery is presorted so that each ordered aggregate's sort is
    -- a pass over sorted input.)
    SELECT array_agg(b.hlc ORDER BY b.hlc, b.rep) FILTER (WHERE b.fresh),
           array_agg(b.rep ORDER BY b.hlc, b.rep) FILTER (WHERE b.fresh),
           array_agg(b.kind ORDER BY b.hlc, b.rep) FILTER (WHERE b.fresh),
           array_agg(b.node ORDER BY b.hlc, b.rep) FILTER (WHERE b.fresh),
           array_agg(b.parent ORDER BY b.hlc, b.rep) FILTER (WHERE b.fresh),
           array_agg(b.key ORDER BY b.hlc, b.rep) FILTER (WHERE b.fresh),
           array_agg(b.field ORDER BY b.hlc, b.rep) FILTER (WHERE b.fresh),
           array_agg(b.value ORDER BY b.hlc, b.rep) FILTER (WHERE b.fresh),
           array_agg(b.known ORDER BY b.hlc, b.rep) FILTER (WHERE b.fresh),
           count(*) FILTER (WHERE b.fresh),
           array_agg(b.old_seq) FILTER (WHERE b.old_seq IS NOT NULL AND b.first),
           coalesce(bool_or(b.old_seq IS NOT NULL AND b.changed), false),
           coalesce(bool_or(NOT b.first), false),
           min(b.ord) FILTER (WHERE b.old_seq IS NOT NULL AND b.changed),
           min(b.ord) FILTER (WHERE b.fresh AND sp.horizon_hlc IS NOT NULL
                              AND (b.hlc, b.rep) <= (sp.horizon_hlc, sp.horizon_replica))
    INTO n_hlc, n_rep, n_kind, n_node, n_parent, n_key, n_field, n_value, n_known, n_count,
         dup_seqs, stored_conflict, batch_dups, conflict_ord, stale_ord
    FROM (
        SELECT t.*, o.seq AS old_seq,
               ROW(o.kind, o.node, o.parent, o.key, o.field, o.value, o.known_seq)
                   IS DISTINCT FROM ROW(t.kind, t.node, t.parent, t.key, t.field, t.value, t.known)
                   AS changed,
               t.first_of_stamp AS first,
               t.first_of_stamp AND o.seq IS NULL AS fresh
        FROM (
            SELECT u.*, row_number() OVER (PARTITION BY u.hlc, u.rep ORDER BY u.ord) = 1
                            AS first_of_stamp
            FROM unnest(p_hlc, p_replica, p_kind, p_node, p_parent, p_key, p_field, p_value,
                        p_known_seq) WITH ORDINALITY
                 AS u (hlc, rep, kind, node, parent, key, field, value, known, ord)
        ) t
        -- Stamps above the space's clock cannot be stored: no probe.
        LEFT JOIN LATERAL (
            SELECT * FROM ops o
            WHERE t.hlc <= sp.clock_hlc
              AND o.space = v_space AND o.hlc = t.hlc AND o.replica = t.rep
        ) o ON true
        ORDER BY t.hlc, t.rep
    ) b;
    IF stored_conflict THEN
        RAISE EXCEPTION 'stamp_conflict: op % reuses the stamp of a stored op with other content',
            conflict_ord - 1 USING ERRCODE = 'AR009';
    END IF;
    IF batch_dups THEN
        SELECT max(t.ord) AS ord INTO bad
        FROM unnest(p_hlc, p_replica, p_kind, p_node, p_parent, p_key, p_field, p_value,
                    p_known_seq) WITH ORDINALITY
             AS t (hlc, rep, kind, node, parent, key, field, value, known, ord)
        GROUP BY t.hlc, t.rep
        HAVING count(DISTINCT ROW(t.kind, t.node, t.parent, t.key, t.field, t.value, t.known)) > 1
        ORDER BY 1 LIMIT 1;
        IF FOUND THEN
            RAISE EXCEPTION 'stamp_conflict: op % shares its stamp with another op of the batch',
                bad.ord - 1 USING ERRCODE = 'AR009';
        END IF;
    END IF;
    -- Stale: only new ops (a re-push of stored ops keeps getting their seqs
    -- after the horizon passed them, instead of being re-stamped and
    -- applied twice).
    IF stale_ord IS NOT NULL THEN
        RAISE EXCEPTION 'stale: op % is at or below the horizon; re-stamp and retry',
            stale_ord - 1 USING ERRCODE = 'AR005';
    END IF;
    n_seq := ARRAY(SELECT old_head + g FROM generate_series(1, n_count) AS g);

    IF n_count > 0 THEN
        -- Moves: in-order batches are done directly; otherwise one undo down
        -- to the lowest new move and one merged redo.
        SELECT t.hlc, t.rep INTO lo
        FROM unnest(n_hlc, n_rep, n_kind) WITH ORDINALITY AS t (hlc, rep, kind, ord)
        WHERE t.kind = 'm' ORDER BY t.ord LIMIT 1;
        IF FOUND THEN
            in_order := sp.log_hlc IS NULL OR (lo.hlc, lo.rep) > (sp.log_hlc, sp.log_replica);
            -- One new move older than the log's newest: placed without undo
            -- and redo when no newer move can change outcome.
            IF NOT in_order
               AND (SELECT count(*) FROM unnest(n_kind) AS k WHERE k = 'm') = 1 THEN
                SELECT t.seq, t.node, t.parent, t.key INTO past
                FROM unnest(n_seq, n_kind, n_node, n_parent, n_key)
                     AS t (seq, kind, node, parent, key)
                WHERE t.kind = 'm';
                SELECT * INTO past_fx
                FROM arbor_past_move(v_space, lo.hlc, lo.rep, past.node, past.parent, past.key);
                IF past_fx.applied IS NOT NULL THEN
                    past_done := true;
                    s_seq := ARRAY[past.seq];
                    r_app := ARRAY[past_fx.applied];
                    r_pp := ARRAY[past_fx.prev_parent];
                    r_pk := ARRAY[past_fx.prev_key];
                END IF;
            END IF;
            IF NOT in_order AND NOT past_done THEN
                -- Undo, newest first, collapses per node to the previous place
                -- recorded by its oldest undone applied move.
                WITH u AS (
                    SELECT DISTINCT ON (o.node) o.node, o.prev_parent, o.prev_key
                    FROM ops o
                    WHERE o.space = v_space AND o.kind = 'm' AND o.applied
                      AND (o.hlc, o.replica) > (lo.hlc, lo.rep)
                    ORDER BY o.node, o.hlc, o.replica
                ), del AS (
                    DELETE FROM nodes x USING u
                    WHERE u.prev_parent IS NULL AND x.space = v_space AND x.id = u.node
                )
                UPDATE nodes x SET parent = u.prev_parent, key = u.prev_key
                FROM u WHERE u.prev_parent IS NOT NULL AND x.space = v_space AND x.id = u.node;
            END IF;
            IF past_done THEN
                NULL;
            ELSIF in_order THEN
                -- The new moves alone, already in stamp order.
                SELECT array_agg(t.seq ORDER BY t.ord), array_agg(t.node ORDER BY t.ord),
                       array_agg(t.parent ORDER BY t.ord), array_agg(t.key ORDER BY t.ord)
                INTO s_seq, s_node, s_parent, s_key
                FROM unnest(n_seq, n_kind, n_node, n_parent, n_key) WITH ORDINALITY
                     AS t (seq, kind, node, parent, key, ord)
                WHERE t.kind = 'm';
            ELSE
                SELECT array_agg(m.seq ORDER BY m.hlc, m.rep), array_agg(m.node ORDER BY m.hlc, m.rep),
                       array_agg(m.parent ORDER BY m.hlc, m.rep), array_agg(m.key ORDER BY m.hlc, m.rep)
                INTO s_seq, s_node, s_parent, s_key
                FROM (
                    SELECT o.seq, o.hlc, o.replica AS rep, o.node, o.parent, o.key FROM ops o
                    WHERE o.space = v_space AND o.kind = 'm' AND (o.hlc, o.replica) > (lo.hlc, lo.rep)
                    UNION ALL
                    SELECT t.seq, t.hlc, t.rep, t.node, t.parent, t.key
                    FROM unnest(n_seq, n_hlc, n_rep, n_kind, n_node, n_parent, n_key)
                         AS t (seq, hlc, rep, kind, node, parent, key)
                    WHERE t.kind = 'm'
                ) m;
            END IF;
            IF NOT past_done THEN
                s_len := array_length(s_seq, 1);
                -- A move is simple when it cannot close a cycle, so it needs no
                -- ancestor walk and can be done set-based:
                -- - its node has no children now and is no earlier move's parent
                --   in the sequence (no children at its turn; this covers every
                --   create, even of a node later moves of the batch use as their
                --   parent), or
                -- - it is the node's first move in the sequence and keeps the
                --   node's stored parent (a reorder).
                -- It also keeps each move's stored place (the previous place of
                -- a node's first move in the sequence), so runs need not read it.
                -- (Sorted passes rather than joins between unnests: a cached
                -- generic plan guesses ten rows per unnest and could pick a
                -- quadratic loop.) Per move row: was its node some move's parent
                -- at or before it, and is this the node's first move?
                SELECT array_agg(
                           t.node <> t.parent
                           AND (t.first_move AND coalesce(cur.parent = t.parent, false)
                                OR NOT t.parent_before
                                   AND NOT EXISTS (SELECT 1 FROM nodes c
                                                   WHERE c.space = v_space AND c.parent = t.node))
                           ORDER BY t.idx),
                       array_agg(t.first_move ORDER BY t.idx),
                       array_agg(cur.parent ORDER BY t.idx),
                       array_agg(cur.key ORDER BY t.idx)
                INTO s_simple, s_first, s_cur_parent, s_cur_key
                FROM (
                    SELECT r.node, r.parent, r.idx, r.is_parent,
                           coalesce(bool_or(r.is_parent) OVER w, false) AS parent_before,
                           NOT coalesce(bool_or(NOT r.is_parent) OVER w, false) AS first_move
                    FROM (
                        SELECT q.node AS id, q.node, q.parent, q.idx, false AS is_parent
                        FROM unnest(s_node, s_parent) WITH ORDINALITY AS q (node, parent, idx)
                        UNION ALL
                        SELECT q.parent, NULL, NULL, q.idx, true
                        FROM unnest(s_parent) WITH ORDINALITY AS q (parent, idx)
                    ) r
                    WINDOW w AS (PARTITION BY r.id ORDER BY r.idx, r.is_parent DESC
                                 ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING)
                ) t
                LEFT JOIN nodes cur ON cur.space = v_space AND cur.id = t.node
                WHERE NOT t.is_parent;

                -- The other moves need the cycle check at their turn. Walk up
                -- from all their parents at once in the state before the
                -- sequence: if no node on a move's walk is moved earlier in the
                -- sequence (applied or not), its ancestors at its turn are the
                -- ones walked, so the walk's answer is the answer at its turn,
                -- whatever the other moves do. Such a move is then simple or
                -- skipped; only the others need the move-by-move pass.
                s_skip := array_fill(false, ARRAY[s_len]);
                IF false = ANY (s_simple) THEN
                    WITH RECURSIVE up (k, x, id) AS (
                        SELECT t.idx, t.node, t.parent
                        FROM unnest(s_node, s_parent, s_simple) WITH ORDINALITY
                             AS t (node, parent, simple, idx)
                        WHERE NOT t.simple
                        UNION
                        SELECT up.k, up.x, n.parent FROM up
                        JOIN nodes n ON n.space = v_space AND n.id = up.id
                        WHERE up.id <> up.x
                    ), marks AS (
                        SELECT m.k, m.x, m.id, m.is_move,
                               bool_or(m.is_move) OVER (
                                   PARTITION BY m.id ORDER BY m.pos, m.is_move
                                   ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) AS moved_before
                        FROM (
                            SELECT up.k, up.x, up.id, up.k AS pos, false AS is_move FROM up
                            UNION ALL
                            SELECT NULL, NULL, q.node, q.idx, true
                            FROM unnest(s_node) WITH ORDINALITY AS q (node, idx)
                        ) m
                    )
                    SELECT array_agg(g.k), array_agg(g.cycle), array_agg(g.safe)
                    INTO walk_idx, walk_cycle, walk_safe
                    FROM (
                        SELECT marks.k, bool_or(marks.id = marks.x) AS cycle,
                               bool_and(NOT coalesce(marks.moved_before, false)) AS safe
                        FROM marks WHERE NOT marks.is_move GROUP BY marks.k
                    ) g;
                    FOR wk IN 1 .. coalesce(array_length(walk_idx, 1), 0) LOOP
                        IF walk_safe[wk] THEN
                            IF walk_cycle[wk] THEN
                                s_skip[walk_idx[wk]] := true;
                            ELSE
                                s_simple[walk_idx[wk]] := true;
                            END IF;
                        END IF;
                    END LOOP;
                END IF;

                i := 1;
                WHILE i <= s_len LOOP
                    IF s_skip[i] THEN
                        r_app := r_app || false;
                        r_pp := r_pp || NULL::uuid;
                        r_pk := r_pk || NULL::bytea;
                        i := i + 1;
                    ELSIF s_simple[i] THEN
                        -- A run of simple moves, set-based: each takes the place
                        -- its predecessor in the run gave the node, or the stored
                        -- one; the node ends at its last move of the run.
                        j := i;
                        WHILE j < s_len AND s_simple[j + 1] LOOP
                            j := j + 1;
                        END LOOP;
                        -- (A node's stored place is read only when an earlier
                        -- run or single move of the sequence changed it.)
                        WITH t AS (
                            SELECT * FROM unnest(s_node[i:j], s_parent[i:j], s_key[i:j], s_first[i:j],
                                                 s_cur_parent[i:j], s_cur_key[i:j])
                                     WITH ORDINALITY AS t (node, parent, key, first, cp, ck, idx)
                        ), p AS (
                            SELECT t.idx, t.node, t.parent, t.key,
                                   CASE WHEN row_number() OVER w > 1 THEN lag(t.parent) OVER w
                                        WHEN t.first THEN t.cp
                                        ELSE (SELECT x.parent FROM nodes x
                                              WHERE x.space = v_space AND x.id = t.node) END AS pp,
                                   CASE WHEN row_number() OVER w > 1 THEN lag(t.key) OVER w
                                        WHEN t.first THEN t.ck
                                        ELSE (SELECT x.key FROM nodes x
                                              WHERE x.space = v_space AND x.id = t.node) END AS pk,
                                   lead(t.idx) OVER w IS NULL AS last,
                                   -- Not in the tree at the run's start: insert.
                                   first_value(CASE WHEN t.first THEN t.cp
                                                    ELSE (SELECT x.parent FROM nodes x
                                                          WHERE x.space = v_space AND x.id = t.node)
                                               END) OVER w IS NULL AS fresh
                            FROM t
                            WINDOW w AS (PARTITION BY t.node ORDER BY t.idx)
                        ), moved AS (
                            UPDATE nodes x SET parent = p.parent, key = p.key
                            FROM p WHERE p.last AND NOT p.fresh AND x.space = v_space AND x.id = p.node
                        ), created AS (
                            INSERT INTO nodes (space, id, parent, key)
                            SELECT v_space, p.node, p.parent, p.key FROM p WHERE p.last AND p.fresh
                        )
                        SELECT array_agg(p.pp ORDER BY p.idx), array_agg(p.pk ORDER BY p.idx)
                        INTO run_pp, run_pk FROM p;
                        r_app := r_app || array_fill(true, ARRAY[j - i + 1]);
                        r_pp := r_pp || run_pp;
                        r_pk := r_pk || run_pk;
                        i := j + 1;
                    ELSE
                        -- arbor_do_move, inlined (a call costs as much as the walk).
                        SELECT x.parent, x.key INTO one_pp, one_pk
                        FROM nodes x WHERE x.space = v_space AND x.id = s_node[i];
                        IF s_node[i] = s_parent[i]
                           OR (one_pp IS DISTINCT FROM s_parent[i]
                               AND EXISTS (SELECT 1 FROM nodes c
                                           WHERE c.space = v_space AND c.parent = s_node[i])
                               AND EXISTS (
                                   WITH RECURSIVE up (id) AS (
                                       SELECT s_parent[i]
                                       UNION
                                       SELECT x.parent FROM up
                                       JOIN nodes x ON x.space = v_space AND x.id = up.id
                                       WHERE up.id <> s_node[i]
                                   )
                                   SELECT 1 FROM up WHERE up.id = s_node[i])) THEN
                            r_app := r_app || false;
                            r_pp := r_pp || NULL::uuid;
                            r_pk := r_pk || NULL::bytea;
                        ELSE
                            INSERT INTO nodes AS x (space, id, parent, key)
                            VALUES (v_space, s_node[i], s_parent[i], s_key[i])
                            ON CONFLICT (space, id)
                            DO UPDATE SET parent = EXCLUDED.parent, key = EXCLUDED.key;
                            r_app := r_app || true;
                            r_pp := r_pp || one_pp;
                            r_pk := r_pk || one_pk;
                        END IF;
                        i := i + 1;
                    END IF;
                END LOOP;

                IF NOT in_order THEN
                    -- Redone log entries whose effect changed.
                    UPDATE ops o SET applied = e.app, prev_parent = e.pp, prev_key = e.pk
                    FROM unnest(s_seq, r_app, r_pp, r_pk) AS e (seq, app, pp, pk)
                    WHERE o.space = v_space AND o.seq = e.seq AND e.seq <= old_head
                      AND ROW(o.applied, o.prev_parent, o.prev_key)
                          IS DISTINCT FROM ROW(e.app, e.pp, e.pk);
                END IF;
            END IF;
        END IF;

        -- The new moves' effects in seq order, which is their order in n_*:
        -- the k-th move of n_* takes the k-th effect (no join, see above).
        SELECT array_agg(e.app ORDER BY e.seq), array_agg(e.pp ORDER BY e.seq),
               array_agg(e.pk ORDER BY e.seq)
        INTO m_app, m_pp, m_pk
        FROM unnest(s_seq, r_app, r_pp, r_pk) AS e (seq, app, pp, pk)
        WHERE e.seq > old_head;
        INSERT INTO ops (space, seq, hlc, replica, kind, node, parent, key, field, value,
                         known_seq, applied, prev_parent, prev_key)
        SELECT v_space, t.seq, t.hlc, t.rep, t.kind, t.node, t.parent, t.key, t.field, t.value,
               t.known,
               CASE WHEN t.kind = 'm' THEN m_app[t.k] END,
               CASE WHEN t.kind = 'm' THEN m_pp[t.k] END,
               CASE WHEN t.kind = 'm' THEN m_pk[t.k] END
        FROM (
            SELECT u.*, count(*) FILTER (WHERE u.kind = 'm') OVER (ORDER BY u.ord) AS k
            FROM unnest(n_seq, n_hlc, n_rep, n_kind, n_node, n_parent, n_key, n_field, n_value,
                        n_known) WITH ORDINALITY
                 AS u (seq, hlc, rep, kind, node, parent, key, field, value, known, ord)
        ) t;

        -- Sets: last writer wins per (node, field); never undone.
        IF 's' = ANY (n_kind) THEN
        INSERT INTO payloads AS y (space, node, field, value, hlc, replica)
        SELECT DISTINCT ON (t.node, t.field) v_space, t.node, t.field, t.value, t.hlc, t.rep
        FROM unnest(n_hlc, n_rep, n_kind, n_node, n_field, n_value)
             AS t (hlc, rep, kind, node, field, value)
        WHERE t.kind = 's'
        ORDER BY t.node, t.field, t.hlc DESC, t.rep DESC
        ON CONFLICT (space, node, field) DO UPDATE
        SET value = EXCLUDED.value, hlc = EXCLUDED.hlc, replica = EXCLUDED.replica
        WHERE (y.hlc, y.replica) < (EXCLUDED.hlc, EXCLUDED.replica);
        END IF;

        UPDATE spaces s SET
            head_seq = old_head + n_count,
            clock_hlc = greatest(s.clock_hlc, (SELECT max(h) FROM unnest(n_hlc) AS h)),
            (log_hlc, log_replica) = (
                SELECT m.hlc, m.rep FROM (
                    SELECT s.log_hlc AS hlc, s.log_replica AS rep WHERE s.log_hlc IS NOT NULL
                    UNION ALL
                    SELECT t.hlc, t.rep FROM unnest(n_hlc, n_rep, n_kind) AS t (hlc, rep, kind)
                    WHERE t.kind = 'm'
                ) m ORDER BY m.hlc DESC, m.rep DESC LIMIT 1)
        WHERE s.id = v_space;

        -- The restore rule needs a delete committed after some new op's
        -- known_seq (the batch's own deletes included): usually none.
        IF EXISTS (SELECT 1 FROM ops o
                   WHERE o.space = v_space AND o.kind = 'm'
                     AND o.parent = 'ffffffff-ffff-ffff-ffff-ffffffffffff'
                     AND o.seq > (SELECT min(k) FROM unnest(n_known) AS k)) THEN
            LOOP
                EXIT WHEN arbor_restore_pass(v_space, old_head) = 0;
            END LOOP;
        END IF;
    END IF;

    RETURN QUERY
    SELECT o.seq, o.hlc, o.replica, o.kind, o.node, o.parent, o.key, o.field::text, o.value,
           o.known_seq,
           (CASE WHEN o.seq <= old_head THEN 'd'
                 WHEN o.replica = -9223372036854775808 THEN 'r'
                 ELSE 'n' END)::"char"
    FROM ops o
    WHERE o.space = v_space AND (o.seq > old_head OR o.seq = ANY (dup_seqs))
    ORDER BY o.seq;
END $$;
