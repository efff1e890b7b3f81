-- A tenant's own rate limits and quotas, set by the admin (JSON; `{}`: the
-- service defaults and no quota).
ALTER TABLE tenants ADD COLUMN limits TEXT NOT NULL DEFAULT '{}';
