-- The per-row parts of the consent condition (store/consent_sql.py), as PL/pgSQL functions
-- that the condition calls inside each query's own WHERE clause.
--
-- Why functions: written inline, as correlated sub-selects, PostgreSQL planned them anew on
-- every query, and planning was most of what the condition cost — 1-2 ms per search where
-- the search's own statement plans in 0.1-1 ms (docs/PERFORMANCE.md, "System token under
-- Consents"). PL/pgSQL keeps each inner statement's plan for the session, so a query pays
-- only for calling them on the rows it returns. They are STABLE (now() of the statement)
-- and read the same tables in the query's snapshot: the decision is the same, inside the
-- same query, so totals and paging still never count a withheld row.

-- The row carries a sensitive security label (docs/privacy.md "Deciding", 4; the list is
-- fhir/consent.py SENSITIVE_LABELS, passed by the caller).
CREATE OR REPLACE FUNCTION consent_sensitive(row_type text, row_id text, sensitive text[])
RETURNS boolean LANGUAGE plpgsql STABLE PARALLEL SAFE COST 10000 AS $$
BEGIN
    RETURN EXISTS (
        SELECT 1 FROM search_token t
        WHERE t.res_type = row_type AND t.res_id = row_id AND t.param = '_security'
          AND t.code = ANY(sensitive));
END $$;

-- The full decision on one row of a patient, for one access (actors, purpose, the acting
-- patient or NULL, the deployment default): docs/privacy.md "Deciding", reduced to three
-- depths over the patient's applicable rules (-1: none applies) — the deepest deny d, the
-- deepest permit p, the deepest permit naming a label lp:
--   denied:    some applicable deny has no deeper applicable permit  (d >= 0 and not p > d)
--   opt-in:    someone else's row needs an undenied permit           (p > d)
--   sensitive: someone else's labelled row needs an undenied
--              permit naming one of its labels                      (lp > d)
-- The row's category and label codes are looked up once, then matched as arrays.
-- COST: high, so that the planner calls it on as few rows as it can (after the query's
-- own joins). Never NULL.
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
