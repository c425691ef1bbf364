"""FHIR Bulk Data Access IG v2.0.0 export: kick-off, status, files (docs/export.md)."""
