-- Source only: starting data (copied by the producer's initial snapshot) and
-- the publication the producer streams.
INSERT INTO customers (id, name, email, region)
SELECT g, 'Customer ' || g, 'c' || g || '@example.com', (ARRAY['north', 'south', 'east', 'west'])[1 + g % 4]
FROM generate_series(1, 1000) g;

CREATE PUBLICATION demo FOR TABLE customers, orders, order_items;
