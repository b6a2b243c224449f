-- arbor_past_move, exact in more cases: instead of declining as soon as a
-- node on one of the two ancestor chains moved between the new move's
-- stamp and its node's next move, it follows those chain moves in stamp
-- order and declines only when one of them could have another outcome
-- with the new move than without it. Contract: migrations/README.md ("A
-- move from the past").

-- A node's parent just before the stamp (s_hlc, s_rep), in the state in
-- which the move stamped so was done: the previous place recorded by its
-- first applied move at or after the stamp, else its parent now. NULL: not
-- in the tree then.
CREATE FUNCTION arbor_parent_before(p_space bigint, p_node uuid, s_hlc bigint, s_rep bigint)
RETURNS uuid LANGUAGE plpgsql STABLE AS $$
DECLARE
    r uuid;
BEGIN
    SELECT o.prev_parent INTO r FROM ops o
    WHERE o.space = p_space AND o.kind = 'm' AND o.node = p_node AND o.applied
      AND (o.hlc, o.replica) >= (s_hlc, s_rep)
    ORDER BY o.hlc, o.replica LIMIT 1;
    IF FOUND THEN
        RETURN r;
    END IF;
    RETURN (SELECT n.parent FROM nodes n WHERE n.space = p_space AND n.id = p_node);
END $$;

-- The chain of p_from (itself and its ancestors, ROOT and TRASH left out)
-- just after the stamp (s_hlc, s_rep). AR014 past p_bound steps.
CREATE FUNCTION arbor_chain_after(
    p_space bigint, p_from uuid, s_hlc bigint, s_rep bigint, p_bound bigint)
RETURNS uuid[] LANGUAGE plpgsql STABLE AS $$
DECLARE
    x uuid := p_from;
    chain uuid[] := '{}';
BEGIN
    WHILE x IS NOT NULL AND x NOT IN ('00000000-0000-0000-0000-000000000000',
                                     'ffffffff-ffff-ffff-ffff-ffffffffffff') LOOP
        chain := chain || x;
        IF cardinality(chain) > p_bound THEN
            RAISE EXCEPTION 'corrupt: the parent links at a past stamp form a cycle'
                USING ERRCODE = 'AR014';
        END IF;
        x := arbor_parent_at(p_space, x, s_hlc, s_rep);
    END LOOP;
    RETURN chain;
END $$;

-- Whether the move of p_x under p_y stamped (s_hlc, s_rep) is skipped as a
-- cycle (p_x is p_y or above it) in the state just before it, with
-- p_node's parent taken as p_node_parent when that is not NULL.
CREATE FUNCTION arbor_skips_before(
    p_space bigint, p_x uuid, p_y uuid, s_hlc bigint, s_rep bigint,
    p_node uuid, p_node_parent uuid, p_bound bigint)
RETURNS boolean LANGUAGE plpgsql STABLE AS $$
DECLARE
    z uuid := p_y;
    steps bigint := 0;
BEGIN
    WHILE z IS NOT NULL AND z NOT IN ('00000000-0000-0000-0000-000000000000',
                                     'ffffffff-ffff-ffff-ffff-ffffffffffff') LOOP
        IF z = p_x THEN
            RETURN true;
        END IF;
        steps := steps + 1;
        IF steps > p_bound THEN
            RAISE EXCEPTION 'corrupt: the parent links at a past stamp form a cycle'
                USING ERRCODE = 'AR014';
        END IF;
        z := CASE WHEN z = p_node AND p_node_parent IS NOT NULL THEN p_node_parent
                  ELSE arbor_parent_before(p_space, z, s_hlc, s_rep) END;
    END LOOP;
    RETURN false;
END $$;

-- See 0009 for the argument. The two chains (p_parent's, and that of
-- p_node's parent before the stamp) change only when one of their nodes
-- moves; a move of a node not on them cannot change outcome. So the moves
-- of chain nodes in the window are visited in stamp order: each must be
-- skipped, or not, alike with p_node under p_parent and under its old
-- parent; after each the chains are walked again. Past 1,000 such moves it
-- declines (the undo and redo is then the cheaper bound).
CREATE OR REPLACE FUNCTION arbor_past_move(
    p_space bigint, t_hlc bigint, t_rep bigint, p_node uuid, p_parent uuid, p_key bytea,
    OUT applied boolean, OUT prev_parent uuid, OUT prev_key bytea)
LANGUAGE plpgsql AS $$
DECLARE
    t1 record;
    nxt record;
    x uuid;
    steps bigint := 0;
    bound bigint;
    cur_hlc bigint := t_hlc;
    cur_rep bigint := t_rep;
    chain uuid[];
    visited int := 0;
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
    -- The new move's own cycle check, at its stamp.
    x := p_parent;
    WHILE x IS NOT NULL AND x NOT IN ('00000000-0000-0000-0000-000000000000',
                                     'ffffffff-ffff-ffff-ffff-ffffffffffff') LOOP
        IF x = p_node THEN
            applied := false;
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
    LOOP
        chain := arbor_chain_after(p_space, p_parent, cur_hlc, cur_rep, bound)
                 || arbor_chain_after(p_space, prev_parent, cur_hlc, cur_rep, bound);
        SELECT m.hlc, m.replica, m.node, m.parent INTO nxt
        FROM unnest(chain) AS c (id)
        CROSS JOIN LATERAL (
            SELECT o.hlc, o.replica, o.node, o.parent FROM ops o
            WHERE o.space = p_space AND o.kind = 'm' AND o.node = c.id
              AND (o.hlc, o.replica) > (cur_hlc, cur_rep)
              AND (t1.seq IS NULL OR (o.hlc, o.replica) < (t1.hlc, t1.replica))
            ORDER BY o.hlc, o.replica LIMIT 1
        ) m
        ORDER BY m.hlc, m.replica LIMIT 1;
        EXIT WHEN NOT FOUND;
        visited := visited + 1;
        IF visited > 1000
           OR arbor_skips_before(p_space, nxt.node, nxt.parent, nxt.hlc, nxt.replica,
                                 p_node, NULL, bound)
              IS DISTINCT FROM
              arbor_skips_before(p_space, nxt.node, nxt.parent, nxt.hlc, nxt.replica,
                                 p_node, p_parent, bound) THEN
            applied := NULL;
            prev_parent := NULL;
            prev_key := NULL;
            RETURN;
        END IF;
        cur_hlc := nxt.hlc;
        cur_rep := nxt.replica;
    END LOOP;
    applied := true;
    IF t1.seq IS NOT NULL THEN
        UPDATE ops o SET prev_parent = p_parent, prev_key = p_key
        WHERE o.space = p_space AND o.seq = t1.seq;
    ELSE
        INSERT INTO nodes AS n (space, id, parent, key) VALUES (p_space, p_node, p_parent, p_key)
        ON CONFLICT (space, id) DO UPDATE SET parent = EXCLUDED.parent, key = EXCLUDED.key;
    END IF;
END $$;
