-- pgbench script: one order with three lines, its total, and the customer's
-- order count, in one transaction across the three tables.
\set cid random(1, 1000)
\set q1 random(1, 5)
\set q2 random(1, 5)
BEGIN;
INSERT INTO orders (customer_id, status) VALUES (:cid, 'new') RETURNING id AS oid \gset
INSERT INTO order_items (order_id, line, sku, qty, price) VALUES
    (:oid, 1, 'SKU-' || :q1, :q1, 9.99),
    (:oid, 2, 'SKU-' || (:q2 + 10), :q2, 24.50),
    (:oid, 3, 'SKU-99', 1, 3.25);
UPDATE orders SET total = (SELECT sum(qty * price) FROM order_items WHERE order_id = :oid) WHERE id = :oid;
UPDATE customers SET order_count = order_count + 1, updated_at = now() WHERE id = :cid;
COMMIT;
