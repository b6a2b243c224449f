-- Arbor schema: shared tables keyed by thoughtspace (no per-space tables).
-- Contract and encodings: migrations/README.md.

-- One row per thoughtspace. Every column after `name` is maintained by
-- apply_ops under the space's advisory lock.
CREATE TABLE spaces (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name         text NOT NULL UNIQUE CHECK (name ~ '^[A-Za-z0-9_.-]{1,64}$'),
    -- Highest seq committed; seqs of the space are exactly 1..head_seq.
    head_seq     bigint NOT NULL DEFAULT 0,
    -- Newest logged move stamp (NULL: no move yet): a batch whose moves
    -- are all newer takes the in-order path (no undo/redo).
    log_hlc      bigint,
    log_replica  bigint,
    -- Highest hlc of any stored op: the server clock never issues below it.
    clock_hlc    bigint NOT NULL DEFAULT 0,
    -- Ops with a stamp at or below (horizon_hlc, horizon_replica) are
    -- refused as stale (NULL: no horizon yet).
    horizon_hlc     bigint,
    horizon_replica bigint,
    -- Stamps more than this far ahead of the database clock are refused.
    max_ahead_ms bigint NOT NULL DEFAULT 300000 CHECK (max_ahead_ms >= 0),
    created_at   timestamptz NOT NULL DEFAULT now(),
    CHECK ((log_hlc IS NULL) = (log_replica IS NULL)),
    CHECK ((horizon_hlc IS NULL) = (horizon_replica IS NULL))
);

-- No foreign keys to spaces on the hot tables: a per-row RI trigger would
-- cost more than the rest of an insert; delete_space() removes a space.

-- Every committed op: the catch-up feed (by seq) and the move log (by
-- stamp). Moves carry their effect as of the latest (re)do.
CREATE TABLE ops (
    space       bigint NOT NULL,
    seq         bigint NOT NULL,
    hlc         bigint NOT NULL CHECK (hlc >= 0),
    replica     bigint NOT NULL,
    kind        "char" NOT NULL CHECK (kind IN ('m', 's')),
    node        uuid NOT NULL,
    -- Moves: requested parent and key.
    parent      uuid,
    key         bytea,
    -- Sets: field and value (NULL value clears the field).
    field       text COLLATE "C",
    value       text,
    known_seq   bigint NOT NULL CHECK (known_seq >= 0),
    -- Moves: false when skipped as a cycle at its place in stamp order;
    -- prev_parent/prev_key is the node's effective place before the move
    -- (NULL: it was not in the tree).
    applied     boolean,
    prev_parent uuid,
    prev_key    bytea,
    PRIMARY KEY (space, seq),
    CHECK (kind = 'm' AND parent IS NOT NULL AND key IS NOT NULL AND field IS NULL
               AND value IS NULL AND applied IS NOT NULL
           OR kind = 's' AND parent IS NULL AND key IS NULL AND field IS NOT NULL
               AND applied IS NULL AND prev_parent IS NULL AND prev_key IS NULL)
);
-- Idempotency and undo by stamp.
CREATE UNIQUE INDEX ops_stamp ON ops (space, hlc, replica);
-- Deletes (moves to TRASH), for the restore rule: by seq (deletes
-- concurrent with a batch), and per node newest first (the delete that put
-- a node in the trash: a node whose parent is TRASH was placed by its newest
-- applied delete). Deletes are few, so these cost ingest almost nothing; an
-- index of every move by node would cost a random insert per move.
CREATE INDEX ops_deletes ON ops (space, seq)
    WHERE kind = 'm' AND parent = 'ffffffff-ffff-ffff-ffff-ffffffffffff';
CREATE INDEX ops_node_deletes ON ops (space, node, hlc, replica)
    WHERE kind = 'm' AND parent = 'ffffffff-ffff-ffff-ffff-ffffffffffff';

-- The tree: one row per node in it (ROOT and TRASH are implicit).
-- `parent` may name a node not in the table: ops arrive in any order, and a
-- move stamped before the first applied move of its parent (whose earlier
-- create has not arrived yet) hangs under it, as in the Rust core, until
-- that create arrives.
CREATE TABLE nodes (
    space  bigint NOT NULL,
    id     uuid NOT NULL,
    parent uuid NOT NULL,
    key    bytea NOT NULL,
    PRIMARY KEY (space, id)
);
-- Ordered children: siblings sort by (key, id), both bytewise.
CREATE INDEX nodes_children ON nodes (space, parent, key, id);

-- Last-writer-wins registers: the highest stamp per (node, field) wins.
CREATE TABLE payloads (
    space   bigint NOT NULL,
    node    uuid NOT NULL,
    field   text COLLATE "C" NOT NULL,
    value   text,
    hlc     bigint NOT NULL,
    replica bigint NOT NULL,
    PRIMARY KEY (space, node, field)
);

-- Restores appended by the restore rule: at most one per delete (the
-- cause), which makes the rule idempotent.
CREATE TABLE restores (
    space       bigint NOT NULL,
    cause_seq   bigint NOT NULL,  -- the delete undone
    trigger_seq bigint NOT NULL,  -- the concurrent write that needed it
    restore_seq bigint NOT NULL,  -- the server-authored move
    PRIMARY KEY (space, cause_seq)
);
