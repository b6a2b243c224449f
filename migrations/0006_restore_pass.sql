-- The restore rule's pass, with the pairs (delete, concurrent write) found
-- set-based from the batch instead of from every delete of the window.
-- Contract: migrations/README.md.
--
-- Why: 0002's pass looped over every delete committed after the batch's
-- lowest known_seq and, for each, scanned the writes of its window walking
-- up from each one's target: deletes x window x depth. A replica that comes
-- back with a backlog pushes batches whose known_seq lags by thousands of
-- seqs, so each push paid for hundreds of deletes, seconds per push; with
-- faults every few seconds, commits stopped finishing, the backlogs grew
-- and the lag with them (the 30-minute fault soak stalled this way).
--
-- A delete D of x pairs with a write A whose target's trash root (the
-- child of TRASH above it) is x. One of them is new (committed by this
-- call), so every pair is one of:
--   - A new: one walk up from each of the batch's writes names its root;
--   - D new, A older: A's target is in the subtree of a node the batch
--     deleted; those subtrees are listed once and the window of older
--     writes (back to the lowest known_seq of the batch's deletes) is
--     scanned once against them.
-- Then, per delete in seq order, exactly 0002's checks, with the first
-- concurrent write by seq taken from the pairs. The pairs describe the tree
-- as the pass found it, which is the tree until the pass's first restore;
-- after that, a delete's write is searched again as 0002 did. A restore
-- can also make a pair of a delete that had none when the pass began: the
-- caller runs passes until one restores nothing, so the next pass finds
-- it (0002 found it in the same pass when its seq was higher: the same
-- restores, in rare chains appended in another order).
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
    -- Older writes pair only with the batch's own deletes, and only after
    -- their lowest known_seq.
    SELECT least(old_head, min(o.known_seq)) INTO w_lower FROM ops o
    WHERE o.space = p_space AND o.seq > old_head AND o.kind = 'm'
      AND o.parent = 'ffffffff-ffff-ffff-ffff-ffffffffffff' AND o.applied;
    w_lower := coalesce(w_lower, old_head);
    FOR d IN
        WITH RECURSIVE deleted_sub (id, root) AS (
            -- The subtrees of the nodes the batch deleted (still in the
            -- trash right under TRASH, so each is its subtree's trash root).
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
            -- (Materialized: one walk per write, not one per row it meets.)
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
        ORDER BY o.seq, p.a_seq
    LOOP
        -- 0002's checks.
        -- Still in the trash through this very delete, not yet restored.
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
            -- The tree is as the pairs saw it: theirs is the first write.
            a_seq := d.a_seq;
            a_known := d.a_known;
            a_replica := d.a_replica;
        ELSE
            -- A restore of this pass moved nodes: search as 0002 did.
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
