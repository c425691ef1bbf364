-- Typed search-index tables, one per search-parameter type (docs/storage.md#search-indexes).
-- Each row: which resource (res_type, res_id), which parameter, the value in typed columns,
-- and the resource's Patient-compartment key. Rows are replaced on every write of the
-- resource; only current versions are indexed.

-- Token: display keeps Coding.display / CodeableConcept.text / Identifier.type.text for :text.
ALTER TABLE search_token ADD COLUMN display text;

-- String: `norm` is lower-cased with accents removed (search is case- and accent-insensitive
-- and matches the start by default); `exact` is the value as written, for :exact.
CREATE TABLE search_string (
    res_type   text NOT NULL,
    res_id     text NOT NULL,
    param      text NOT NULL,
    norm       text NOT NULL,
    exact      text NOT NULL,
    patient_id text
);
CREATE INDEX search_string_norm ON search_string (res_type, param, norm text_pattern_ops);
CREATE INDEX search_string_resource ON search_string (res_type, res_id);

-- Date: the half-open interval [low, high) the value covers (a date of 2020 covers the year;
-- an open Period end is 'infinity').
CREATE TABLE search_date (
    res_type   text        NOT NULL,
    res_id     text        NOT NULL,
    param      text        NOT NULL,
    low        timestamptz NOT NULL,
    high       timestamptz NOT NULL,
    patient_id text
);
CREATE INDEX search_date_low ON search_date (res_type, param, low);
CREATE INDEX search_date_high ON search_date (res_type, param, high);
CREATE INDEX search_date_resource ON search_date (res_type, res_id);

CREATE TABLE search_number (
    res_type   text    NOT NULL,
    res_id     text    NOT NULL,
    param      text    NOT NULL,
    value      numeric NOT NULL,
    patient_id text
);
CREATE INDEX search_number_value ON search_number (res_type, param, value);
CREATE INDEX search_number_resource ON search_number (res_type, res_id);

-- Quantity: as written, and (where UCUM can say) in canonical units so that 1 g/L and
-- 100 mg/dL compare equal.
CREATE TABLE search_quantity (
    res_type        text    NOT NULL,
    res_id          text    NOT NULL,
    param           text    NOT NULL,
    value           numeric NOT NULL,
    system          text,
    code            text,
    unit            text,
    canonical_value numeric,
    canonical_code  text,
    patient_id      text
);
CREATE INDEX search_quantity_code ON search_quantity (res_type, param, code, value);
CREATE INDEX search_quantity_canonical ON search_quantity (res_type, param, canonical_code, canonical_value);
CREATE INDEX search_quantity_resource ON search_quantity (res_type, res_id);

CREATE TABLE search_uri (
    res_type   text NOT NULL,
    res_id     text NOT NULL,
    param      text NOT NULL,
    uri        text NOT NULL,
    patient_id text
);
CREATE INDEX search_uri_value ON search_uri (res_type, param, uri text_pattern_ops);
CREATE INDEX search_uri_resource ON search_uri (res_type, res_id);

-- Reference: local targets as (target_type, target_id); others as target_url. Indexed both
-- ways: forward for `subject=Patient/1` and chains, backward for _revinclude and _has.
CREATE TABLE search_reference (
    res_type    text NOT NULL,
    res_id      text NOT NULL,
    param       text NOT NULL,
    target_type text,
    target_id   text,
    target_url  text,
    patient_id  text
);
CREATE INDEX search_reference_target ON search_reference (res_type, param, target_id, target_type);
CREATE INDEX search_reference_reverse ON search_reference (target_type, target_id);
CREATE INDEX search_reference_resource ON search_reference (res_type, res_id);
CREATE INDEX search_reference_url ON search_reference (res_type, param, target_url) WHERE target_url IS NOT NULL;
