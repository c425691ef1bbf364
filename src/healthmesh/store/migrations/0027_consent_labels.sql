-- The sensitive labels the consent condition looks for in a row's `_security` index rows,
-- handed through a function (store/consent_sql.py `_labelled`; docs/PERFORMANCE.md,
-- "Consent planning").
--
-- Written as a literal list, `code = ANY('{ETH,HIV,…}')` was estimated, value by value,
-- against search_token's statistics (its per-column and extended MCV lists) each time a
-- statement was planned — and search statements are planned on every execution: a fifth of
-- what the consent condition cost PostgreSQL to plan, for an estimate that chooses nothing
-- (the test probes one row's index entries). The planner does not look into a PL/pgSQL
-- function, so through this one the list is an opaque value, read once per statement.
-- STABLE, not IMMUTABLE: an immutable function would be folded back into the literal.
CREATE FUNCTION consent_labels(labels text[])
RETURNS text[] LANGUAGE plpgsql STABLE PARALLEL SAFE AS $$
BEGIN
    RETURN labels;
END $$;

-- The same probe's index: the rows that carry security labels, a few per thousand (at 1M
-- resources 17,476 `_security` rows of 8.8M in search_token: 784 kB). Through
-- search_token_resource the probe read every index row of the resource (an Observation has
-- ~10) to find none; here it finds none at once: ~1 µs a row where it was ~6, on every row
-- of a patient no rule applies to (`Observation?patient=P&category=laboratory` decides each
-- of the patient's labs before sorting them). Writes pay only for labelled rows.
CREATE INDEX search_token_labels ON search_token (res_type, res_id) WHERE param = '_security';
