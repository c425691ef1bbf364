-- The audit trail (docs/privacy.md, "Audit"). Each AuditEvent is a normal stored resource
-- (resource table, type AuditEvent, patient_id = the patient whose data it is), so the
-- Patient-compartment rules serve "who looked at my record" through the FHIR API. This
-- table is the tamper-evident chain over them: entry n commits to entry n-1.
CREATE TABLE audit_chain (
    seq            bigint      PRIMARY KEY,          -- 1, 2, 3 … with no gaps
    event_id       text        NOT NULL UNIQUE,      -- AuditEvent/<event_id> in resource
    recorded       timestamptz NOT NULL,             -- AuditEvent.recorded
    event_hash     bytea       NOT NULL,             -- sha256 of the canonical event
    prev_hash      bytea       NOT NULL,             -- hash of entry seq-1 (zeros for 1)
    hash           bytea       NOT NULL,             -- sha256(domain | seq | prev | event)
    -- Facts the breach detectors query, derived from the event (verify checks they match).
    kind           text        NOT NULL,             -- rest, token, consent, match, ...
    client_id      text,
    address        text,
    patient_id     text,
    action         text,
    outcome        text        NOT NULL,
    system_access  boolean     NOT NULL DEFAULT false,
    object         text,                             -- a shared link, a consent id …
    types          text[]      NOT NULL DEFAULT '{}' -- resource types touched
);
CREATE INDEX audit_chain_recorded ON audit_chain (recorded);
CREATE INDEX audit_chain_client ON audit_chain (client_id, recorded);
CREATE INDEX audit_chain_patient ON audit_chain (patient_id, recorded);

-- The chain head: one row, locked by every append (SELECT … FOR UPDATE), so appends from any
-- number of processes are serialised, and a rolled-back append leaves no gap.
CREATE TABLE audit_head (
    id   integer PRIMARY KEY CHECK (id = 1),
    seq  bigint  NOT NULL,
    hash bytea   NOT NULL
);
INSERT INTO audit_head (id, seq, hash) VALUES (1, 0, '\x0000000000000000000000000000000000000000000000000000000000000000');

-- Signed checkpoints of the chain head (Ed25519 JWS over {seq, hash, kind …}). A 'purge'
-- checkpoint is where the chain restarts after retention removed the entries before it.
CREATE TABLE audit_checkpoint (
    seq        bigint      NOT NULL,
    kind       text        NOT NULL CHECK (kind IN ('periodic', 'purge')),
    hash       bytea       NOT NULL,
    jws        text        NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (seq, kind)
);

-- The node's checkpoint keys (Ed25519). Never deleted: old checkpoints must stay verifiable.
CREATE TABLE audit_signing_key (
    kid         text        PRIMARY KEY,  -- RFC 7638 thumbprint
    private_pem text        NOT NULL,
    public_jwk  jsonb       NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- Append entries (a JSON array of {event_id, recorded, event_hash (hex), facts …}) after the
-- head, under the head's row lock; returns the new head. Hashing here, next to the lock, makes
-- an append one round trip (privacy/chain.py holds the same formula, for verify):
-- hash = sha256('healthmesh-audit-v1' | seq as 8 bytes big-endian | prev_hash | event_hash).
CREATE FUNCTION audit_append(entries jsonb, OUT last_seq bigint, OUT last_hash bytea)
LANGUAGE plpgsql AS $$
DECLARE
    e jsonb;
    prev bytea;
    digest bytea;
BEGIN
    SELECT seq, hash INTO last_seq, last_hash FROM audit_head WHERE id = 1 FOR UPDATE;
    FOR e IN SELECT value FROM jsonb_array_elements(entries) LOOP
        last_seq := last_seq + 1;
        prev := last_hash;
        digest := decode(e->>'event_hash', 'hex');
        last_hash := sha256(convert_to('healthmesh-audit-v1', 'UTF8') || int8send(last_seq)
                            || prev || digest);
        INSERT INTO audit_chain (seq, event_id, recorded, event_hash, prev_hash, hash, kind,
                                 client_id, address, patient_id, action, outcome,
                                 system_access, object, types)
        VALUES (last_seq, e->>'event_id', (e->>'recorded')::timestamptz, digest, prev,
                last_hash, e->>'kind', e->>'client_id', e->>'address', e->>'patient_id',
                e->>'action', e->>'outcome', (e->>'system_access')::boolean, e->>'object',
                ARRAY(SELECT jsonb_array_elements_text(e->'types')));
    END LOOP;
    UPDATE audit_head SET seq = last_seq, hash = last_hash WHERE id = 1;
END $$;

-- Defence in depth: the chain is append-only for the application. Entries are removed only
-- by retention (healthmesh audit purge), which sets healthmesh.audit_purge for its
-- transaction. (A superuser can still bypass this; the hash chain and the signed
-- checkpoints are what make such changes evident.)
CREATE FUNCTION audit_chain_guard() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' AND current_setting('healthmesh.audit_purge', true) = 'on' THEN
        RETURN OLD;
    END IF;
    RAISE EXCEPTION 'audit_chain is append-only (%)', TG_OP;
END $$;
CREATE TRIGGER audit_chain_append_only BEFORE UPDATE OR DELETE ON audit_chain
    FOR EACH ROW EXECUTE FUNCTION audit_chain_guard();
