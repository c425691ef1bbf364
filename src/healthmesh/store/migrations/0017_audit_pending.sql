-- Reads' AuditEvents, durable but not yet chained (docs/privacy.md, "Audit"; privacy/appender.py).
-- A read commits its events (resource and index rows, and one row here) in a transaction of
-- its own without touching the chain head, so concurrent reads share WAL flushes instead of
-- queueing on the head lock one flush at a time. A chainer then moves the rows, oldest first,
-- into audit_chain under the head lock (audit_chain_pending below), in the same transaction
-- that deletes them here: an entry is chained exactly once, and a chaining lost in a crash
-- is simply done again from these rows.
CREATE TABLE audit_pending (
    n     bigserial PRIMARY KEY,  -- arrival order (commit order may differ; seq is assigned later)
    entry jsonb     NOT NULL      -- what audit_append takes: {event_id, recorded, event_hash, facts …}
);

-- Chain up to max_entries pending entries, oldest first; how many, and the new head.
CREATE FUNCTION audit_chain_pending(max_entries integer, OUT chained integer,
                                    OUT last_seq bigint, OUT last_hash bytea)
LANGUAGE plpgsql AS $$
DECLARE
    entries jsonb;
BEGIN
    -- The head first: every appender (and retention) serialises here, so two chainers never
    -- take the same rows, and rows are taken only after the previous chaining committed.
    SELECT seq, hash INTO last_seq, last_hash FROM audit_head WHERE id = 1 FOR UPDATE;
    WITH taken AS (
        DELETE FROM audit_pending
        WHERE n IN (SELECT n FROM audit_pending ORDER BY n LIMIT max_entries)
        RETURNING n, entry
    )
    SELECT coalesce(jsonb_agg(entry ORDER BY n), '[]'::jsonb), count(*)
    INTO entries, chained FROM taken;
    IF chained > 0 THEN
        SELECT a.last_seq, a.last_hash INTO last_seq, last_hash FROM audit_append(entries) a;
    END IF;
END $$;
