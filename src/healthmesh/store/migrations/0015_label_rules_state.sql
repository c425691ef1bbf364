-- Which security-label rule table the stored data was labelled with (fhir/security_labels.py
-- digest). When the table in the code differs, the node re-labels stored data on start-up.
CREATE TABLE label_rules_state (
    singleton     boolean     PRIMARY KEY DEFAULT true CHECK (singleton),
    digest        text        NOT NULL,
    relabelled_at timestamptz NOT NULL DEFAULT now()
);
