-- consent_decides (0024, 0026) reads the patient's applicable rules once.
--
-- 0026 asked consent_rule twice on the rows it could not settle by type alone: once for the
-- early exit, and again, after looking the row's categories and labels up, for the depths
-- with the row-dependent tests (types, categories, labels) in the WHERE clause. Those rows
-- are every row of a patient whose Consent has a category deny ("no labs": each of the
-- patient's Observations, ~50 µs a row at 1M resources, three statements). Here the rules
-- that apply to the access (actors, purpose, period) are read once, into an array of
-- consent_rule rows; the early exit and the depths are computed from it in PL/pgSQL, so a
-- row the early exit does not settle costs two statements: the rules and the row's index
-- rows (docs/PERFORMANCE.md, "Consent planning"). Same decision, row for row
-- (tests/privacy/test_consent_decision.py compares it with 0024's on every case).
CREATE OR REPLACE FUNCTION consent_decides(
    row_type text, row_id text, row_patient text, access_actors text[], access_purpose text,
    access_patient text, opt_out boolean, sensitive text[])
RETURNS boolean LANGUAGE plpgsql STABLE PARALLEL SAFE COST 10000 AS $$
DECLARE
    rules consent_rule[];
    c consent_rule;
    row_labels text[];
    row_cats text[];
    d integer := -1;
    p integer := -1;
    lp integer := -1;
    others boolean := access_patient IS NULL OR row_patient <> access_patient;
BEGIN
    -- The rules that apply to this access, whatever the row's data is.
    rules := ARRAY(
        SELECT x FROM consent_rule x
         WHERE x.patient_id = row_patient
           AND (x.actors && access_actors OR (x.actors IS NULL AND others))
           AND (x.purposes IS NULL OR access_purpose = ANY(x.purposes))
           AND (x.period_start IS NULL OR x.period_start <= now())
           AND (x.period_end IS NULL OR x.period_end > now()));
    -- Withheld whatever the row's categories and labels are: a deny that covers the row by
    -- its type alone, and no applicable permit (of any data scope) deeper.
    FOREACH c IN ARRAY rules LOOP
        IF c.effect = 'deny' AND c.labels IS NULL AND c.cat_types IS NULL
           AND (c.types IS NULL OR row_type = ANY(c.types)) THEN
            d := greatest(d, c.depth);
        ELSIF c.effect = 'permit' THEN
            p := greatest(p, c.depth);
        END IF;
    END LOOP;
    IF d >= 0 AND p <= d THEN
        RETURN false;
    END IF;
    SELECT coalesce(array_agg(t.code) FILTER (WHERE t.param = '_security'), '{}'),
           coalesce(array_agg(t.res_type || '|' || t.code) FILTER (WHERE t.param = 'category'),
                    '{}')
      INTO row_labels, row_cats
      FROM search_token t
     WHERE t.res_type = row_type AND t.res_id = row_id AND t.param IN ('_security', 'category');
    d := -1;
    p := -1;
    FOREACH c IN ARRAY rules LOOP
        -- The rule's data scope against the row: all that are given must match. A test
        -- that is NULL fails, as it would in a WHERE clause.
        CONTINUE WHEN NOT coalesce(c.types IS NULL OR row_type = ANY(c.types), false);
        CONTINUE WHEN NOT coalesce(c.cat_types IS NULL OR row_type = ANY(c.cat_types)
                                   OR row_cats && c.cat_codes, false);
        CONTINUE WHEN NOT coalesce(c.labels IS NULL OR row_labels && c.labels, false);
        IF c.effect = 'deny' THEN
            d := greatest(d, c.depth);
        ELSE
            p := greatest(p, c.depth);
            IF c.labels IS NOT NULL THEN
                lp := greatest(lp, c.depth);
            END IF;
        END IF;
    END LOOP;
    RETURN (d < 0 OR p > d)
       AND (opt_out OR NOT others OR p > d)
       AND (NOT (others AND row_labels && sensitive) OR lp > d);
END $$;
