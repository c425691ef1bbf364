-- $everything and compartment searches find what a patient's resources refer to.
CREATE INDEX search_reference_patient ON search_reference (patient_id, target_type, target_id)
    WHERE patient_id IS NOT NULL;
