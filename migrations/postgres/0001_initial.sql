-- Vitrine catalog, PostgreSQL backend (many hosts, one database).

CREATE TABLE tenants (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL
);

INSERT INTO tenants (id, name, created_at)
VALUES ('default', 'Default tenant', date_trunc('milliseconds', now()));

CREATE TABLE api_keys (
    id          TEXT PRIMARY KEY,
    tenant      TEXT NOT NULL REFERENCES tenants (id),
    secret_hash TEXT NOT NULL,           -- SHA-256 of the secret, hex; the secret is never stored
    scopes      TEXT[] NOT NULL,
    label       TEXT,
    created_at  TIMESTAMPTZ NOT NULL
);
CREATE INDEX api_keys_tenant ON api_keys (tenant);

CREATE TABLE products (
    id           BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant       TEXT NOT NULL REFERENCES tenants (id),
    external_id  TEXT NOT NULL,
    title        TEXT NOT NULL,
    description  TEXT,
    category     TEXT,
    price        NUMERIC,                -- exact; NUMERIC keeps the scale the client sent
    currency     TEXT,
    image_url    TEXT,
    tags         JSONB NOT NULL DEFAULT '[]',
    in_stock     BOOLEAN NOT NULL DEFAULT TRUE,
    metadata     JSONB NOT NULL DEFAULT '{}',
    index_status TEXT NOT NULL DEFAULT 'pending'
                 CHECK (index_status IN ('pending', 'indexed', 'failed')),
    index_error  TEXT,
    version      BIGINT NOT NULL DEFAULT 1,
    created_at   TIMESTAMPTZ NOT NULL,
    updated_at   TIMESTAMPTZ NOT NULL,
    UNIQUE (tenant, external_id)
);
CREATE INDEX products_tenant_category ON products (tenant, category, id);

CREATE TABLE search_logs (
    id                BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant            TEXT NOT NULL,
    query_type        TEXT NOT NULL,
    query_text        TEXT,
    query_image_url   TEXT,
    results_count     INTEGER NOT NULL,
    execution_time_ms DOUBLE PRECISION NOT NULL,
    user_id           TEXT,
    session_id        TEXT,
    created_at        TIMESTAMPTZ NOT NULL
);
CREATE INDEX search_logs_tenant_time ON search_logs (tenant, created_at);

CREATE TABLE jobs (
    id               TEXT PRIMARY KEY,
    kind             TEXT NOT NULL,
    tenant           TEXT,               -- NULL for jobs that span every tenant
    payload          JSONB NOT NULL,
    status           TEXT NOT NULL DEFAULT 'queued'
                     CHECK (status IN ('queued', 'running', 'succeeded', 'failed', 'cancelled')),
    attempts         INTEGER NOT NULL DEFAULT 0,
    max_attempts     INTEGER NOT NULL,
    run_after        TIMESTAMPTZ NOT NULL,
    lease_owner      TEXT,
    lease_expires_at TIMESTAMPTZ,
    progress_done    BIGINT NOT NULL DEFAULT 0,
    progress_total   BIGINT NOT NULL DEFAULT 0,
    last_error       TEXT,
    result           JSONB,
    created_at       TIMESTAMPTZ NOT NULL,
    updated_at       TIMESTAMPTZ NOT NULL
);
-- Workers claim the oldest runnable queued job; this index serves
-- `WHERE status = 'queued' AND run_after <= now() ... FOR UPDATE SKIP LOCKED`.
CREATE INDEX jobs_claim ON jobs (status, run_after);
CREATE INDEX jobs_tenant ON jobs (tenant, created_at);
