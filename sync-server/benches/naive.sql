-- The baseline of the apply benchmark: a naive per-op PL/pgSQL loop. Every
-- op is its own set of statements, and the cycle check walks up one SPI
-- query per level per op. In-order only (no undo/redo). Not a migration:
-- the benchmark creates it in its own database.
CREATE FUNCTION naive_apply(
    p_space text, p_author bigint, p_hlc bigint[], p_replica bigint[], p_kind "char"[],
    p_node uuid[], p_parent uuid[], p_key bytea[], p_field text[], p_value text[],
    p_known_seq bigint[])
RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    v_space bigint;
    v_head bigint;
    cur uuid;
    skip boolean;
    pp uuid;
    pk bytea;
BEGIN
    SELECT s.id INTO v_space FROM spaces s WHERE s.name = p_space;
    PERFORM pg_advisory_xact_lock(v_space);
    SELECT s.head_seq INTO v_head FROM spaces s WHERE s.id = v_space;
    FOR i IN 1 .. coalesce(array_length(p_hlc, 1), 0) LOOP
        CONTINUE WHEN EXISTS (SELECT 1 FROM ops o WHERE o.space = v_space
                              AND o.hlc = p_hlc[i] AND o.replica = p_replica[i]);
        v_head := v_head + 1;
        IF p_kind[i] = 'm' THEN
            SELECT n.parent, n.key INTO pp, pk FROM nodes n WHERE n.space = v_space AND n.id = p_node[i];
            skip := false;
            cur := p_parent[i];
            WHILE cur IS NOT NULL LOOP
                IF cur = p_node[i] THEN
                    skip := true;
                    EXIT;
                END IF;
                SELECT n.parent INTO cur FROM nodes n WHERE n.space = v_space AND n.id = cur;
            END LOOP;
            IF NOT skip THEN
                INSERT INTO nodes AS n (space, id, parent, key)
                VALUES (v_space, p_node[i], p_parent[i], p_key[i])
                ON CONFLICT (space, id) DO UPDATE SET parent = EXCLUDED.parent, key = EXCLUDED.key;
            END IF;
            INSERT INTO ops (space, seq, hlc, replica, kind, node, parent, key, known_seq,
                             applied, prev_parent, prev_key)
            VALUES (v_space, v_head, p_hlc[i], p_replica[i], 'm', p_node[i], p_parent[i], p_key[i],
                    p_known_seq[i], NOT skip, CASE WHEN skip THEN NULL ELSE pp END,
                    CASE WHEN skip THEN NULL ELSE pk END);
        ELSE
            INSERT INTO payloads AS y (space, node, field, value, hlc, replica)
            VALUES (v_space, p_node[i], p_field[i], p_value[i], p_hlc[i], p_replica[i])
            ON CONFLICT (space, node, field) DO UPDATE
            SET value = EXCLUDED.value, hlc = EXCLUDED.hlc, replica = EXCLUDED.replica
            WHERE (y.hlc, y.replica) < (EXCLUDED.hlc, EXCLUDED.replica);
            INSERT INTO ops (space, seq, hlc, replica, kind, node, field, value, known_seq)
            VALUES (v_space, v_head, p_hlc[i], p_replica[i], 's', p_node[i], p_field[i],
                    p_value[i], p_known_seq[i]);
        END IF;
    END LOOP;
    UPDATE spaces s SET head_seq = v_head WHERE s.id = v_space;
    RETURN v_head;
END $$;
