"""HealthMesh: an open, patient-controlled health data network built on FHIR R4."""

__version__ = "0.1.0"
FHIR_VERSION = "4.0.1"
