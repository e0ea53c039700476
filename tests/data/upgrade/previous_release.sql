-- What a store of the release before upgrades (0.1.0, before fold versions, stable views
-- and migrations) holds that this one adds, taken out again: run on a store this code has
-- just built, it leaves the layout and rows that release wrote. tests/integration/
-- test_upgrades.py builds its "previous release" store this way. One statement a line.
DROP VIEW IF EXISTS custate_customers;
DROP VIEW IF EXISTS custate_segments;
DROP VIEW IF EXISTS custate_tiers;
DROP VIEW IF EXISTS custate_cards;
DROP VIEW IF EXISTS custate_gift_cards;
DROP VIEW IF EXISTS custate_orders;
DROP TABLE custate_schema_version;
DELETE FROM custate_readmodel WHERE name = 'views' OR name LIKE 'fold_version:%';
-- that release made each table on first use: a store that never forwarded had none of these
DROP TABLE IF EXISTS custate_forward_cursors;
DROP TABLE IF EXISTS custate_forward_dead;
