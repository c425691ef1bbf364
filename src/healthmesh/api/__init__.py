"""HTTP: the ASGI application, request parsing and response rendering for the FHIR API."""
