-- Index-only plans for searches driven by the index tables (docs/PERFORMANCE.md#search).
--
-- At 1M resources, `Observation?code=X&_summary=count` (32k matches) spent its time not in
-- finding the token rows but in visiting heap rows: the token rows' heap, scattered over
-- ~11k pages, for their res_id; then each resource's heap row (~1 kB of content each, or a
-- sequential scan of the whole 1.2 GB table) for `NOT deleted`. Two indexes answer both
-- from the index alone, once VACUUM has set the visibility map (autovacuum does it after a
-- bulk load; the search benchmark runs it explicitly):
--
-- 1. the live resources' keys: semi-joins from index rows to `resource r WHERE NOT
--    r.deleted` probe or scan this instead of the table (tombstones are not in it);
CREATE UNIQUE INDEX IF NOT EXISTS resource_live ON resource (res_type, id) WHERE NOT deleted;

-- 2. token lookups that also carry res_id, replacing the key-only index (same keys, so every
--    plan that used it can use this one). It costs ~0.9 kB per resource at Synthea's ~8.5
--    token rows per resource: res_id is stored per row, where the key-only index
--    deduplicated equal keys.
CREATE INDEX IF NOT EXISTS search_token_code_res
    ON search_token (res_type, param, code, system) INCLUDE (res_id);
DROP INDEX IF EXISTS search_token_code;
