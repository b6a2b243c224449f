-- Who made an op: every replica id of a space belongs to the token subject
-- that first pushed ops stamped with it, and only that subject may push
-- ops stamped with it from then on. Contract: migrations/README.md
-- ("Replica owners").

CREATE TABLE replicas (
    space      bigint      NOT NULL,
    replica    bigint      NOT NULL,
    -- The token subject (`sub`) that owns the replica id in this space.
    sub        text        NOT NULL,
    claimed_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (space, replica)
);

-- apply_ops for a token subject: under the space's ingest lock (taken
-- first, so two pushes claiming replica ids cannot wait on each other),
-- claims the batch's unowned replica ids for p_sub and refuses the batch
-- (AR007) if one belongs to another subject; then apply_ops. Rows as
-- apply_ops's, with each op's owner (`author`: NULL for the server's
-- restores and for replica ids nobody claimed). p_sub NULL: no claim (the
-- server's own callers).
CREATE FUNCTION apply_ops_by(
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
    bad bigint;
BEGIN
    SELECT s.id INTO v_space FROM spaces s WHERE s.name = p_space;
    IF FOUND AND p_sub IS NOT NULL THEN
        PERFORM pg_advisory_xact_lock(v_space);
        INSERT INTO replicas (space, replica, sub)
        SELECT DISTINCT v_space, r.id, p_sub FROM unnest(p_replica) AS r (id)
        WHERE r.id IS NOT NULL AND r.id <> -9223372036854775808
        ON CONFLICT (space, replica) DO NOTHING;
        SELECT t.ord INTO bad
        FROM unnest(p_replica) WITH ORDINALITY AS t (id, ord)
        JOIN replicas r ON r.space = v_space AND r.replica = t.id
        WHERE r.sub <> p_sub
        ORDER BY t.ord LIMIT 1;
        IF bad IS NOT NULL THEN
            RAISE EXCEPTION 'wrong_replica: op % is stamped with a replica id another user owns',
                bad - 1 USING ERRCODE = 'AR007';
        END IF;
    END IF;
    RETURN QUERY
    SELECT a.seq, a.hlc, a.replica, a.kind, a.node, a.parent, a.key, a.field, a.value,
           a.known_seq, a.origin, r.sub
    FROM apply_ops(p_space, p_author, p_hlc, p_replica, p_kind, p_node, p_parent, p_key,
                   p_field, p_value, p_known_seq) AS a
    LEFT JOIN replicas r ON r.space = v_space AND r.replica = a.replica
    ORDER BY a.seq;
END $$;

-- fork_space, with the source's replica owners copied (a fork keeps who
-- made each op of its log). Runs in fork_space's transaction, under its
-- lock of the source space.
CREATE FUNCTION fork_space_with_owners(p_src text, p_dst text) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    dst bigint;
BEGIN
    dst := fork_space(p_src, p_dst);
    INSERT INTO replicas (space, replica, sub, claimed_at)
    SELECT dst, r.replica, r.sub, r.claimed_at
    FROM replicas r JOIN spaces s ON s.id = r.space AND s.name = p_src;
    RETURN dst;
END $$;
