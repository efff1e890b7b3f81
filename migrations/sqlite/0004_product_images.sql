-- An image uploaded for a product (PUT /v1/tenants/{t}/products/{id}/image):
-- the blob key of the original, content-addressed by its SHA-256. When set,
-- indexing embeds this image instead of fetching `image_url`.
ALTER TABLE products ADD COLUMN image_key TEXT;
