-- A per-tenant counter that every product change bumps (by trigger, in the
-- writing transaction). Cached search pages are keyed by it, so none
-- outlives the data it was computed from, on any host.
ALTER TABLE tenants ADD COLUMN generation BIGINT NOT NULL DEFAULT 0;

CREATE FUNCTION vitrine_bump_tenant_generation() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        UPDATE tenants SET generation = generation + 1 WHERE id = OLD.tenant;
    ELSE
        UPDATE tenants SET generation = generation + 1 WHERE id = NEW.tenant;
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER products_bump_generation
AFTER INSERT OR UPDATE OR DELETE ON products
FOR EACH ROW EXECUTE FUNCTION vitrine_bump_tenant_generation();
