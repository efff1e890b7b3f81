-- A per-tenant counter that every product change bumps (by trigger, in the
-- writing transaction). Cached search pages are keyed by it, so none
-- outlives the data it was computed from, on any host.
ALTER TABLE tenants ADD COLUMN generation INTEGER NOT NULL DEFAULT 0;

CREATE TRIGGER products_bump_generation_insert AFTER INSERT ON products
BEGIN
    UPDATE tenants SET generation = generation + 1 WHERE id = NEW.tenant;
END;

CREATE TRIGGER products_bump_generation_update AFTER UPDATE ON products
BEGIN
    UPDATE tenants SET generation = generation + 1 WHERE id = NEW.tenant;
END;

CREATE TRIGGER products_bump_generation_delete AFTER DELETE ON products
BEGIN
    UPDATE tenants SET generation = generation + 1 WHERE id = OLD.tenant;
END;
