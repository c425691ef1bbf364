"""Which Patient's compartment a resource belongs to: the patient key stored on every row.

The R4 Patient CompartmentDefinition names, per resource type, the search parameters whose
references put a resource in a patient's compartment (compartmentdefinition-patient.html).
Those parameters are indexed anyway, so the key is read off the resource's extracted
reference rows rather than evaluated a second time.

The key is the first patient found in definition order (``subject``/``patient`` come first),
which is what sharding by patient needs: one owner per row. A resource that references several
patients (a Group, a linked Patient) stays findable through the reference index.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from healthmesh.fhir.definitions import patient_compartment


def patient_key(
    resource: Mapping[str, Any],
    references: Sequence[tuple[str, str | None, str | None, str | None]],
) -> str | None:
    """The id of the Patient whose compartment holds ``resource``, or None.

    ``references`` are its extracted reference index rows: (param, target type, id, url).
    """
    resource_type = resource.get("resourceType")
    if resource_type == "Patient":
        value = resource.get("id")
        return value if isinstance(value, str) else None
    for param in patient_compartment().get(str(resource_type), ()):
        for code, target_type, target_id, _ in references:
            if code == param and target_type == "Patient" and target_id:
                return target_id
    return None
