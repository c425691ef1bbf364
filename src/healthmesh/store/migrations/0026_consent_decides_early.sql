-- consent_decides (0024) settles a row that a deny withholds by its type alone — an
-- opt-out, a "no Observations" — from the patient's rules, before looking the row's
-- category and label index rows up (docs/privacy.md "Deciding", step 4).
CREATE OR REPLACE FUNCTION consent_decides(
    row_type text, row_id text, row_patient text, access_actors text[], access_purpose text,
    access_patient text, opt_out boolean, sensitive text[])
RETURNS boolean LANGUAGE plpgsql STABLE PARALLEL SAFE COST 10000 AS $$
DECLARE
    row_labels text[];
    row_cats text[];
    d integer;
    p integer;
    lp integer;
    others boolean := access_patient IS NULL OR row_patient <> access_patient;
BEGIN
    -- Withheld whatever the row's categories and labels are: a deny that covers the row by
    -- its type alone, and no applicable permit (of any data scope) deeper. One look at the
    -- patient's rules settles an opt-out's rows, without the row's index rows.
    SELECT coalesce(max(c.depth) FILTER (WHERE c.effect = 'deny' AND c.labels IS NULL
                                           AND c.cat_types IS NULL
                                           AND (c.types IS NULL OR row_type = ANY(c.types))), -1),
           coalesce(max(c.depth) FILTER (WHERE c.effect = 'permit'), -1)
      INTO d, p
      FROM consent_rule c
     WHERE c.patient_id = row_patient
       AND (c.actors && access_actors OR (c.actors IS NULL AND others))
       AND (c.purposes IS NULL OR access_purpose = ANY(c.purposes))
       AND (c.period_start IS NULL OR c.period_start <= now())
       AND (c.period_end IS NULL OR c.period_end > now());
    IF d >= 0 AND p <= d THEN
        RETURN false;
    END IF;
    SELECT coalesce(array_agg(t.code) FILTER (WHERE t.param = '_security'), '{}'),
           coalesce(array_agg(t.res_type || '|' || t.code) FILTER (WHERE t.param = 'category'),
                    '{}')
      INTO row_labels, row_cats
      FROM search_token t
     WHERE t.res_type = row_type AND t.res_id = row_id AND t.param IN ('_security', 'category');
    SELECT coalesce(max(c.depth) FILTER (WHERE c.effect = 'deny'), -1),
           coalesce(max(c.depth) FILTER (WHERE c.effect = 'permit'), -1),
           coalesce(max(c.depth) FILTER (WHERE c.effect = 'permit' AND c.labels IS NOT NULL), -1)
      INTO d, p, lp
      FROM consent_rule c
     WHERE c.patient_id = row_patient
       -- who: on the acting patient's own rows only rules naming an actor of the access
       AND (c.actors && access_actors OR (c.actors IS NULL AND others))
       AND (c.purposes IS NULL OR access_purpose = ANY(c.purposes))
       AND (c.period_start IS NULL OR c.period_start <= now())
       AND (c.period_end IS NULL OR c.period_end > now())
       AND (c.types IS NULL OR row_type = ANY(c.types))
       AND (c.cat_types IS NULL OR row_type = ANY(c.cat_types) OR row_cats && c.cat_codes)
       AND (c.labels IS NULL OR row_labels && c.labels);
    RETURN (d < 0 OR p > d)
       AND (opt_out OR NOT others OR p > d)
       AND (NOT (others AND row_labels && sensitive) OR lp > d);
END $$;
