-- Whether a consent_rule row applies to an access (who, why, when), as one function call in
-- the consent condition's `ruled` sub-select (store/consent_sql.py; docs/PERFORMANCE.md,
-- "Consent planning").
--
-- Written out, the test was four clauses on consent_rule's columns — an array overlap, an
-- ANY, two comparisons with now() — which PostgreSQL estimated against the table's
-- statistics each time it planned a search (a search whose values are not keys is planned
-- on every execution): a seventh of what the condition cost to plan. Called here, the test
-- is not estimated; it runs only on the rules of the row's patient that the index probe
-- finds (none, for most patients), so running it costs next to nothing. Same meaning as the
-- clauses: NULL where they would be NULL is false, as in a WHERE clause. (A test that said
-- yes too often would only cost time: a row of a ruled patient gets the full decision, which
-- is the defaults where no rule applies; one that said no too often would skip a rule.)
CREATE FUNCTION consent_rule_applies(
    rule_actors text[], rule_purposes text[], rule_start timestamptz, rule_end timestamptz,
    rule_patient text, access_actors text[], access_purpose text, access_patient text)
RETURNS boolean LANGUAGE plpgsql STABLE PARALLEL SAFE AS $$
BEGIN
    RETURN coalesce(
        -- who: on the acting patient's own rows only rules naming an actor of the access
        (rule_actors && access_actors
         OR (rule_actors IS NULL AND (access_patient IS NULL OR rule_patient <> access_patient)))
        AND (rule_purposes IS NULL OR access_purpose = ANY(rule_purposes))
        AND (rule_start IS NULL OR rule_start <= now())
        AND (rule_end IS NULL OR rule_end > now()),
        false);
END $$;
