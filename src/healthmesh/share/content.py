"""What a share holds when the patient gives no Bundle: their own PatientSharedBundle.

The share API (api/share_routes.py) asks ``Sharing.summaries`` for the content of a new link;
this source builds the Kill the Clipboard bundle (share/bundle.py: the summary, the insurance
card, a PDF rendering) from the patient's own record, read with the patient's own visibility
(their compartment, as their token would see it), so a share never carries more than the
patient could read.
"""

from __future__ import annotations

from typing import Any

from healthmesh.auth.grant import AccessGrant
from healthmesh.auth.policy import visibility_for
from healthmesh.fhir.errors import NotFound
from healthmesh.share.bundle import shared_bundle
from healthmesh.store.repository import Repository


class OwnRecordBundles:
    def __init__(self, repository: Repository, base: str) -> None:
        self.repository = repository
        self.base = base

    async def summary(self, patient: str) -> dict[str, Any] | None:
        own = AccessGrant(client_id="healthmesh-share", scope="patient/*.rs", patient=patient)
        async with self.repository.session(write=False, visibility=visibility_for(own)) as session:
            try:
                return dict(await shared_bundle(session, patient, base=self.base))
            except NotFound:
                return None
