-- Tributary demo schema: the same DDL runs on the source and on the target.
-- Foreign keys hold on both; the consumer's replay runs with
-- session_replication_role = replica, so the target does not re-check them
-- and whole source transactions keep the target consistent.
CREATE TABLE customers (
    id          int PRIMARY KEY,
    name        text NOT NULL,
    email       text NOT NULL UNIQUE,
    region      text NOT NULL,
    order_count int NOT NULL DEFAULT 0,
    updated_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE orders (
    id          bigserial PRIMARY KEY,
    customer_id int NOT NULL REFERENCES customers (id),
    status      text NOT NULL CHECK (status IN ('new', 'paid', 'shipped')),
    total       numeric(12,2) NOT NULL DEFAULT 0,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX ON orders (customer_id);

CREATE TABLE order_items (
    order_id bigint NOT NULL REFERENCES orders (id) ON DELETE CASCADE,
    line     int NOT NULL,
    sku      text NOT NULL,
    qty      int NOT NULL CHECK (qty > 0),
    price    numeric(10,2) NOT NULL,
    PRIMARY KEY (order_id, line)
);
