-- The index rows the consent decision looks up for each row it decides
-- (consent_decides_among, migration 0031: the row's `category` and `_security` codes), kept
-- apart and covering, so that the lookup reads those entries alone from the index: through
-- search_token_resource it read every token row of the resource from the table to keep the
-- few it wanted (a Patient has a dozen or more and no category; docs/PERFORMANCE.md,
-- "Consent rules once per query").
CREATE INDEX search_token_consent ON search_token (res_type, res_id) INCLUDE (param, code)
    WHERE param IN ('_security', 'category');
