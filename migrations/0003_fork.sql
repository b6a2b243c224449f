-- Fork: copy a thoughtspace into a new one, server-side, in one statement
-- per table. Contract: migrations/README.md.

-- Creates `p_dst` as a copy of `p_src` (tree, registers, the whole op log
-- with the same seqs, restores, head, clock and horizon) and returns its
-- id. Holds the source's ingest lock, so the copy is one commit point.
-- Errors: AR010 unknown source, AR012 the destination exists.
CREATE FUNCTION fork_space(p_src text, p_dst text) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    src spaces%ROWTYPE;
    dst bigint;
BEGIN
    SELECT * INTO src FROM spaces s WHERE s.name = p_src;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'unknown_space: %', p_src USING ERRCODE = 'AR010';
    END IF;
    PERFORM pg_advisory_xact_lock(src.id);
    SELECT * INTO src FROM spaces s WHERE s.id = src.id;
    INSERT INTO spaces (name, head_seq, log_hlc, log_replica, clock_hlc, horizon_hlc,
                        horizon_replica, max_ahead_ms)
    VALUES (p_dst, src.head_seq, src.log_hlc, src.log_replica, src.clock_hlc, src.horizon_hlc,
            src.horizon_replica, src.max_ahead_ms)
    ON CONFLICT (name) DO NOTHING
    RETURNING id INTO dst;
    IF dst IS NULL THEN
        RAISE EXCEPTION 'space_exists: %', p_dst USING ERRCODE = 'AR012';
    END IF;
    INSERT INTO nodes (space, id, parent, key)
    SELECT dst, n.id, n.parent, n.key FROM nodes n WHERE n.space = src.id;
    INSERT INTO payloads (space, node, field, value, hlc, replica)
    SELECT dst, p.node, p.field, p.value, p.hlc, p.replica FROM payloads p WHERE p.space = src.id;
    INSERT INTO ops (space, seq, hlc, replica, kind, node, parent, key, field, value, known_seq,
                     applied, prev_parent, prev_key)
    SELECT dst, o.seq, o.hlc, o.replica, o.kind, o.node, o.parent, o.key, o.field, o.value,
           o.known_seq, o.applied, o.prev_parent, o.prev_key
    FROM ops o WHERE o.space = src.id;
    INSERT INTO restores (space, cause_seq, trigger_seq, restore_seq)
    SELECT dst, r.cause_seq, r.trigger_seq, r.restore_seq FROM restores r WHERE r.space = src.id;
    RETURN dst;
END $$;
