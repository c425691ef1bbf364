-- Recording AuditEvents in one statement (docs/privacy.md, "Audit"; privacy/appender.py).
--
-- 0017 had reads commit their events unchained (audit_pending) and a chainer move them into
-- audit_chain afterwards, so that no read held the chain head across its WAL flush. Since
-- the appender commits every waiting read's events as one batch, one flush per batch is all
-- the head is held for, and the queue only doubled the work: each event was written to
-- audit_pending, deleted from it, aggregated and written again. Now a batch (and a write's
-- events, in the write's transaction) is stored and chained at once, by audit_record below:
-- one statement, one plan, whatever the batch's size.

-- Whatever an older server queued and did not chain, chained now, before the queue goes.
SELECT audit_chain_pending(2147483647);
DROP FUNCTION audit_chain_pending(integer);
DROP TABLE audit_pending;

-- Append entries (a JSON array of {event_id, recorded, event_hash (hex), facts …}) after the
-- head, under the head's row lock; returns the new head. Same hash as 0014's (privacy/chain.py
-- holds the formula, for verify):
-- hash = sha256('healthmesh-audit-v1' | seq as 8 bytes big-endian | prev_hash | event_hash),
-- computed in order here, then every entry inserted by one statement.
CREATE OR REPLACE FUNCTION audit_append(entries jsonb, OUT last_seq bigint, OUT last_hash bytea)
LANGUAGE plpgsql AS $$
DECLARE
    first_seq bigint;
    digests bytea[];
    prevs bytea[] := '{}';
    hashes bytea[] := '{}';
    domain bytea := convert_to('healthmesh-audit-v1', 'UTF8');
BEGIN
    SELECT seq, hash INTO last_seq, last_hash FROM audit_head WHERE id = 1 FOR UPDATE;
    first_seq := last_seq + 1;
    SELECT array_agg(decode(e.value->>'event_hash', 'hex') ORDER BY e.n) INTO digests
    FROM jsonb_array_elements(entries) WITH ORDINALITY AS e(value, n);
    IF digests IS NULL THEN
        RETURN;
    END IF;
    FOR i IN 1 .. array_length(digests, 1) LOOP
        prevs := prevs || last_hash;
        last_seq := last_seq + 1;
        last_hash := sha256(domain || int8send(last_seq) || last_hash || digests[i]);
        hashes := hashes || last_hash;
    END LOOP;
    INSERT INTO audit_chain (seq, event_id, recorded, event_hash, prev_hash, hash, kind,
                             client_id, address, patient_id, action, outcome,
                             system_access, object, types)
    SELECT first_seq + e.n - 1, e.value->>'event_id', (e.value->>'recorded')::timestamptz,
           digests[e.n], prevs[e.n], hashes[e.n], e.value->>'kind', e.value->>'client_id',
           e.value->>'address', e.value->>'patient_id', e.value->>'action',
           e.value->>'outcome', (e.value->>'system_access')::boolean, e.value->>'object',
           ARRAY(SELECT jsonb_array_elements_text(e.value->'types'))
    FROM jsonb_array_elements(entries) WITH ORDINALITY AS e(value, n);
    UPDATE audit_head SET seq = last_seq, hash = last_hash WHERE id = 1;
END $$;

-- Store AuditEvents and chain them: doc = {"resource": [rows], "search_token": [rows], …,
-- "entries": [chain entries]}, each row an object keyed by its table's column names
-- (store/repository.py json_rows). Rows are converted to the tables' own row types, so the
-- columns' types decide (timestamptz, bytea as "\x…", text[] from arrays).
CREATE FUNCTION audit_record(doc jsonb, OUT last_seq bigint, OUT last_hash bytea)
LANGUAGE plpgsql AS $$
BEGIN
    -- One static INSERT per table, not a loop of EXECUTE format(...): PL/pgSQL keeps the
    -- plans of static statements for the connection's life, dynamic ones are planned anew.
    INSERT INTO resource
    SELECT * FROM jsonb_populate_recordset(NULL::resource, doc->'resource');
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

-- An entry's event_id is an AuditEvent's id, unique already as resource's key ('AuditEvent',
-- id), and verify reaches the resource from the entry by that key: this index was one more
-- B-tree to update for every event, and answered no query.
ALTER TABLE audit_chain DROP CONSTRAINT audit_chain_event_id_key;
