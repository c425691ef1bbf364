-- Which patients have a security-labelled row: the consent condition asks it of the one
-- patient a search names, once per query (store/consent_sql.py), and skips the per-row probe
-- of search_token_labels on the rows of a patient who has none — most patients.
-- Index rows carry their resource's patient_id (store/repository.py), so this is the
-- patient's labelled rows exactly.
CREATE INDEX search_token_labels_patient ON search_token (patient_id, code)
    WHERE param = '_security';
