-- Import: create a thoughtspace from the rows of a snapshot file (an export,
-- or a replica's state uploaded to become the truth). The caller calls
-- arbor_import_begin(), fills its temp tables with binary COPY, then calls
-- import_space() in the same transaction. Contract: migrations/README.md.

-- The staging tables (temporary, dropped at commit). Their columns are the
-- snapshot sections' columns, in order.
CREATE FUNCTION arbor_import_begin() RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    CREATE TEMP TABLE arbor_import_nodes (
        id uuid NOT NULL, parent uuid NOT NULL, key bytea NOT NULL
    ) ON COMMIT DROP;
    CREATE TEMP TABLE arbor_import_payloads (
        node uuid NOT NULL, field text COLLATE "C" NOT NULL, value text,
        hlc bigint NOT NULL, replica bigint NOT NULL
    ) ON COMMIT DROP;
    CREATE TEMP TABLE arbor_import_log (
        seq bigint NOT NULL, hlc bigint NOT NULL, replica bigint NOT NULL, kind "char" NOT NULL,
        node uuid NOT NULL, parent uuid, key bytea, field text COLLATE "C", value text,
        known_seq bigint NOT NULL, applied boolean, prev_parent uuid, prev_key bytea
    ) ON COMMIT DROP;
END $$;

-- Validates the staged rows and creates `p_dst` with them: the tree and the
-- registers, an empty log (head_seq 0), and the horizon at the newest stamp
-- of the file (its header horizon, its registers, its log), so an op older
-- than the imported state can never be applied out of order on top of it
-- (it is refused as stale and re-stamped by its replica). Errors: AR001
-- reserved node, AR002 bad key, AR003 bad field, AR004 value too long,
-- AR006 a stamp too far ahead, AR008 a register of a node not in the tree,
-- AR012 the space exists, AR013 bad import (duplicate rows, a cycle).
CREATE FUNCTION import_space(p_dst text, p_horizon_hlc bigint, p_horizon_replica bigint)
RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    dst bigint;
    v_now bigint := (extract(epoch FROM clock_timestamp()) * 1000)::bigint;
    v_hlc bigint;
    v_rep bigint;
    n_nodes bigint;
    n_reached bigint;
BEGIN
    ANALYZE arbor_import_nodes;
    ANALYZE arbor_import_payloads;
    CREATE INDEX ON arbor_import_nodes (id);
    CREATE INDEX ON arbor_import_nodes (parent);
    IF EXISTS (SELECT 1 FROM arbor_import_nodes
               WHERE id IN ('00000000-0000-0000-0000-000000000000',
                            'ffffffff-ffff-ffff-ffff-ffffffffffff')) THEN
        RAISE EXCEPTION 'reserved_node: ROOT and TRASH are not rows' USING ERRCODE = 'AR001';
    END IF;
    IF EXISTS (SELECT 1 FROM arbor_import_nodes
               WHERE CASE WHEN octet_length(key) NOT BETWEEN 1 AND 256 THEN true
                          ELSE get_byte(key, octet_length(key) - 1) = 0 END) THEN
        RAISE EXCEPTION 'bad_key: an order key is 1..256 bytes, not ending in 0x00'
            USING ERRCODE = 'AR002';
    END IF;
    IF EXISTS (SELECT 1 FROM arbor_import_nodes GROUP BY id HAVING count(*) > 1) THEN
        RAISE EXCEPTION 'bad_import: a node has two rows' USING ERRCODE = 'AR013';
    END IF;
    IF EXISTS (SELECT 1 FROM arbor_import_payloads WHERE octet_length(field) NOT BETWEEN 1 AND 64) THEN
        RAISE EXCEPTION 'bad_field: a field name is 1..64 bytes' USING ERRCODE = 'AR003';
    END IF;
    IF EXISTS (SELECT 1 FROM arbor_import_payloads WHERE octet_length(value) > 65536) THEN
        RAISE EXCEPTION 'value_too_long: a value is at most 65536 bytes' USING ERRCODE = 'AR004';
    END IF;
    IF EXISTS (SELECT 1 FROM arbor_import_payloads GROUP BY node, field HAVING count(*) > 1) THEN
        RAISE EXCEPTION 'bad_import: a register has two rows' USING ERRCODE = 'AR013';
    END IF;
    IF EXISTS (SELECT 1 FROM arbor_import_payloads p
               WHERE NOT EXISTS (SELECT 1 FROM arbor_import_nodes n WHERE n.id = p.node)) THEN
        RAISE EXCEPTION 'unknown_node: a register of a node not in the tree'
            USING ERRCODE = 'AR008';
    END IF;
    -- No cycle: every row hangs, through its parents, from a node that is
    -- not a row (ROOT, TRASH, or a parent whose create has not arrived).
    SELECT count(*) INTO n_nodes FROM arbor_import_nodes;
    WITH RECURSIVE reach (id) AS (
        SELECT n.id FROM arbor_import_nodes n
        WHERE NOT EXISTS (SELECT 1 FROM arbor_import_nodes p WHERE p.id = n.parent)
        UNION ALL
        SELECT c.id FROM reach r JOIN arbor_import_nodes c ON c.parent = r.id
    )
    SELECT count(*) INTO n_reached FROM reach;
    IF n_reached <> n_nodes THEN
        RAISE EXCEPTION 'bad_import: % nodes are in a cycle', n_nodes - n_reached
            USING ERRCODE = 'AR013';
    END IF;
    -- The newest stamp of the file becomes the horizon.
    SELECT s.hlc, s.replica INTO v_hlc, v_rep FROM (
        SELECT p_horizon_hlc AS hlc, p_horizon_replica AS replica WHERE p_horizon_hlc IS NOT NULL
        UNION ALL SELECT p.hlc, p.replica FROM arbor_import_payloads p
        UNION ALL SELECT l.hlc, l.replica FROM arbor_import_log l
    ) s ORDER BY s.hlc DESC, s.replica DESC LIMIT 1;
    IF v_hlc < 0 OR v_hlc > ((v_now + 300000) << 16) + 65535 THEN
        RAISE EXCEPTION 'clock_ahead: the file has a stamp too far ahead of the server clock'
            USING ERRCODE = 'AR006';
    END IF;
    INSERT INTO spaces (name, clock_hlc, horizon_hlc, horizon_replica)
    VALUES (p_dst, coalesce(v_hlc, 0), v_hlc, v_rep)
    ON CONFLICT (name) DO NOTHING
    RETURNING id INTO dst;
    IF dst IS NULL THEN
        RAISE EXCEPTION 'space_exists: %', p_dst USING ERRCODE = 'AR012';
    END IF;
    INSERT INTO nodes (space, id, parent, key)
    SELECT dst, n.id, n.parent, n.key FROM arbor_import_nodes n;
    INSERT INTO payloads (space, node, field, value, hlc, replica)
    SELECT dst, p.node, p.field, p.value, p.hlc, p.replica FROM arbor_import_payloads p;
    RETURN dst;
END $$;
