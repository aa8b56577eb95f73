-- The console's tenant list (issue 26): its pages are keyset pages in
-- (created_at, id) order, newest first, and its search by key is a prefix
-- search. Without these, every page sorted and every search scanned the
-- whole table (bench/results/console.md: ~5 ms of PostgreSQL CPU per list
-- page with 10,000 tenants).
CREATE INDEX tenants_newest ON tenants (created_at DESC, id DESC);
-- Bytewise order: a key prefix is a range (key >= 'ab' AND key < 'ab~'),
-- which the default collation, ignoring hyphens at first, does not keep.
CREATE INDEX tenants_key_bytes ON tenants (key COLLATE "C");
