-- FHIR Bulk Data export (docs/export.md): jobs, their files, and the files' NDJSON in chunks.
-- Kept in PostgreSQL so that any server process can take a job, answer its status and serve
-- its files, and so that cancelling or expiring a job removes everything in one statement.
-- (Numbered 0020 to stay clear of migrations other branches add in parallel.)
CREATE TABLE export_job (
    id               text        PRIMARY KEY,   -- random, 32 hex digits: the status URL's key
    owner            text,                      -- who may poll and download; NULL: --open
    grant_facts      text,                      -- the kick-off grant as JSON, no credential
    request          text        NOT NULL,      -- the kick-off URL as sent
    params           text        NOT NULL,      -- the parsed kick-off parameters (JSON)
    status           text        NOT NULL
                     CHECK (status IN ('accepted', 'running', 'completed', 'failed')),
    attempts         integer     NOT NULL DEFAULT 0,
    worker           text,                      -- the process running it
    progress         text,
    transaction_time timestamptz,               -- the snapshot the files were read from
    created_at       timestamptz NOT NULL DEFAULT now(),
    heartbeat_at     timestamptz,
    finished_at      timestamptz,
    expires_at       timestamptz,
    error_status     integer,
    error            text                       -- an OperationOutcome (JSON) when failed
);
CREATE INDEX export_job_queue ON export_job (created_at) WHERE status IN ('accepted', 'running');
CREATE INDEX export_job_owner ON export_job (owner, status);
CREATE INDEX export_job_expiry ON export_job (expires_at) WHERE expires_at IS NOT NULL;

CREATE TABLE export_file (
    job_id      text        NOT NULL REFERENCES export_job (id) ON DELETE CASCADE,
    n           integer     NOT NULL,           -- the file's number in its job (its URL)
    kind        text        NOT NULL CHECK (kind IN ('output', 'error')),
    res_type    text        NOT NULL,
    count       integer     NOT NULL DEFAULT 0,
    patients    text[]      NOT NULL DEFAULT '{}',  -- whose data the file holds
    -- md5 of the (id, version) of those patients' Consents in the snapshot the file was read
    -- from: a file is not served once it differs from the current one (docs/export.md).
    consents    text,
    PRIMARY KEY (job_id, n)
);

CREATE TABLE export_chunk (
    job_id text    NOT NULL,
    n      integer NOT NULL,
    seq    integer NOT NULL,
    data   bytea   NOT NULL,                    -- whole NDJSON lines, each ending in \n
    PRIMARY KEY (job_id, n, seq),
    FOREIGN KEY (job_id, n) REFERENCES export_file (job_id, n) ON DELETE CASCADE
);

-- lz4 compresses and decompresses several times faster than the default pglz (the chunks are
-- written once and read once); servers built without lz4 keep pglz.
DO $$
BEGIN
    ALTER TABLE export_chunk ALTER COLUMN data SET COMPRESSION lz4;
EXCEPTION WHEN feature_not_supported OR invalid_parameter_value THEN
    NULL;
END $$;
