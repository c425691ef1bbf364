-- AuditEvents' search index rows packed, one row an event (docs/storage.md "The audit
-- index"; docs/privacy.md "Audit").
--
-- Every audited read stores an AuditEvent, and its ~16 index rows (type, subtype, action,
-- outcome, agent, entity, source, address …) were 16 tuples in the search tables and ~70
-- B-tree entries: two thirds of what recording an event cost PostgreSQL, on the path every
-- secured read waits for (docs/PERFORMANCE.md, "Auditing on vs off"). Here an event's rows
-- are one jsonb value, one tuple, one key. Only `patient` and `date` — the selective
-- parameters, "who looked at my record, and when" — stay rows of search_reference and
-- search_date, so a search by either is still an index scan at any volume
-- (store/search/tables.py AUDIT_REAL_PARAMS). The other parameters are matched on the
-- packed rows of the events a query reaches by other means (the patient's compartment, a
-- date range); searched on alone, they scan the trail.
--
-- rows: {"token": [[param, system, code, display, elem], …], "string": [[param, norm,
-- exact, elem], …], …}: per kind, each row's values in its search table's column order
-- (store/copy_rows.py INDEX_COLUMNS), then the composite element number.
CREATE TABLE audit_index (
    res_id     text PRIMARY KEY,   -- the AuditEvent's id
    patient_id text,               -- its compartment key, as in the search tables' rows
    rows       jsonb NOT NULL
);

-- The search compiler reads an AuditEvent parameter's packed rows (store/search/tables.py)
-- through these, with the same columns as search_<kind>: audit_search_<kind>, the view, for
-- queries that look rows up by value (`_has:AuditEvent:…`, `_revinclude=AuditEvent:…`),
-- and audit_rows_<kind>(type, id) for clauses on one row. Both also give any AuditEvent
-- rows in the search table itself (written by another path: a `healthmesh load` of
-- AuditEvents, a reindex for a custom SearchParameter).
CREATE VIEW audit_search_token AS
    SELECT res_type, res_id, param, system, code, display, patient_id, elem FROM search_token WHERE res_type = 'AuditEvent'
    UNION ALL SELECT 'AuditEvent'::text AS res_type, a.res_id AS res_id, x->>0 AS param, x->>1 AS system, x->>2 AS code, x->>3 AS display, a.patient_id AS patient_id, (x->>4)::integer AS elem
    FROM audit_index a CROSS JOIN LATERAL jsonb_array_elements(a.rows->'token') x;

CREATE VIEW audit_search_string AS
    SELECT res_type, res_id, param, norm, exact, patient_id, elem FROM search_string WHERE res_type = 'AuditEvent'
    UNION ALL SELECT 'AuditEvent'::text AS res_type, a.res_id AS res_id, x->>0 AS param, x->>1 AS norm, x->>2 AS exact, a.patient_id AS patient_id, (x->>3)::integer AS elem
    FROM audit_index a CROSS JOIN LATERAL jsonb_array_elements(a.rows->'string') x;

CREATE VIEW audit_search_date AS
    SELECT res_type, res_id, param, low, high, patient_id, elem FROM search_date WHERE res_type = 'AuditEvent'
    UNION ALL SELECT 'AuditEvent'::text AS res_type, a.res_id AS res_id, x->>0 AS param, (x->>1)::timestamptz AS low, (x->>2)::timestamptz AS high, a.patient_id AS patient_id, (x->>3)::integer AS elem
    FROM audit_index a CROSS JOIN LATERAL jsonb_array_elements(a.rows->'date') x;

CREATE VIEW audit_search_number AS
    SELECT res_type, res_id, param, value, patient_id, elem FROM search_number WHERE res_type = 'AuditEvent'
    UNION ALL SELECT 'AuditEvent'::text AS res_type, a.res_id AS res_id, x->>0 AS param, (x->>1)::numeric AS value, a.patient_id AS patient_id, (x->>2)::integer AS elem
    FROM audit_index a CROSS JOIN LATERAL jsonb_array_elements(a.rows->'number') x;

CREATE VIEW audit_search_quantity AS
    SELECT res_type, res_id, param, value, system, code, unit, canonical_value, canonical_code, patient_id, elem FROM search_quantity WHERE res_type = 'AuditEvent'
    UNION ALL SELECT 'AuditEvent'::text AS res_type, a.res_id AS res_id, x->>0 AS param, (x->>1)::numeric AS value, x->>2 AS system, x->>3 AS code, x->>4 AS unit, (x->>5)::numeric AS canonical_value, x->>6 AS canonical_code, a.patient_id AS patient_id, (x->>7)::integer AS elem
    FROM audit_index a CROSS JOIN LATERAL jsonb_array_elements(a.rows->'quantity') x;

CREATE VIEW audit_search_uri AS
    SELECT res_type, res_id, param, uri, patient_id, elem FROM search_uri WHERE res_type = 'AuditEvent'
    UNION ALL SELECT 'AuditEvent'::text AS res_type, a.res_id AS res_id, x->>0 AS param, x->>1 AS uri, a.patient_id AS patient_id, (x->>2)::integer AS elem
    FROM audit_index a CROSS JOIN LATERAL jsonb_array_elements(a.rows->'uri') x;

CREATE VIEW audit_search_reference AS
    SELECT res_type, res_id, param, target_type, target_id, target_url, patient_id, elem FROM search_reference WHERE res_type = 'AuditEvent'
    UNION ALL SELECT 'AuditEvent'::text AS res_type, a.res_id AS res_id, x->>0 AS param, x->>1 AS target_type, x->>2 AS target_id, x->>3 AS target_url, a.patient_id AS patient_id, (x->>4)::integer AS elem
    FROM audit_index a CROSS JOIN LATERAL jsonb_array_elements(a.rows->'reference') x;

-- An AuditEvent's (or, for system-level searches, any resource's) rows of one kind, for a
-- clause on the row at hand: EXISTS (SELECT 1 FROM audit_rows_token(r.res_type, r.id) i
-- WHERE …). The view cannot serve that: its packed half is a join, which PostgreSQL does
-- not flatten into the query, so it would read the whole trail for each row; the
-- function's reference to the row makes each call two primary-key lookups.

CREATE FUNCTION audit_rows_token(row_type text, row_id text)
RETURNS TABLE (res_type text, res_id text, param text, system text, code text, display text, patient_id text, elem integer)
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT res_type, res_id, param, system, code, display, patient_id, elem FROM search_token WHERE res_type = row_type AND res_id = row_id
    UNION ALL SELECT 'AuditEvent'::text AS res_type, a.res_id AS res_id, x->>0 AS param, x->>1 AS system, x->>2 AS code, x->>3 AS display, a.patient_id AS patient_id, (x->>4)::integer AS elem
    FROM audit_index a CROSS JOIN LATERAL jsonb_array_elements(a.rows->'token') x
    WHERE row_type = 'AuditEvent' AND a.res_id = row_id
$$;

CREATE FUNCTION audit_rows_string(row_type text, row_id text)
RETURNS TABLE (res_type text, res_id text, param text, norm text, exact text, patient_id text, elem integer)
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT res_type, res_id, param, norm, exact, patient_id, elem FROM search_string WHERE res_type = row_type AND res_id = row_id
    UNION ALL SELECT 'AuditEvent'::text AS res_type, a.res_id AS res_id, x->>0 AS param, x->>1 AS norm, x->>2 AS exact, a.patient_id AS patient_id, (x->>3)::integer AS elem
    FROM audit_index a CROSS JOIN LATERAL jsonb_array_elements(a.rows->'string') x
    WHERE row_type = 'AuditEvent' AND a.res_id = row_id
$$;

CREATE FUNCTION audit_rows_date(row_type text, row_id text)
RETURNS TABLE (res_type text, res_id text, param text, low timestamptz, high timestamptz, patient_id text, elem integer)
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT res_type, res_id, param, low, high, patient_id, elem FROM search_date WHERE res_type = row_type AND res_id = row_id
    UNION ALL SELECT 'AuditEvent'::text AS res_type, a.res_id AS res_id, x->>0 AS param, (x->>1)::timestamptz AS low, (x->>2)::timestamptz AS high, a.patient_id AS patient_id, (x->>3)::integer AS elem
    FROM audit_index a CROSS JOIN LATERAL jsonb_array_elements(a.rows->'date') x
    WHERE row_type = 'AuditEvent' AND a.res_id = row_id
$$;

CREATE FUNCTION audit_rows_number(row_type text, row_id text)
RETURNS TABLE (res_type text, res_id text, param text, value numeric, patient_id text, elem integer)
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT res_type, res_id, param, value, patient_id, elem FROM search_number WHERE res_type = row_type AND res_id = row_id
    UNION ALL SELECT 'AuditEvent'::text AS res_type, a.res_id AS res_id, x->>0 AS param, (x->>1)::numeric AS value, a.patient_id AS patient_id, (x->>2)::integer AS elem
    FROM audit_index a CROSS JOIN LATERAL jsonb_array_elements(a.rows->'number') x
    WHERE row_type = 'AuditEvent' AND a.res_id = row_id
$$;

CREATE FUNCTION audit_rows_quantity(row_type text, row_id text)
RETURNS TABLE (res_type text, res_id text, param text, value numeric, system text, code text, unit text, canonical_value numeric, canonical_code text, patient_id text, elem integer)
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT res_type, res_id, param, value, system, code, unit, canonical_value, canonical_code, patient_id, elem FROM search_quantity WHERE res_type = row_type AND res_id = row_id
    UNION ALL SELECT 'AuditEvent'::text AS res_type, a.res_id AS res_id, x->>0 AS param, (x->>1)::numeric AS value, x->>2 AS system, x->>3 AS code, x->>4 AS unit, (x->>5)::numeric AS canonical_value, x->>6 AS canonical_code, a.patient_id AS patient_id, (x->>7)::integer AS elem
    FROM audit_index a CROSS JOIN LATERAL jsonb_array_elements(a.rows->'quantity') x
    WHERE row_type = 'AuditEvent' AND a.res_id = row_id
$$;

CREATE FUNCTION audit_rows_uri(row_type text, row_id text)
RETURNS TABLE (res_type text, res_id text, param text, uri text, patient_id text, elem integer)
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT res_type, res_id, param, uri, patient_id, elem FROM search_uri WHERE res_type = row_type AND res_id = row_id
    UNION ALL SELECT 'AuditEvent'::text AS res_type, a.res_id AS res_id, x->>0 AS param, x->>1 AS uri, a.patient_id AS patient_id, (x->>2)::integer AS elem
    FROM audit_index a CROSS JOIN LATERAL jsonb_array_elements(a.rows->'uri') x
    WHERE row_type = 'AuditEvent' AND a.res_id = row_id
$$;

CREATE FUNCTION audit_rows_reference(row_type text, row_id text)
RETURNS TABLE (res_type text, res_id text, param text, target_type text, target_id text, target_url text, patient_id text, elem integer)
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT res_type, res_id, param, target_type, target_id, target_url, patient_id, elem FROM search_reference WHERE res_type = row_type AND res_id = row_id
    UNION ALL SELECT 'AuditEvent'::text AS res_type, a.res_id AS res_id, x->>0 AS param, x->>1 AS target_type, x->>2 AS target_id, x->>3 AS target_url, a.patient_id AS patient_id, (x->>4)::integer AS elem
    FROM audit_index a CROSS JOIN LATERAL jsonb_array_elements(a.rows->'reference') x
    WHERE row_type = 'AuditEvent' AND a.res_id = row_id
$$;

-- audit_record (0023) with the packed rows: doc gains "audit_index": [{res_id, patient_id,
-- rows}], and its search table rows are only the real parameters'.
CREATE OR REPLACE FUNCTION audit_record(doc jsonb, OUT last_seq bigint, OUT last_hash bytea)
LANGUAGE plpgsql AS $$
BEGIN
    -- One static INSERT per table, not a loop of EXECUTE format(...): PL/pgSQL keeps the
    -- plans of static statements for the connection's life, dynamic ones are planned anew.
    INSERT INTO resource
    SELECT * FROM jsonb_populate_recordset(NULL::resource, doc->'resource');
    IF doc ? 'audit_index' THEN
        INSERT INTO audit_index
        SELECT * FROM jsonb_populate_recordset(NULL::audit_index, doc->'audit_index');
    END IF;
    IF doc ? 'search_token' THEN
        INSERT INTO search_token
        SELECT * FROM jsonb_populate_recordset(NULL::search_token, doc->'search_token');
    END IF;
    IF doc ? 'search_string' THEN
        INSERT INTO search_string
        SELECT * FROM jsonb_populate_recordset(NULL::search_string, doc->'search_string');
    END IF;
    IF doc ? 'search_reference' THEN
        INSERT INTO search_reference
        SELECT * FROM jsonb_populate_recordset(NULL::search_reference, doc->'search_reference');
    END IF;
    IF doc ? 'search_date' THEN
        INSERT INTO search_date
        SELECT * FROM jsonb_populate_recordset(NULL::search_date, doc->'search_date');
    END IF;
    IF doc ? 'search_uri' THEN
        INSERT INTO search_uri
        SELECT * FROM jsonb_populate_recordset(NULL::search_uri, doc->'search_uri');
    END IF;
    IF doc ? 'search_number' THEN
        INSERT INTO search_number
        SELECT * FROM jsonb_populate_recordset(NULL::search_number, doc->'search_number');
    END IF;
    IF doc ? 'search_quantity' THEN
        INSERT INTO search_quantity
        SELECT * FROM jsonb_populate_recordset(NULL::search_quantity, doc->'search_quantity');
    END IF;
    SELECT a.last_seq, a.last_hash INTO last_seq, last_hash FROM audit_append(doc->'entries') a;
END $$;
