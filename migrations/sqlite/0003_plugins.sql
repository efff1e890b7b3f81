-- Tenant plugins: every uploaded version of every plugin, and which one is
-- active. A name keeps one world across its versions; at most one version
-- is active per (tenant, world). Activating or removing a plugin changes
-- search results, so it bumps the tenant's generation (in the same
-- transaction, by the application).
CREATE TABLE plugins (
    tenant     TEXT NOT NULL REFERENCES tenants (id),
    name       TEXT NOT NULL,
    version    INTEGER NOT NULL,
    world      TEXT NOT NULL CHECK (world IN ('filter', 'ranker', 'ingest')),
    digest     TEXT NOT NULL,             -- SHA-256 of the component, hex
    size_bytes INTEGER NOT NULL,
    active     INTEGER NOT NULL DEFAULT 0,
    params     TEXT NOT NULL DEFAULT '{}', -- the tenant's parameters (JSON object of strings)
    memory_mb  INTEGER,                    -- the tenant's memory cap; NULL: the default
    created_at TEXT NOT NULL,
    activated_at TEXT,
    PRIMARY KEY (tenant, name, version)
);
CREATE UNIQUE INDEX plugins_one_active ON plugins (tenant, world) WHERE active = 1;
