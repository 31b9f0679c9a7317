-- Settling orders left `processing` (payment's reconciler).
-- The W3C headers of the request that created the order, so the
-- reconciler's trace can link back to the checkout's.
ALTER TABLE orders ADD COLUMN trace_context JSONB NOT NULL DEFAULT '{}'::jsonb;
-- The reconciler's scan: orders still processing, oldest first.
CREATE INDEX orders_processing ON orders (updated_at) WHERE status = 'processing';
