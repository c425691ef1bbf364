"""FHIR model knowledge without I/O: definitions, validation, references, bundles, errors."""
