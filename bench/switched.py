"""``python -m bench.switched [--no-audit] [--no-consent] serve ...``: FOR BENCHMARKS ONLY.

The ``healthmesh`` command with parts of the secured request path switched off, so the
authorization benchmark can measure each part's cost against the same server with it on:

- ``--no-audit``: secured requests record no AuditEvents (``Auditor.events`` answers
  nothing), to measure authorization and consent apart from auditing;
- ``--no-consent``: the grant's Visibility carries no ConsentContext, so queries carry the
  scopes' conditions only, without the patients' Consents and the sensitive-label default:
  the "consent and label filters off" side of the privacy issue's target.

Both break the node's privacy guarantees, so they exist only here, in the benchmark
package, as patches applied to this one process; no setting of the node turns them on.
"""

from __future__ import annotations

import sys
from dataclasses import replace
from typing import Any

SWITCHES = ("--no-audit", "--no-consent")


def _patch(switches: set[str]) -> None:
    if "--no-audit" in switches:
        from healthmesh.api import auditing

        def no_events(self: Any, *args: Any, **kwargs: Any) -> list[dict[str, Any]]:
            return []

        auditing.Auditor.events = no_events  # type: ignore[method-assign]
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
