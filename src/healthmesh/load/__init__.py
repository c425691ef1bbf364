"""Loading FHIR data in bulk: Bundles and NDJSON files."""
