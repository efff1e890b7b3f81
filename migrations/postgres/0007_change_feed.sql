-- The change feed edge replicas follow (issue 13, API.md "Replication").
-- Every write to a replicated table appends one row here, by trigger, in the
-- writing transaction. A change names its entity only; the feed reads the
-- entity's state when it serves the change, so applying a change is
-- idempotent and a later change of the same entity supersedes it.
--
-- Many origin processes write at once, and a sequence number drawn at insert
-- is not commit order (a transaction holding 10 may commit after one holding
-- 11, and a follower at 11 would never see 10). So rows are inserted without
-- a sequence number; the feed numbers the committed ones under an advisory
-- lock (`seq IS NULL` → nextval, in one statement): a row committed later is
-- always numbered later.
CREATE TABLE changes (
    id     BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    seq    BIGINT UNIQUE,
    kind   TEXT NOT NULL CHECK (kind IN ('tenant', 'key', 'product', 'plugin')),
    tenant TEXT NOT NULL,
    entity TEXT NOT NULL,
    at     TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX changes_unnumbered ON changes (id) WHERE seq IS NULL;
CREATE SEQUENCE change_seq;

CREATE FUNCTION vitrine_record_change() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    r RECORD;
BEGIN
    IF TG_OP = 'DELETE' THEN r := OLD; ELSE r := NEW; END IF;
    IF TG_TABLE_NAME = 'tenants' THEN
        -- Only the name and the limits replicate (not the generation
        -- counter every product write bumps). Compared here rather than in
        -- an `UPDATE OF` list, which would pin the columns' types.
        IF TG_OP = 'UPDATE' AND OLD.name IS NOT DISTINCT FROM NEW.name
           AND OLD.limits IS NOT DISTINCT FROM NEW.limits THEN
            RETURN NULL;
        END IF;
        INSERT INTO changes (kind, tenant, entity) VALUES ('tenant', r.id, r.id);
    ELSIF TG_TABLE_NAME = 'api_keys' THEN
        INSERT INTO changes (kind, tenant, entity) VALUES ('key', r.tenant, r.id);
    ELSIF TG_TABLE_NAME = 'products' THEN
        INSERT INTO changes (kind, tenant, entity) VALUES ('product', r.tenant, r.external_id);
    ELSIF TG_TABLE_NAME = 'plugins' THEN
        INSERT INTO changes (kind, tenant, entity) VALUES ('plugin', r.tenant, r.name);
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER tenants_record_change
AFTER INSERT OR UPDATE ON tenants
FOR EACH ROW EXECUTE FUNCTION vitrine_record_change();
CREATE TRIGGER api_keys_record_change
AFTER INSERT OR UPDATE OR DELETE ON api_keys
FOR EACH ROW EXECUTE FUNCTION vitrine_record_change();
CREATE TRIGGER products_record_change
AFTER INSERT OR UPDATE OR DELETE ON products
FOR EACH ROW EXECUTE FUNCTION vitrine_record_change();
CREATE TRIGGER plugins_record_change
AFTER INSERT OR UPDATE OR DELETE ON plugins
FOR EACH ROW EXECUTE FUNCTION vitrine_record_change();

-- Edge side (an edge keeps its replica in SQLite; the table exists here so
-- both backends have one schema).
CREATE TABLE replica_state (
    id           INTEGER PRIMARY KEY CHECK (id = 1),
    origin       TEXT NOT NULL,
    seq          BIGINT NOT NULL,
    cursor       TEXT,
    bootstrapped BOOLEAN NOT NULL,
    generation   TEXT,
    updated_at   TIMESTAMPTZ NOT NULL
);

-- Origin side: the last search-log number stored from each edge, so that a
-- batch an edge sends again (it never heard the answer) is stored once.
CREATE TABLE replica_edges (
    edge         TEXT PRIMARY KEY,
    last_log_seq BIGINT NOT NULL,
    updated_at   TIMESTAMPTZ NOT NULL
);

-- Origin side: the vector index generations a full reindex made live, with
-- the model that embedded them. The latest is the one searched; every page
-- of the feed names it, and an edge rebuilds its own index when it changes.
CREATE TABLE index_generations (
    id         BIGINT PRIMARY KEY,
    model      TEXT NOT NULL,
    model_id   TEXT NOT NULL,
    dims       INTEGER NOT NULL,
    created_at TIMESTAMPTZ NOT NULL
);

-- Edge side: this edge's id for its origin's search-log bookkeeping, kept
-- with the outbox it numbers.
CREATE TABLE replica_identity (
    id   INTEGER PRIMARY KEY CHECK (id = 1),
    edge TEXT NOT NULL
);
