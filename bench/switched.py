"""``python -m bench.switched [--no-audit] [--no-consent] [--no-audit-index] serve ...``:
FOR BENCHMARKS ONLY.

The ``healthmesh`` command with parts of the secured request path switched off, so the
authorization benchmark can measure each part's cost against the same server with it on:

- ``--no-audit``: secured requests record no AuditEvents (``Auditor.events`` answers
  nothing), to measure authorization and consent apart from auditing;
- ``--no-consent``: the grant's Visibility carries no ConsentContext, so queries carry the
  scopes' conditions only, without the patients' Consents and the sensitive-label default:
  the "consent and label filters off" side of the privacy issue's target;
- ``--no-audit-index``: AuditEvents are recorded and chained as always, but without their
  search index rows (not searchable but by id), all of them built the general way
  (privacy/audit.py, not read_events.py's templates): what auditing cost before templates
  if those rows had cost nothing (docs/PERFORMANCE.md).

Both break the node's privacy guarantees, so they exist only here, in the benchmark
package, as patches applied to this one process; no setting of the node turns them on.
"""

from __future__ import annotations

import sys
from dataclasses import replace
from typing import Any

SWITCHES = ("--no-audit", "--no-consent", "--no-audit-index")


def _patch(switches: set[str]) -> None:
    if "--no-audit" in switches:
        from healthmesh.api import auditing
        from healthmesh.privacy.chain import Prepared

        def no_events(self: Any, *args: Any, **kwargs: Any) -> list[dict[str, Any]]:
            return []

        def nothing_prepared(self: Any, *args: Any, **kwargs: Any) -> Any:
            return Prepared({}, [])

        auditing.Auditor.events = no_events  # type: ignore[method-assign]
        auditing.Auditor.prepared = nothing_prepared  # type: ignore[method-assign]
    if "--no-audit-index" in switches:
        from healthmesh.fhir.search.extract import IndexRows
        from healthmesh.privacy import chain

        def no_rows(resource: Any, key: bytes | None = None) -> IndexRows:
            return IndexRows()

        chain.audit_event_rows = no_rows  # type: ignore[attr-defined]
        # Reads' events from templates come with their rows: the general path for all.
        from healthmesh.privacy import read_events

        read_events.interaction_prepared = lambda *a, **k: None
    if "--no-consent" in switches:
        from healthmesh.api import app
        from healthmesh.auth import policy

        def without_consent(grant: Any, **kwargs: Any) -> Any:
            return replace(policy.visibility_for(grant, **kwargs), consent=None)

        app.visibility_for = without_consent  # type: ignore[attr-defined]


def main(argv: list[str]) -> None:
    switches = {a for a in argv if a in SWITCHES}
    rest = [a for a in argv if a not in SWITCHES]
    print(
        f"WARNING: benchmark server with {', '.join(sorted(switches)) or 'nothing'} switched"
        " off: NOT FOR REAL DATA",
        file=sys.stderr,
    )
    _patch(switches)
    from healthmesh.cli import main as healthmesh

    sys.argv = ["healthmesh", *rest]
    healthmesh()


if __name__ == "__main__":
    main(sys.argv[1:])
