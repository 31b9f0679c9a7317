-- tracelab schema. One database, tables owned per service:
-- search: products; payment: orders, order_items, payments, outbox;
-- notification: notifications.

CREATE TABLE products (
    id          BIGSERIAL PRIMARY KEY,
    sku         TEXT NOT NULL UNIQUE,
    name        TEXT NOT NULL,
    description TEXT NOT NULL DEFAULT '',
    price       BIGINT NOT NULL CHECK (price > 0),
    currency    TEXT NOT NULL DEFAULT 'JPY',
    stock       INTEGER NOT NULL DEFAULT 100
);
CREATE INDEX products_name_lower ON products (lower(name));

CREATE TABLE orders (
    id              UUID PRIMARY KEY,
    user_id         TEXT NOT NULL,
    idempotency_key TEXT NOT NULL,
    amount          BIGINT NOT NULL CHECK (amount > 0),
    currency        TEXT NOT NULL,
    -- processing -> completed | declined | failed
    status          TEXT NOT NULL,
    failure_code    TEXT,
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    -- The same key from the same user is the same checkout: never two charges.
    UNIQUE (user_id, idempotency_key)
);

CREATE TABLE order_items (
    order_id   UUID NOT NULL REFERENCES orders (id),
    product_id BIGINT NOT NULL REFERENCES products (id),
    quantity   INTEGER NOT NULL CHECK (quantity > 0),
    unit_price BIGINT NOT NULL,
    PRIMARY KEY (order_id, product_id)
);

CREATE TABLE payments (
    id             UUID PRIMARY KEY,
    order_id       UUID NOT NULL UNIQUE REFERENCES orders (id),
    provider       TEXT NOT NULL,
    transaction_id TEXT NOT NULL UNIQUE,
    amount         BIGINT NOT NULL,
    currency       TEXT NOT NULL,
    card_last4     TEXT NOT NULL,
    status         TEXT NOT NULL,
    created_at     TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- Transactional outbox: written in the payment's transaction, published by
-- the relay with publisher confirms, then marked sent.
CREATE TABLE outbox (
    id            BIGSERIAL PRIMARY KEY,
    event_id      UUID NOT NULL UNIQUE,
    routing_key   TEXT NOT NULL,
    payload       JSONB NOT NULL,
    -- W3C headers (traceparent, tracestate, baggage) of the span that wrote
    -- the row, so the asynchronous hop stays in the same trace.
    trace_context JSONB NOT NULL DEFAULT '{}'::jsonb,
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    attempts      INTEGER NOT NULL DEFAULT 0,
    last_error    TEXT,
    sent_at       TIMESTAMPTZ
);
CREATE INDEX outbox_unsent ON outbox (id) WHERE sent_at IS NULL;

CREATE TABLE notifications (
    id         BIGSERIAL PRIMARY KEY,
    -- Idempotency: a redelivered event never notifies twice.
    event_id   UUID NOT NULL UNIQUE,
    order_id   UUID NOT NULL,
    user_id    TEXT NOT NULL,
    channel    TEXT NOT NULL,
    recipient  TEXT NOT NULL,
    subject    TEXT NOT NULL,
    body       TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
