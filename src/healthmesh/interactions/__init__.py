"""FHIR RESTful interactions (R4 http.html), one module each, free of HTTP and SQL.

Each takes a :class:`~healthmesh.interactions.context.FhirRequest` and a repository session
and returns a :class:`~healthmesh.interactions.context.FhirResult`. The web layer and the
batch/transaction processor both call them, so an entry in a Bundle behaves exactly like the
same request sent alone.
"""
