-- pgbench script: move a recent order along, or cancel it (deleting its
-- lines through ON DELETE CASCADE), in one transaction.
\set back random(1, 200)
\set action random(1, 4)
BEGIN;
SELECT coalesce(max(id), 0) - :back AS oid FROM orders \gset
UPDATE orders SET status = CASE status WHEN 'new' THEN 'paid' ELSE 'shipped' END WHERE id = :oid AND :action < 4;
UPDATE order_items SET qty = qty + 1 WHERE order_id = :oid AND line = 3 AND :action = 2;
DELETE FROM orders WHERE id = :oid AND :action = 4;
COMMIT;
