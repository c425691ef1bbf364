-- The rules of one patient that apply to an access, read once per query rather than once per
-- row, for a search that names its patient (`Observation?patient=P`: every row it returns is
-- P's).
--
-- consent_decides (0028) reads the row's patient's applicable rules on every row it decides,
-- and the consent condition's `ruled` probe (store/consent_sql.py) asks consent_rule again
-- for each row before that: two index probes per row, all for the same patient when the
-- search names one. Split here into its two parts: consent_rules_applying (the rules, read
-- with the same test as 0028's) and consent_decides_among (0028's decision, computed from
-- those rules). For a search that names patient P, the condition reads P's rules once, as an
-- uncorrelated sub-select PostgreSQL evaluates once per query (an InitPlan), and decides P's
-- rows from them; other rows, of any patient, keep the per-row form
-- (docs/PERFORMANCE.md, "Consent rules once per query"). Same decision, row for row
-- (tests/privacy/test_consent_decision.py compares both forms with 0024's function).
CREATE FUNCTION consent_rules_applying(
    row_patient text, access_actors text[], access_purpose text, access_patient text)
RETURNS consent_rule[] LANGUAGE plpgsql STABLE PARALLEL SAFE AS $$
BEGIN
    -- On the acting patient's own rows only rules naming an actor of the access apply.
    RETURN ARRAY(
        SELECT x FROM consent_rule x
         WHERE x.patient_id = row_patient
           AND (x.actors && access_actors
                OR (x.actors IS NULL AND (access_patient IS NULL OR row_patient <> access_patient)))
           AND (x.purposes IS NULL OR access_purpose = ANY(x.purposes))
           AND (x.period_start IS NULL OR x.period_start <= now())
           AND (x.period_end IS NULL OR x.period_end > now()));
END $$;

CREATE FUNCTION consent_decides_among(
    rules consent_rule[], row_type text, row_id text, row_patient text, access_patient text,
    opt_out boolean, sensitive text[])
RETURNS boolean LANGUAGE plpgsql STABLE PARALLEL SAFE COST 10000 AS $$
DECLARE
    c consent_rule;
    row_labels text[];
    row_cats text[];
    d integer := -1;
    p integer := -1;
    lp integer := -1;
    others boolean := access_patient IS NULL OR row_patient <> access_patient;
BEGIN
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

-- The per-row form, as 0028 decided it: the row's patient's rules, then the decision.
CREATE OR REPLACE FUNCTION consent_decides(
    row_type text, row_id text, row_patient text, access_actors text[], access_purpose text,
    access_patient text, opt_out boolean, sensitive text[])
RETURNS boolean LANGUAGE plpgsql STABLE PARALLEL SAFE COST 10000 AS $$
BEGIN
    RETURN consent_decides_among(
        consent_rules_applying(row_patient, access_actors, access_purpose, access_patient),
        row_type, row_id, row_patient, access_patient, opt_out, sensitive);
END $$;
