-- Which attempt at charging an order is the current one. A retry of a
-- failed order is a new attempt with an idempotency key of its own at the
-- provider: the reconciler cancels an attempt's key when it finds it
-- unused, so a retry must not reuse it.
ALTER TABLE orders ADD COLUMN attempt INTEGER NOT NULL DEFAULT 0;
