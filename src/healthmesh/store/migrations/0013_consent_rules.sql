-- Patient-privacy Consents, flattened (fhir/consent.py): one row per provision of each
-- active Consent, rewritten in the same transaction as the Consent itself, so a decision
-- takes effect on the very next request. Enforcement (store/access.py) joins it by the
-- row's patient_id. NULL in an array column: that dimension is not restricted.
CREATE TABLE consent_rule (
    consent_id   text        NOT NULL,
    n            integer     NOT NULL,  -- the provision's position in the Consent's tree
    patient_id   text        NOT NULL,
    effect       text        NOT NULL CHECK (effect IN ('permit', 'deny')),
    depth        integer     NOT NULL,  -- 0 for the base provision; deeper ones are exceptions
    actors       text[],                -- client:<id>, organization:<id>, Practitioner/<id> ...
    purposes     text[],                -- v3 ActReason codes
    types        text[],                -- resource types (provision.class)
    cat_types    text[],                -- types a data category covers whole
    cat_codes    text[],                -- 'Type|category-code' a data category covers
    labels       text[],                -- security label codes
    period_start timestamptz,
    period_end   timestamptz,
    PRIMARY KEY (consent_id, n)
);
CREATE INDEX consent_rule_patient ON consent_rule (patient_id, effect);
