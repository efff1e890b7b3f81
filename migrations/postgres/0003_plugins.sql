-- Tenant plugins: every uploaded version of every plugin, and which one is
-- active. A name keeps one world across its versions; at most one version
-- is active per (tenant, world). Activating or removing a plugin changes
-- search results, so it bumps the tenant's generation (in the same
-- transaction, by the application).
CREATE TABLE plugins (
    tenant       TEXT NOT NULL REFERENCES tenants (id),
    name         TEXT NOT NULL,
    version      BIGINT NOT NULL,
    world        TEXT NOT NULL CHECK (world IN ('filter', 'ranker', 'ingest')),
    digest       TEXT NOT NULL,              -- SHA-256 of the component, hex
    size_bytes   BIGINT NOT NULL,
    active       BOOLEAN NOT NULL DEFAULT FALSE,
    params       JSONB NOT NULL DEFAULT '{}', -- the tenant's parameters (object of strings)
    memory_mb    BIGINT,                     -- the tenant's memory cap; NULL: the default
    created_at   TIMESTAMPTZ NOT NULL,
    activated_at TIMESTAMPTZ,
    PRIMARY KEY (tenant, name, version)
);
CREATE UNIQUE INDEX plugins_one_active ON plugins (tenant, world) WHERE active;
