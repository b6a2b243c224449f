-- The restore rule, corrected in two places, and the ancestor walk that
-- reports a corrupt tree. Contract: migrations/README.md.
--
-- 1. Two concurrent deletes of one node x: the later one (in stamp order)
--    moves x from TRASH to TRASH and records TRASH as x's previous place.
--    0002's chain restored from the newest delete's record, found TRASH,
--    and sent x to the end of ROOT's children (a key that depended on
--    which delete arrived first). Now x returns to its place before the
--    first delete of the run, which redo makes the same for every arrival
--    order.
-- 2. A set that had lost to a newer value the deleter had seen changed
--    nothing the deleter did not know; it no longer restores.
-- 3. arbor_is_ancestor raises AR014 when the walk meets a cycle of parent
--    links (a damaged or hand-edited database) instead of answering false.

-- True when the write `a_seq` still counts against a delete that knew
-- `d_known` and was made by `d_replica`: false for a set whose register now
-- holds a newer value the deleter knew (committed at or below `d_known`,
-- or its own). Moves always count (where a move landed is judged by its
-- target; see migrations/README.md).
CREATE FUNCTION arbor_write_counts(
    p_space bigint, a_seq bigint, d_known bigint, d_replica bigint)
RETURNS boolean LANGUAGE plpgsql STABLE AS $$
DECLARE
    w record;
BEGIN
    SELECT wo.seq, wo.replica INTO w
    FROM ops a
    JOIN payloads p ON p.space = a.space AND p.node = a.node AND p.field = a.field
    JOIN ops wo ON wo.space = p.space AND wo.hlc = p.hlc AND wo.replica = p.replica
    WHERE a.space = p_space AND a.seq = a_seq AND a.kind = 's'
      AND (p.hlc, p.replica) > (a.hlc, a.replica);
    RETURN NOT FOUND OR NOT (w.seq <= d_known OR w.replica = d_replica);
END $$;

-- Where the write (a_seq, a_known, a_replica) restores `p_x` to, if it
-- does: `cause_seq` is x's newest applied delete (the restore's cause) and
-- (place_parent, place_key) x's place before the first delete of the run
-- that put it in the trash (each delete after the first moved it from TRASH
-- to TRASH). Every delete of the run must be concurrent with the write
-- (else the writer knew x was deleted) and by another replica, and the
-- write must count against it. All NULL: no restore.
CREATE FUNCTION arbor_restore_place(
    p_space bigint, p_x uuid, a_seq bigint, a_known bigint, a_replica bigint,
    OUT cause_seq bigint, OUT place_parent uuid, OUT place_key bytea)
LANGUAGE plpgsql STABLE AS $$
DECLARE
    e record;
    newest bigint;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM nodes n WHERE n.space = p_space AND n.id = p_x
                     AND n.parent = 'ffffffff-ffff-ffff-ffff-ffffffffffff') THEN
        RETURN;
    END IF;
    SELECT o.seq, o.hlc, o.replica, o.known_seq, o.prev_parent, o.prev_key INTO e
    FROM ops o
    WHERE o.space = p_space AND o.kind = 'm' AND o.node = p_x
      AND o.parent = 'ffffffff-ffff-ffff-ffff-ffffffffffff' AND o.applied
    ORDER BY o.hlc DESC, o.replica DESC LIMIT 1;
    IF NOT FOUND
       OR EXISTS (SELECT 1 FROM restores r WHERE r.space = p_space AND r.cause_seq = e.seq) THEN
        RETURN;
    END IF;
    newest := e.seq;
    LOOP
        IF e.replica = a_replica OR NOT (a_seq > e.known_seq AND e.seq > a_known)
           OR NOT arbor_write_counts(p_space, a_seq, e.known_seq, e.replica) THEN
            RETURN;
        END IF;
        EXIT WHEN e.prev_parent IS DISTINCT FROM 'ffffffff-ffff-ffff-ffff-ffffffffffff';
        -- x was already in the trash: the delete before this one put it there.
        SELECT o.seq, o.hlc, o.replica, o.known_seq, o.prev_parent, o.prev_key INTO e
        FROM ops o
        WHERE o.space = p_space AND o.kind = 'm' AND o.node = p_x
          AND o.parent = 'ffffffff-ffff-ffff-ffff-ffffffffffff' AND o.applied
          AND (o.hlc, o.replica) < (e.hlc, e.replica)
        ORDER BY o.hlc DESC, o.replica DESC LIMIT 1;
        IF NOT FOUND THEN
            RETURN;
        END IF;
    END LOOP;
    IF e.prev_parent IS NULL THEN
        RETURN; -- created in the trash: no place to return to
    END IF;
    cause_seq := newest;
    place_parent := e.prev_parent;
    place_key := e.prev_key;
END $$;

-- Restores `p_x` and, upward, the deleted places it returns to, for the
-- concurrent write (a_seq, a_known, a_replica).
CREATE OR REPLACE FUNCTION arbor_restore_chain(
    p_space bigint, p_x uuid, a_seq bigint, a_known bigint, a_replica bigint)
RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
    appended integer := 0;
    x uuid := p_x;
    pl record;
    res record;
    p uuid;
    k bytea;
    v_seq bigint;
    v_hlc bigint;
    v_now bigint;
BEGIN
    LOOP
        SELECT * INTO pl FROM arbor_restore_place(p_space, x, a_seq, a_known, a_replica);
        EXIT WHEN pl.cause_seq IS NULL;
        p := pl.place_parent;
        k := pl.place_key;
        IF p <> '00000000-0000-0000-0000-000000000000'
           AND (p = 'ffffffff-ffff-ffff-ffff-ffffffffffff' OR p = x
                OR NOT EXISTS (SELECT 1 FROM nodes n WHERE n.space = p_space AND n.id = p)
                OR arbor_is_ancestor(p_space, x, p)) THEN
            p := '00000000-0000-0000-0000-000000000000';
            k := arbor_key_after((SELECT n.key FROM nodes n
                                  WHERE n.space = p_space
                                    AND n.parent = '00000000-0000-0000-0000-000000000000'
                                  ORDER BY n.key DESC, n.id DESC LIMIT 1));
        END IF;
        v_now := (extract(epoch FROM clock_timestamp()) * 1000)::bigint;
        UPDATE spaces s
        SET head_seq = s.head_seq + 1,
            clock_hlc = greatest(s.clock_hlc + 1, v_now << 16),
            log_hlc = greatest(s.clock_hlc + 1, v_now << 16),
            log_replica = -9223372036854775808
        WHERE s.id = p_space
        RETURNING s.head_seq, s.clock_hlc INTO v_seq, v_hlc;
        SELECT * INTO res FROM arbor_do_move(p_space, x, p, k);
        INSERT INTO ops (space, seq, hlc, replica, kind, node, parent, key, known_seq,
                         applied, prev_parent, prev_key)
        VALUES (p_space, v_seq, v_hlc, -9223372036854775808, 'm', x, p, k, v_seq - 1,
                res.applied, res.prev_parent, res.prev_key);
        INSERT INTO restores (space, cause_seq, trigger_seq, restore_seq)
        VALUES (p_space, pl.cause_seq, a_seq, v_seq);
        appended := appended + 1;
        EXIT WHEN p = '00000000-0000-0000-0000-000000000000';
        x := arbor_trash_root(p_space, p);
        EXIT WHEN x IS NULL;
    END LOOP;
    RETURN appended;
END $$;

-- 0006's pass, pairing each delete with its first write that restores
-- (arbor_restore_place), not merely its first concurrent one.
CREATE OR REPLACE FUNCTION arbor_restore_pass(p_space bigint, old_head bigint) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    min_known bigint;
    w_lower bigint;
    lower bigint;
    d record;
    a record;
    a_seq bigint;
    a_known bigint;
    a_replica bigint;
    appended bigint := 0;
    v_head bigint;
BEGIN
    SELECT s.head_seq INTO v_head FROM spaces s WHERE s.id = p_space;
    SELECT min(o.known_seq) INTO min_known FROM ops o
    WHERE o.space = p_space AND o.seq > old_head;
    IF min_known IS NULL THEN
        RETURN 0;
    END IF;
    SELECT least(old_head, min(o.known_seq)) INTO w_lower FROM ops o
    WHERE o.space = p_space AND o.seq > old_head AND o.kind = 'm'
      AND o.parent = 'ffffffff-ffff-ffff-ffff-ffffffffffff' AND o.applied;
    w_lower := coalesce(w_lower, old_head);
    FOR d IN
        WITH RECURSIVE deleted_sub (id, root) AS (
            SELECT o.node, o.node FROM ops o
            JOIN nodes n ON n.space = p_space AND n.id = o.node
                        AND n.parent = 'ffffffff-ffff-ffff-ffff-ffffffffffff'
            WHERE o.space = p_space AND o.seq > old_head AND o.kind = 'm'
              AND o.parent = 'ffffffff-ffff-ffff-ffff-ffffffffffff' AND o.applied
            UNION
            SELECT n.id, s.root FROM deleted_sub s
            JOIN nodes n ON n.space = p_space AND n.parent = s.id
        ), writes AS (
            SELECT o.seq, o.known_seq, o.replica,
                   CASE WHEN o.kind = 'm' THEN o.parent ELSE o.node END AS target
            FROM ops o
            WHERE o.space = p_space AND o.seq > w_lower
              AND NOT (o.kind = 'm' AND o.parent = 'ffffffff-ffff-ffff-ffff-ffffffffffff')
              AND (o.kind = 's' OR o.applied)
        ), pairs (root, a_seq, a_known, a_replica) AS MATERIALIZED (
            SELECT arbor_trash_root(p_space, w.target), w.seq, w.known_seq, w.replica
            FROM writes w WHERE w.seq > old_head
            UNION ALL
            SELECT s.root, w.seq, w.known_seq, w.replica
            FROM writes w JOIN deleted_sub s ON s.id = w.target
            WHERE w.seq <= old_head
        )
        SELECT DISTINCT ON (o.seq) o.seq, o.hlc, o.replica, o.node, o.known_seq,
               p.a_seq, p.a_known, p.a_replica
        FROM pairs p
        JOIN ops o ON o.space = p_space AND o.node = p.root AND o.kind = 'm'
                  AND o.parent = 'ffffffff-ffff-ffff-ffff-ffffffffffff' AND o.applied
        WHERE p.root IS NOT NULL AND o.seq > min_known
          AND p.a_seq > CASE WHEN o.seq > old_head THEN o.known_seq
                             ELSE greatest(o.known_seq, old_head) END
          AND p.a_known < o.seq AND p.a_replica <> o.replica
          AND (arbor_restore_place(p_space, o.node, p.a_seq, p.a_known, p.a_replica)).cause_seq
              IS NOT NULL
        ORDER BY o.seq, p.a_seq
    LOOP
        CONTINUE WHEN NOT EXISTS (
            SELECT 1 FROM nodes n WHERE n.space = p_space AND n.id = d.node
              AND n.parent = 'ffffffff-ffff-ffff-ffff-ffffffffffff');
        CONTINUE WHEN EXISTS (
            SELECT 1 FROM ops o WHERE o.space = p_space AND o.kind = 'm' AND o.node = d.node
              AND o.parent = 'ffffffff-ffff-ffff-ffff-ffffffffffff'
              AND o.applied AND (o.hlc, o.replica) > (d.hlc, d.replica));
        CONTINUE WHEN EXISTS (
            SELECT 1 FROM restores r WHERE r.space = p_space AND r.cause_seq = d.seq);
        IF appended = 0 THEN
            a_seq := d.a_seq;
            a_known := d.a_known;
            a_replica := d.a_replica;
        ELSE
            lower := CASE WHEN d.seq > old_head THEN d.known_seq
                          ELSE greatest(d.known_seq, old_head) END;
            IF v_head - lower <= 2000 THEN
                SELECT o.seq, o.known_seq, o.replica INTO a FROM ops o
                WHERE o.space = p_space
                  AND o.seq > lower AND o.known_seq < d.seq AND o.replica <> d.replica
                  AND NOT (o.kind = 'm' AND o.parent = 'ffffffff-ffff-ffff-ffff-ffffffffffff')
                  AND (o.kind = 's' OR o.applied)
                  AND arbor_trash_root(p_space, CASE WHEN o.kind = 'm' THEN o.parent ELSE o.node END)
                      = d.node
                  AND (arbor_restore_place(p_space, d.node, o.seq, o.known_seq, o.replica)).cause_seq
                      IS NOT NULL
                ORDER BY o.seq LIMIT 1;
            ELSE
                WITH RECURSIVE sub (id) AS (
                    SELECT d.node
                    UNION
                    SELECT n.id FROM sub JOIN nodes n ON n.space = p_space AND n.parent = sub.id
                )
                SELECT o.seq, o.known_seq, o.replica INTO a FROM ops o
                WHERE o.space = p_space
                  AND o.seq > lower AND o.known_seq < d.seq AND o.replica <> d.replica
                  AND NOT (o.kind = 'm' AND o.parent = 'ffffffff-ffff-ffff-ffff-ffffffffffff')
                  AND (o.kind = 's' OR o.applied)
                  AND (CASE WHEN o.kind = 'm' THEN o.parent ELSE o.node END) IN (SELECT sub.id FROM sub)
                  AND (arbor_restore_place(p_space, d.node, o.seq, o.known_seq, o.replica)).cause_seq
                      IS NOT NULL
                ORDER BY o.seq LIMIT 1;
            END IF;
            CONTINUE WHEN NOT FOUND;
            a_seq := a.seq;
            a_known := a.known_seq;
            a_replica := a.replica;
        END IF;
        appended := appended + arbor_restore_chain(p_space, d.node, a_seq, a_known, a_replica);
    END LOOP;
    RETURN appended;
END $$;

-- True if `a` is `b` or an ancestor of `b`. The walk carries each node's
-- parent: it ends at a node whose parent has no row (ROOT, TRASH, or a
-- parent not arrived yet), at `a`, or, in a damaged store, where the parent
-- links close a cycle (UNION drops the repeated row). Only in that last case
-- is every walked row's parent itself walked: AR014 instead of an answer.
CREATE OR REPLACE FUNCTION arbor_is_ancestor(p_space bigint, a uuid, b uuid) RETURNS boolean
LANGUAGE plpgsql STABLE AS $$
DECLARE
    reached boolean;
    closed boolean;
BEGIN
    IF a = b THEN
        RETURN true;
    END IF;
    WITH RECURSIVE up (id, parent) AS (
        SELECT n.id, n.parent FROM nodes n WHERE n.space = p_space AND n.id = b
        UNION
        SELECT n.id, n.parent FROM up JOIN nodes n ON n.space = p_space AND n.id = up.parent
        WHERE up.parent <> a
    )
    SELECT coalesce(bool_or(up.parent = a), false),
           coalesce(bool_and(up.parent IN (SELECT u.id FROM up u)), false)
    INTO reached, closed
    FROM up;
    IF NOT reached AND closed THEN
        RAISE EXCEPTION 'corrupt: the parent links above node % form a cycle', b
            USING ERRCODE = 'AR014';
    END IF;
    RETURN reached;
END $$;
