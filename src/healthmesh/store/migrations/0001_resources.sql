-- Resources and their versions. See docs/storage.md for the design and its reasons.

-- The current version of every resource, a tombstone when deleted. One primary-key lookup
-- serves read; `content` is the exact JSON served (meta.versionId/lastUpdated included).
CREATE TABLE resource (
    res_type     text        NOT NULL,
    id           text        NOT NULL,
    version_id   integer     NOT NULL,
    last_updated timestamptz NOT NULL,
    deleted      boolean     NOT NULL DEFAULT false,
    patient_id   text,                 -- Patient compartment key (sharding, access, consent)
    content_hash bytea,                -- sha256 of content without versionId/lastUpdated
    content      text,                 -- NULL for a delete tombstone
    PRIMARY KEY (res_type, id)
);
CREATE INDEX resource_type_updated ON resource (res_type, last_updated);
CREATE INDEX resource_updated ON resource (last_updated);
CREATE INDEX resource_patient ON resource (patient_id, res_type) WHERE patient_id IS NOT NULL;

-- Every earlier version: a row moves here when a newer version replaces it.
CREATE TABLE resource_history (
    res_type     text        NOT NULL,
    id           text        NOT NULL,
    version_id   integer     NOT NULL,
    last_updated timestamptz NOT NULL,
    deleted      boolean     NOT NULL DEFAULT false,
    patient_id   text,
    content_hash bytea,
    content      text,
    PRIMARY KEY (res_type, id, version_id)
);
CREATE INDEX resource_history_type_updated ON resource_history (res_type, last_updated);
CREATE INDEX resource_history_updated ON resource_history (last_updated);

-- Token index (search on identifier, code, ...): one row per value of a token parameter of
-- the current version. Conditional references and If-None-Exist use it from day one.
CREATE TABLE search_token (
    res_type   text NOT NULL,
    res_id     text NOT NULL,
    param      text NOT NULL,
    system     text,
    code       text,
    patient_id text
);
CREATE INDEX search_token_code ON search_token (res_type, param, code, system);
CREATE INDEX search_token_resource ON search_token (res_type, res_id);
