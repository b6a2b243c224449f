-- The value index: every set register's value, normalized, with its
-- node's place, kept by statement triggers in the transaction that writes
-- the register or moves the node, whatever the writer (apply_ops with its
-- undo and redo, the restore rule, imports, forks, restores from backup).
-- Contract: migrations/README.md ("The value index").

-- The normalization is the client's (client/src/normalize.rs), which ICU's
-- root-locale lowercase and Postgres's NFC give exactly; refuse to run on
-- a server that lacks either rather than index differently.
DO $$
BEGIN
    IF current_setting('server_encoding') <> 'UTF8' THEN
        RAISE EXCEPTION 'the value index needs a UTF8 database (this one is %)',
            current_setting('server_encoding');
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_collation WHERE collname = 'und-x-icu') THEN
        RAISE EXCEPTION 'the value index needs a Postgres built with ICU (collation "und-x-icu")';
    END IF;
END $$;

-- Lowercase (full Unicode, ICU root locale), NFC, then every run of
-- White_Space characters made one space and the ends trimmed.
CREATE FUNCTION arbor_normalize(v text) RETURNS text
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
    SELECT btrim(regexp_replace(normalize(lower(v COLLATE "und-x-icu"), NFC),
               '[\u0009-\u000d\u0020\u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]+',
               ' ', 'g'), ' ') COLLATE "C"
$$;

-- One row per register with a value. parent and key are NULL while the
-- node is not in the tree (its register arrived before its create).
CREATE TABLE value_index (
    space  bigint NOT NULL,
    node   uuid NOT NULL,
    field  text COLLATE "C" NOT NULL,
    norm   text COLLATE "C" NOT NULL,
    parent uuid,
    key    bytea,
    PRIMARY KEY (space, node, field)
);
-- Full-text search (GET .../search): each value's words ('simple': split
-- on non-word characters, lowercased, no stemming, as the client's FTS5
-- unicode61 tokenizer) and a lexeme naming the space, so that the GIN
-- index finds one space's matches without visiting every space's.
CREATE FUNCTION arbor_search_doc(p_space bigint, p_norm text) RETURNS tsvector
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
    SELECT to_tsvector('simple'::regconfig, p_norm) || array_to_tsvector(ARRAY['@space' || p_space])
$$;

-- Filled first, indexed after (one sort per index, not a million inserts).
INSERT INTO value_index (space, node, field, norm, parent, key)
SELECT p.space, p.node, p.field, arbor_normalize(p.value), n.parent, n.key
FROM payloads p LEFT JOIN nodes n ON n.space = p.space AND n.id = p.node
WHERE p.value IS NOT NULL;

-- Lookups compare the first 200 characters in the index (a btree entry
-- has a size limit; a value may be 64 KiB) and the whole value after.
CREATE INDEX value_index_value ON value_index (space, field, left(norm, 200), node);
CREATE INDEX value_index_child ON value_index (space, parent, field, left(norm, 200), key, node);
CREATE INDEX value_index_search ON value_index USING gin (arbor_search_doc(space, norm));

-- Each statement appears twice, for a few rows and for many: PL/pgSQL
-- keeps one plan per statement, and a plan made for a one-row transition
-- table (an index probe per row) must not serve an import of a million
-- rows, nor a hash join made for the import serve every later move.
CREATE FUNCTION arbor_index_payloads() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    few boolean;
BEGIN
    IF TG_OP <> 'INSERT' THEN
        few := (SELECT count(*) FROM old_rows) <= 64;
        IF few THEN
            DELETE FROM value_index v USING old_rows o
            WHERE v.space = o.space AND v.node = o.node AND v.field = o.field;
        ELSE
            DELETE FROM value_index v USING old_rows o
            WHERE v.space = o.space AND v.node = o.node AND v.field = o.field;
        END IF;
    END IF;
    IF TG_OP <> 'DELETE' THEN
        few := (SELECT count(*) FROM new_rows) <= 64;
        IF few THEN
            INSERT INTO value_index (space, node, field, norm, parent, key)
            SELECT r.space, r.node, r.field, arbor_normalize(r.value), n.parent, n.key
            FROM new_rows r LEFT JOIN nodes n ON n.space = r.space AND n.id = r.node
            WHERE r.value IS NOT NULL;
        ELSE
            INSERT INTO value_index (space, node, field, norm, parent, key)
            SELECT r.space, r.node, r.field, arbor_normalize(r.value), n.parent, n.key
            FROM new_rows r LEFT JOIN nodes n ON n.space = r.space AND n.id = r.node
            WHERE r.value IS NOT NULL;
        END IF;
    END IF;
    RETURN NULL;
END $$;

CREATE FUNCTION arbor_index_nodes() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        IF (SELECT count(*) FROM old_rows) <= 64 THEN
            UPDATE value_index v SET parent = NULL, key = NULL FROM old_rows o
            WHERE v.space = o.space AND v.node = o.id;
        ELSE
            UPDATE value_index v SET parent = NULL, key = NULL FROM old_rows o
            WHERE v.space = o.space AND v.node = o.id;
        END IF;
    ELSIF (SELECT count(*) FROM new_rows) <= 64 THEN
        UPDATE value_index v SET parent = n.parent, key = n.key FROM new_rows n
        WHERE v.space = n.space AND v.node = n.id
          AND (v.parent IS DISTINCT FROM n.parent OR v.key IS DISTINCT FROM n.key);
    ELSE
        UPDATE value_index v SET parent = n.parent, key = n.key FROM new_rows n
        WHERE v.space = n.space AND v.node = n.id
          AND (v.parent IS DISTINCT FROM n.parent OR v.key IS DISTINCT FROM n.key);
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER payloads_index_insert AFTER INSERT ON payloads
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION arbor_index_payloads();
CREATE TRIGGER payloads_index_update AFTER UPDATE ON payloads
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION arbor_index_payloads();
CREATE TRIGGER payloads_index_delete AFTER DELETE ON payloads
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION arbor_index_payloads();
CREATE TRIGGER nodes_index_insert AFTER INSERT ON nodes
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION arbor_index_nodes();
CREATE TRIGGER nodes_index_update AFTER UPDATE ON nodes
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION arbor_index_nodes();
CREATE TRIGGER nodes_index_delete AFTER DELETE ON nodes
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION arbor_index_nodes();
