-- Vitrine catalog, SQLite backend (embedded single node).
-- Timestamps are RFC 3339 UTC text with millisecond precision, which sorts
-- lexicographically in time order.

CREATE TABLE tenants (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    created_at  TEXT NOT NULL
);

INSERT INTO tenants (id, name, created_at)
VALUES ('default', 'Default tenant', strftime('%Y-%m-%dT%H:%M:%fZ', 'now'));

CREATE TABLE api_keys (
    id          TEXT PRIMARY KEY,
    tenant      TEXT NOT NULL REFERENCES tenants (id),
    secret_hash TEXT NOT NULL,           -- SHA-256 of the secret, hex; the secret is never stored
    scopes      TEXT NOT NULL,           -- JSON array of scope names
    label       TEXT,
    created_at  TEXT NOT NULL
);
CREATE INDEX api_keys_tenant ON api_keys (tenant);

CREATE TABLE products (
    -- AUTOINCREMENT: ids are never reused, so list cursors stay valid.
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant       TEXT NOT NULL REFERENCES tenants (id),
    external_id  TEXT NOT NULL,
    title        TEXT NOT NULL,
    description  TEXT,
    category     TEXT,
    price        TEXT,                   -- exact decimal as text
    currency     TEXT,
    image_url    TEXT,
    tags         TEXT NOT NULL DEFAULT '[]',
    in_stock     INTEGER NOT NULL DEFAULT 1,
    metadata     TEXT NOT NULL DEFAULT '{}',
    index_status TEXT NOT NULL DEFAULT 'pending'
                 CHECK (index_status IN ('pending', 'indexed', 'failed')),
    index_error  TEXT,
    version      INTEGER NOT NULL DEFAULT 1,
    created_at   TEXT NOT NULL,
    updated_at   TEXT NOT NULL,
    UNIQUE (tenant, external_id)
);
CREATE INDEX products_tenant_category ON products (tenant, category, id);

CREATE TABLE search_logs (
    id                INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant            TEXT NOT NULL,
    query_type        TEXT NOT NULL,
    query_text        TEXT,
    query_image_url   TEXT,
    results_count     INTEGER NOT NULL,
    execution_time_ms REAL NOT NULL,
    user_id           TEXT,
    session_id        TEXT,
    created_at        TEXT NOT NULL
);
CREATE INDEX search_logs_tenant_time ON search_logs (tenant, created_at);

CREATE TABLE jobs (
    id               TEXT PRIMARY KEY,
    kind             TEXT NOT NULL,
    tenant           TEXT,               -- NULL for jobs that span every tenant
    payload          TEXT NOT NULL,
    status           TEXT NOT NULL DEFAULT 'queued'
                     CHECK (status IN ('queued', 'running', 'succeeded', 'failed', 'cancelled')),
    attempts         INTEGER NOT NULL DEFAULT 0,
    max_attempts     INTEGER NOT NULL,
    run_after        TEXT NOT NULL,
    lease_owner      TEXT,
    lease_expires_at TEXT,
    progress_done    INTEGER NOT NULL DEFAULT 0,
    progress_total   INTEGER NOT NULL DEFAULT 0,
    last_error       TEXT,
    result           TEXT,
    created_at       TEXT NOT NULL,
    updated_at       TEXT NOT NULL
);
CREATE INDEX jobs_claim ON jobs (status, run_after);
CREATE INDEX jobs_tenant ON jobs (tenant, created_at);
