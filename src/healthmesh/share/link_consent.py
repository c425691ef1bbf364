"""Whether a patient's Consents still let their shared links serve (docs/sharing.md).

A SMART Health Link holds a Bundle encrypted once, at creation, with a key the node does not
keep: it cannot be filtered when a decision changes, only served whole or not at all. So a
link serves while no Consent of its owner withdraws it, decided on every manifest, direct
file and file-location request — the very next request after a decision (issue #5).

A link's holder is nobody the Consent can name (the recipient in a manifest request is what
the receiver says it is), and sharing a link is the patient's own request, so the access is
described as: no actor, purpose PATRQT (v3 ActReason "patient requested"). A link is
withdrawn by a deny that applies to that access — one without actors, for no purpose or for
PATRQT, in its period — unless a deeper permit applying to it covers the whole record (no
class, category or label). A deny of part of the record (labs, a label …) withdraws every
link too, since the link may hold that part. The deployment default does not: creating the
link was the patient's explicit permit, also on an opt-in node.
"""

from __future__ import annotations

LINK_PURPOSE = "PATRQT"  # v3 ActReason; a constant, so it may sit in the SQL text

_APPLIES = (
    "{x}.patient_id = {owner} AND {x}.actors IS NULL"
    f" AND ({{x}}.purposes IS NULL OR '{LINK_PURPOSE}' = ANY({{x}}.purposes))"
    " AND ({x}.period_start IS NULL OR {x}.period_start <= now())"
    " AND ({x}.period_end IS NULL OR {x}.period_end > now())"
)


def consented(owner: str) -> str:
    """SQL (a boolean column): the Consents of the patient in column ``owner`` let their
    links serve. ``owner`` is trusted SQL text (a column name), never input."""
    deny = _APPLIES.format(x="wd", owner=owner)
    permit = _APPLIES.format(x="wp", owner="wd.patient_id")
    return (
        f"NOT EXISTS (SELECT 1 FROM consent_rule wd WHERE wd.effect = 'deny' AND {deny}"  # noqa: S608
        f" AND NOT EXISTS (SELECT 1 FROM consent_rule wp WHERE wp.effect = 'permit'"
        f" AND wp.depth > wd.depth AND {permit}"
        " AND wp.types IS NULL AND wp.cat_types IS NULL AND wp.cat_codes IS NULL"
        " AND wp.labels IS NULL))"
    )
