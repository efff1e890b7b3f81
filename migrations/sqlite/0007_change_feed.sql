-- The change feed edge replicas follow (issue 13, API.md "Replication").
-- Every write to a replicated table appends one row here, by trigger, in the
-- writing transaction: nothing is written without its change, and a change
-- is never visible before its write. A change names its entity only; the
-- feed reads the entity's state when it serves the change, so applying a
-- change is idempotent and a later change of the same entity supersedes it.
-- SQLite has one writer, so rows are numbered in commit order.
CREATE TABLE changes (
    seq    INTEGER PRIMARY KEY AUTOINCREMENT,
    kind   TEXT NOT NULL CHECK (kind IN ('tenant', 'key', 'product', 'plugin')),
    tenant TEXT NOT NULL,
    entity TEXT NOT NULL,
    at     TEXT NOT NULL
);

CREATE TRIGGER changes_tenant_insert AFTER INSERT ON tenants
BEGIN
    INSERT INTO changes (kind, tenant, entity, at)
    VALUES ('tenant', NEW.id, NEW.id, strftime('%Y-%m-%dT%H:%M:%fZ', 'now'));
END;
CREATE TRIGGER changes_tenant_update AFTER UPDATE OF name, limits ON tenants
BEGIN
    INSERT INTO changes (kind, tenant, entity, at)
    VALUES ('tenant', NEW.id, NEW.id, strftime('%Y-%m-%dT%H:%M:%fZ', 'now'));
END;

CREATE TRIGGER changes_key_insert AFTER INSERT ON api_keys
BEGIN
    INSERT INTO changes (kind, tenant, entity, at)
    VALUES ('key', NEW.tenant, NEW.id, strftime('%Y-%m-%dT%H:%M:%fZ', 'now'));
END;
CREATE TRIGGER changes_key_update AFTER UPDATE ON api_keys
BEGIN
    INSERT INTO changes (kind, tenant, entity, at)
    VALUES ('key', NEW.tenant, NEW.id, strftime('%Y-%m-%dT%H:%M:%fZ', 'now'));
END;
CREATE TRIGGER changes_key_delete AFTER DELETE ON api_keys
BEGIN
    INSERT INTO changes (kind, tenant, entity, at)
    VALUES ('key', OLD.tenant, OLD.id, strftime('%Y-%m-%dT%H:%M:%fZ', 'now'));
END;

CREATE TRIGGER changes_product_insert AFTER INSERT ON products
BEGIN
    INSERT INTO changes (kind, tenant, entity, at)
    VALUES ('product', NEW.tenant, NEW.external_id, strftime('%Y-%m-%dT%H:%M:%fZ', 'now'));
END;
CREATE TRIGGER changes_product_update AFTER UPDATE ON products
BEGIN
    INSERT INTO changes (kind, tenant, entity, at)
    VALUES ('product', NEW.tenant, NEW.external_id, strftime('%Y-%m-%dT%H:%M:%fZ', 'now'));
END;
CREATE TRIGGER changes_product_delete AFTER DELETE ON products
BEGIN
    INSERT INTO changes (kind, tenant, entity, at)
    VALUES ('product', OLD.tenant, OLD.external_id, strftime('%Y-%m-%dT%H:%M:%fZ', 'now'));
END;

CREATE TRIGGER changes_plugin_insert AFTER INSERT ON plugins
BEGIN
    INSERT INTO changes (kind, tenant, entity, at)
    VALUES ('plugin', NEW.tenant, NEW.name, strftime('%Y-%m-%dT%H:%M:%fZ', 'now'));
END;
CREATE TRIGGER changes_plugin_update AFTER UPDATE ON plugins
BEGIN
    INSERT INTO changes (kind, tenant, entity, at)
    VALUES ('plugin', NEW.tenant, NEW.name, strftime('%Y-%m-%dT%H:%M:%fZ', 'now'));
END;
CREATE TRIGGER changes_plugin_delete AFTER DELETE ON plugins
BEGIN
    INSERT INTO changes (kind, tenant, entity, at)
    VALUES ('plugin', OLD.tenant, OLD.name, strftime('%Y-%m-%dT%H:%M:%fZ', 'now'));
END;

-- Edge side: where this replica stands, written in the transaction that
-- applies each page of the bootstrap or the feed (one row). `cursor` is the
-- bootstrap's next page while `bootstrapped` is 0.
CREATE TABLE replica_state (
    id           INTEGER PRIMARY KEY CHECK (id = 1),
    origin       TEXT NOT NULL,
    seq          INTEGER NOT NULL,
    cursor       TEXT,
    bootstrapped INTEGER NOT NULL,
    generation   TEXT,                   -- the origin's generation the index holds (JSON)
    updated_at   TEXT NOT NULL
);

-- Origin side: the last search-log number stored from each edge, so that a
-- batch an edge sends again (it never heard the answer) is stored once.
CREATE TABLE replica_edges (
    edge         TEXT PRIMARY KEY,
    last_log_seq INTEGER NOT NULL,
    updated_at   TEXT NOT NULL
);

-- Origin side: the vector index generations a full reindex made live, with
-- the model that embedded them. The latest is the one searched; every page
-- of the feed names it, and an edge rebuilds its own index when it changes.
CREATE TABLE index_generations (
    id         INTEGER PRIMARY KEY,
    model      TEXT NOT NULL,
    model_id   TEXT NOT NULL,
    dims       INTEGER NOT NULL,
    created_at TEXT NOT NULL
);

-- Edge side: this edge's id for its origin's search-log bookkeeping, kept
-- with the outbox it numbers.
CREATE TABLE replica_identity (
    id   INTEGER PRIMARY KEY CHECK (id = 1),
    edge TEXT NOT NULL
);
