-- Per-space usage and quotas, and the tenant that owns a space.
-- Contract: migrations/README.md ("Quotas").
--
-- Usage is kept exact by statement-level triggers on the three tables that
-- grow, so every path that writes them (apply_ops and its restores, fork,
-- import) is counted without knowing about it. A statement that makes a
-- space grow past a limit raises AR015 and the whole call is rolled back.
-- The limits are the session settings arbor.max_nodes, arbor.max_log_rows
-- and arbor.max_bytes (the server sets them on its connections; unset or 0:
-- no limit), so changing them needs no migration and no row updates.

ALTER TABLE spaces
    ADD COLUMN tenant     text,
    ADD COLUMN node_count bigint NOT NULL DEFAULT 0,
    ADD COLUMN log_rows   bigint NOT NULL DEFAULT 0,
    ADD COLUMN bytes      bigint NOT NULL DEFAULT 0;
CREATE INDEX spaces_tenant ON spaces (tenant) WHERE tenant IS NOT NULL;

-- The bytes a row costs: keys, field names and values (the log's and the
-- registers'), the parts whose size a client chooses.
UPDATE spaces s SET
    node_count = (SELECT count(*) FROM nodes n WHERE n.space = s.id),
    log_rows = (SELECT count(*) FROM ops o WHERE o.space = s.id),
    bytes = (SELECT coalesce(sum(coalesce(octet_length(o.key), 0)
                                 + coalesce(octet_length(o.field), 0)
                                 + coalesce(octet_length(o.value), 0)), 0)
             FROM ops o WHERE o.space = s.id)
          + (SELECT coalesce(sum(octet_length(p.field) + coalesce(octet_length(p.value), 0)), 0)
             FROM payloads p WHERE p.space = s.id);

-- A limit from the session (NULL: none).
CREATE FUNCTION arbor_limit(p_name text) RETURNS bigint
LANGUAGE sql STABLE AS $$
    SELECT nullif(nullif(current_setting(p_name, true), ''), '0')::bigint
$$;

-- Adds to a space's usage; refuses growth past a limit.
CREATE FUNCTION arbor_account(p_space bigint, d_nodes bigint, d_rows bigint, d_bytes bigint)
RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    u record;
    lim bigint;
BEGIN
    IF d_nodes = 0 AND d_rows = 0 AND d_bytes = 0 THEN
        RETURN;
    END IF;
    UPDATE spaces s
    SET node_count = s.node_count + d_nodes, log_rows = s.log_rows + d_rows,
        bytes = s.bytes + d_bytes
    WHERE s.id = p_space
    RETURNING s.node_count, s.log_rows, s.bytes INTO u;
    IF d_nodes > 0 THEN
        lim := arbor_limit('arbor.max_nodes');
        IF u.node_count > lim THEN
            RAISE EXCEPTION 'quota_exceeded: the space would hold % nodes; its quota is %',
                u.node_count, lim USING ERRCODE = 'AR015';
        END IF;
    END IF;
    IF d_rows > 0 THEN
        lim := arbor_limit('arbor.max_log_rows');
        IF u.log_rows > lim THEN
            RAISE EXCEPTION 'quota_exceeded: the space''s log would hold % ops; its quota is %',
                u.log_rows, lim USING ERRCODE = 'AR015';
        END IF;
    END IF;
    IF d_bytes > 0 THEN
        lim := arbor_limit('arbor.max_bytes');
        IF u.bytes > lim THEN
            RAISE EXCEPTION 'quota_exceeded: the space would hold % bytes; its quota is %',
                u.bytes, lim USING ERRCODE = 'AR015';
        END IF;
    END IF;
END $$;

CREATE FUNCTION arbor_count_nodes() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        PERFORM arbor_account(t.space, t.n, 0, 0)
        FROM (SELECT r.space, count(*) AS n FROM new_rows r GROUP BY r.space) t;
    ELSE
        PERFORM arbor_account(t.space, -t.n, 0, 0)
        FROM (SELECT r.space, count(*) AS n FROM old_rows r GROUP BY r.space) t;
    END IF;
    RETURN NULL;
END $$;

CREATE FUNCTION arbor_count_ops() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        PERFORM arbor_account(t.space, 0, t.n, t.b)
        FROM (SELECT r.space, count(*) AS n,
                     sum(coalesce(octet_length(r.key), 0) + coalesce(octet_length(r.field), 0)
                         + coalesce(octet_length(r.value), 0)) AS b
              FROM new_rows r GROUP BY r.space) t;
    ELSE
        PERFORM arbor_account(t.space, 0, -t.n, -t.b)
        FROM (SELECT r.space, count(*) AS n,
                     sum(coalesce(octet_length(r.key), 0) + coalesce(octet_length(r.field), 0)
                         + coalesce(octet_length(r.value), 0)) AS b
              FROM old_rows r GROUP BY r.space) t;
    END IF;
    RETURN NULL;
END $$;

CREATE FUNCTION arbor_count_payloads() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        PERFORM arbor_account(t.space, 0, 0, t.b)
        FROM (SELECT r.space, sum(octet_length(r.field) + coalesce(octet_length(r.value), 0)) AS b
              FROM new_rows r GROUP BY r.space) t;
    ELSIF TG_OP = 'DELETE' THEN
        PERFORM arbor_account(t.space, 0, 0, -t.b)
        FROM (SELECT r.space, sum(octet_length(r.field) + coalesce(octet_length(r.value), 0)) AS b
              FROM old_rows r GROUP BY r.space) t;
    ELSE
        -- An update changes a register's value: the difference.
        PERFORM arbor_account(t.space, 0, 0, t.b)
        FROM (SELECT x.space, sum(x.b) AS b FROM (
                  SELECT r.space, coalesce(octet_length(r.value), 0) AS b FROM new_rows r
                  UNION ALL
                  SELECT r.space, -coalesce(octet_length(r.value), 0) FROM old_rows r) x
              GROUP BY x.space) t;
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER nodes_count_insert AFTER INSERT ON nodes
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION arbor_count_nodes();
CREATE TRIGGER nodes_count_delete AFTER DELETE ON nodes
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION arbor_count_nodes();
CREATE TRIGGER ops_count_insert AFTER INSERT ON ops
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION arbor_count_ops();
CREATE TRIGGER ops_count_delete AFTER DELETE ON ops
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION arbor_count_ops();
CREATE TRIGGER payloads_count_insert AFTER INSERT ON payloads
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION arbor_count_payloads();
CREATE TRIGGER payloads_count_update AFTER UPDATE ON payloads
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION arbor_count_payloads();
CREATE TRIGGER payloads_count_delete AFTER DELETE ON payloads
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION arbor_count_payloads();
