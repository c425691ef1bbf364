"""Deterministic search queries drawn from a data set, for the oracle test.

The queries are generated at collection time (each is its own test case, named by its text),
before any database exists, so they are drawn from the *source* Synthea bundles read the way
the loader will store them (:func:`source_view`: one resource per entry, ``urn:uuid``
references rewritten to ``Type/id``, ids taken from the fullUrl). Values that only the store
knows are written as placeholders and filled in by :func:`bind` once the data is loaded:

* resource ids: the source id (the Synthea uuid) is replaced by the stored id of the
  resource with the same content (:func:`fingerprint`: the resource without id, meta and
  reference targets); only resources whose content is unique are ever named in a query;
* ``{base}``: the server's base URL (absolute references);
* ``{lastUpdated:Type/id}`` or ``{lastUpdated:Type/id:N}``: that resource's stored
  ``meta.lastUpdated``, or its first N characters.

Values come from the data so that most queries match something; some are built to match
nothing. Every query's expected result is kept small enough to page through quickly: a query
that would select too much is narrowed with ``patient=`` (or dropped).
"""

from __future__ import annotations

import json
import random
import re
import unicodedata
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

from search_oracle import Oracle, Value, string_parts

SEED = 20190531
CAP = 150  # the most resources a generated query may select (about three pages of 50)
INCLUDE_CAP = 300  # the most resources its _include/_revinclude may add
BIG = 3000  # types with more resources are searched per patient unless a query says otherwise
UCUM = "http://unitsofmeasure.org"
LOINC = "http://loinc.org"
SNOMED = "http://snomed.info/sct"
V2_0203 = "http://terminology.hl7.org/CodeSystem/v2-0203"
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
T = TypeVar("T")
_LAST_UPDATED = re.compile(r"\{lastUpdated:([A-Za-z]+/[A-Za-z0-9\-.]+)(?::(\d+))?\}")


@dataclass(frozen=True, slots=True)
class Query:
    res_type: str
    params: tuple[tuple[str, str], ...]

    @property
    def label(self) -> str:
        return f"{self.res_type}?" + "&".join(f"{k}={v}" for k, v in self.params)

    def plus(self, name: str, value: str) -> Query:
        return Query(self.res_type, (*self.params, (name, value)))


# --- the data as it will be stored ------------------------------------------------------------


def source_view(folder: Path) -> list[dict[str, Any]]:
    """Every entry of every Bundle in ``folder``, with the ids and references the store will
    have up to renaming: id from the entry's fullUrl, ``urn:uuid:`` references as ``Type/id``.
    An entry whose fullUrl was already used (the same Organization in several bundles) is
    stored again, so it gets a fresh id here."""
    seen: set[str] = set()
    out: list[dict[str, Any]] = []
    for path in sorted(folder.glob("*.json")):
        bundle = json.loads(path.read_bytes())
        local: dict[str, str] = {}
        resources: list[dict[str, Any]] = []
        for index, entry in enumerate(bundle.get("entry", [])):
            resource = dict(entry["resource"])
            full_url = str(entry.get("fullUrl", ""))
            rid = full_url.rsplit(":", 1)[-1] if full_url.startswith("urn:uuid:") else ""
            if not rid or rid in seen:
                rid = f"copy{len(seen)}-{index}"
            seen.add(rid)
            resource["id"] = rid
            if full_url:
                local[full_url] = f"{resource['resourceType']}/{rid}"
            resources.append(resource)
        out += [_rewrite(r, local) for r in resources]
    return out


def _rewrite(node: Any, local: Mapping[str, str]) -> Any:
    if isinstance(node, dict):
        return {
            k: local.get(v, v) if k == "reference" and isinstance(v, str) else _rewrite(v, local)
            for k, v in node.items()
        }
    if isinstance(node, list):
        return [_rewrite(v, local) for v in node]
    return node


def fingerprint(resource: Mapping[str, Any]) -> str:
    """The resource's content without id, meta and the ids its references point to: equal
    for a source resource and its stored copy."""

    def strip(node: Any) -> Any:
        if isinstance(node, dict):
            return {
                k: v.split("/", 1)[0] if k == "reference" and isinstance(v, str) else strip(v)
                for k, v in node.items()
            }
        if isinstance(node, list):
            return [strip(v) for v in node]
        return node

    body = {k: v for k, v in resource.items() if k not in ("id", "meta")}
    return json.dumps(strip(body), sort_keys=True, separators=(",", ":"))


def unique_fingerprints(resources: Iterable[Mapping[str, Any]]) -> dict[str, str]:
    """``id -> fingerprint`` for the resources whose content no other resource shares."""
    prints = {str(r["id"]): fingerprint(r) for r in resources}
    counts = Counter(prints.values())
    return {rid: fp for rid, fp in prints.items() if counts[fp] == 1}


def id_map(source_prints: Mapping[str, str], stored: Iterable[Mapping[str, Any]]) -> dict[str, str]:
    """Source id -> stored id, through the content fingerprints."""
    by_print: dict[str, str] = {}
    duplicated: set[str] = set()
    for resource in stored:
        fp = fingerprint(resource)
        if fp in by_print:
            duplicated.add(fp)
        by_print[fp] = str(resource["id"])
    return {
        sid: by_print[fp]
        for sid, fp in source_prints.items()
        if fp in by_print and fp not in duplicated
    }


def bind(
    query: Query,
    *,
    ids: Mapping[str, str],
    base: str,
    last_updated: Callable[[str], str],
) -> Query:
    """The query with its placeholders filled in for the loaded store."""

    def rename(text: str) -> str:
        return _UUID.sub(lambda m: ids.get(m.group(0), m.group(0)), text)

    def stamp(m: re.Match[str]) -> str:
        res_type, sid = m.group(1).split("/", 1)
        value = last_updated(f"{res_type}/{ids.get(sid, sid)}")
        return value[: int(m.group(2))] if m.group(2) else value

    params = tuple(
        (name, rename(_LAST_UPDATED.sub(stamp, value)).replace("{base}", base))
        for name, value in query.params
    )
    return Query(query.res_type, params)


# --- the generator ----------------------------------------------------------------------------


class Generator:
    """Builds the queries. Values are drawn from resources picked at random, and a query on a
    big type is narrowed to the patient of the resource its values came from, so that most
    queries select something; some are built to select nothing."""

    def __init__(self, oracle: Oracle, addressable: Iterable[str], seed: int = SEED) -> None:
        self.oracle = oracle
        self.rng = random.Random(seed)
        self.addressable = {i for i in addressable if _UUID.fullmatch(i)}
        self.queries: dict[str, Query] = {}
        self._patients_by_type: dict[str, list[str]] = {}

    # -- picking values ---------------------------------------------------------------------

    def pick(self, items: Sequence[T], k: int = 1) -> list[T]:
        if not items:
            return []
        return self.rng.sample(list(items), min(k, len(items)))

    def one(self, items: Sequence[T]) -> T:
        return self.rng.choice(list(items))

    def draw(self, res_type: str, code: str, k: int) -> list[tuple[Value, str | None]]:
        """``k`` values of the parameter, each from a different random resource, with the
        patient that resource belongs to."""
        table = self.oracle.values(res_type, code)
        rids = [rid for rid, values in table.items() if values]
        return [
            (self.one(table[rid]), self.patient_of(res_type, rid)) for rid in self.pick(rids, k)
        ]

    def patient_of(self, res_type: str, rid: str) -> str | None:
        if res_type == "Patient":
            return rid if rid in self.addressable else None
        if self.oracle.param(res_type, "patient") is None:
            return None
        for r in self.oracle.references(res_type, "patient").get(rid, []):
            if r.res_type == "Patient" and r.id in self.addressable:
                return r.id
        return None

    def values(self, res_type: str, code: str) -> list[Value]:
        return [v for vs in self.oracle.values(res_type, code).values() for v in vs]

    def codings(self, res_type: str, code: str) -> list[tuple[str, str, str]]:
        """Distinct (system, code, display) of the Codings the parameter finds."""
        out: dict[tuple[str, str], str] = {}
        for v in self.values(res_type, code):
            for system, value, display in _codings(v):
                out.setdefault((system, value), display)
        return sorted((s, c, d) for (s, c), d in out.items())

    def strings(self, res_type: str, code: str) -> list[str]:
        return sorted({p for v in self.values(res_type, code) for p in string_parts(v)})

    def dates(self, res_type: str, code: str) -> list[str]:
        return sorted({d for v in self.values(res_type, code) for d in _date_strings(v)})

    def ids(self, res_type: str) -> list[str]:
        return [i for i in self.oracle.ids(res_type) if i in self.addressable]

    def patients(self, res_type: str) -> list[str]:
        """Addressable patients that have between 1 and CAP resources of ``res_type``."""
        cached = self._patients_by_type.get(res_type)
        if cached is None:
            counts: Counter[str] = Counter()
            for refs in self.oracle.references(res_type, "patient").values():
                for r in refs:
                    if r.res_type == "Patient" and r.id:
                        counts[r.id] += 1
            cached = sorted(p for p, n in counts.items() if n <= CAP and p in self.addressable)
            self._patients_by_type[res_type] = cached
        return cached

    # -- adding queries ---------------------------------------------------------------------

    def add(
        self,
        res_type: str,
        *params: tuple[str, str],
        scope: str = "auto",
        near: str | None = None,
    ) -> None:
        """Keep the query if it selects at most CAP resources, else narrow it to a patient
        (``near`` first).

        ``scope``: "auto" searches the whole type when it is small (or the query names a
        patient or ids) and goes straight to one patient's resources on the big types;
        "try" searches the whole type first whatever its size; "none" never narrows.
        """
        query = Query(res_type, tuple(params))
        scoped = any(n.split(":")[0] in ("patient", "subject", "_id") for n, _ in params)
        big = len(self.oracle.ids(res_type)) > BIG
        fitted: Query | None = query
        if scope == "none":
            pass
        elif scope == "try" or scoped or not big:
            fitted = query if self.size(query) <= CAP else self.narrow(query, near)
        else:
            fitted = self.narrow(query, near)
        if fitted is not None and self.size(fitted) <= CAP:
            self.queries.setdefault(fitted.label, fitted)

    def size(self, query: Query) -> int:
        if any("{lastUpdated:" in v for _, v in query.params):
            return 0  # the source has no lastUpdated; such queries search 110 Patients at most
        expected = self.oracle.expect(query.res_type, query.params)
        if any(n.startswith(("_include", "_revinclude")) for n, _ in query.params):
            added = self.oracle.includes(query.res_type, query.params, expected.possible)
            if len(added) > INCLUDE_CAP:
                return INCLUDE_CAP + CAP + 1
        return len(expected.possible)

    def narrow(self, query: Query, near: str | None) -> Query | None:
        """The query restricted to one patient's resources, preferring one with matches."""
        if self.oracle.param(query.res_type, "patient") is None:
            return None
        candidates = self.pick(self.patients(query.res_type), 6)
        if near is not None:
            candidates.insert(0, near)
        fallback: Query | None = None
        for pid in candidates:
            narrowed = query.plus("patient", f"Patient/{pid}")
            n = self.size(narrowed)
            if 0 < n <= CAP:
                return narrowed
            if n == 0 and fallback is None:
                fallback = narrowed
        return fallback

    # -- the query families -------------------------------------------------------------------

    def generate(self) -> list[Query]:
        for family in (
            self.token_queries,
            self.token_modifier_queries,
            self.string_queries,
            self.date_queries,
            self.last_updated_queries,
            self.number_queries,
            self.quantity_queries,
            self.reference_queries,
            self.uri_queries,
            self.composite_queries,
            self.chain_queries,
            self.reverse_chain_queries,
            self.include_queries,
        ):
            family()
        return list(self.queries.values())

    def token_queries(self) -> None:
        """Coding, CodeableConcept, code, boolean, Identifier, ContactPoint and id values in
        every token form: ``code``, ``system|code``, ``|code``, ``system|``."""
        for res_type, code in (
            ("Observation", "code"),
            ("Observation", "category"),
            ("Condition", "code"),
            ("Condition", "clinical-status"),
            ("Encounter", "class"),
            ("Encounter", "type"),
            ("Encounter", "reason-code"),
            ("Immunization", "vaccine-code"),
            ("Procedure", "code"),
            ("MedicationRequest", "code"),
            ("DiagnosticReport", "code"),
            ("CarePlan", "category"),
            ("AllergyIntolerance", "code"),
            ("ImagingStudy", "modality"),
            ("Claim", "priority"),
            ("Patient", "language"),
            ("Organization", "type"),
        ):
            drawn = self.draw(res_type, code, 1)
            for value, pid in drawn:
                system, token, _ = self.one(_codings(value))
                self.add(res_type, (code, token), near=pid)
                self.add(res_type, (code, f"{system}|{token}"), near=pid)
                if self.rng.random() < 0.3:
                    self.add(res_type, (code, f"|{token}"), near=pid)  # only system-less codes
                    self.add(res_type, (code, f"{system}|"), near=pid)
                    other = SNOMED if system != SNOMED else LOINC
                    self.add(res_type, (code, f"{other}|{token}"), near=pid)
            codings = self.codings(res_type, code)
            if len(codings) >= 2 and drawn and self.rng.random() < 0.4:
                (system, token, _), (_, second, _) = self.pick(codings, 2)
                self.add(res_type, (code, f"{system}|{token},{second}"), near=drawn[0][1])
        self.add("Observation", ("code", "0000-0"))
        self.add("Encounter", ("class", "emer"), scope="try")  # case differs: either way
        for res_type, code in (
            ("Observation", "status"),
            ("Encounter", "status"),
            ("Patient", "gender"),
            ("Practitioner", "gender"),
            ("MedicationRequest", "intent"),
            ("AllergyIntolerance", "criticality"),
            ("Goal", "lifecycle-status"),
            ("Claim", "use"),
        ):
            for value, pid in self.draw(res_type, code, 1):
                self.add(res_type, (code, str(value.value)), near=pid)
        self.add("Patient", ("gender", "http://hl7.org/fhir/administrative-gender|female"))
        self.add("Patient", ("gender", "female,male"))
        self.add("Patient", ("gender", "unknown"))
        self.add("Organization", ("active", "true"), ("address-city", "B"))
        self.add("Organization", ("active", "false"))
        self.add("Patient", ("deceased", "true"))
        self.add("Patient", ("deceased", "false"))
        self.add("Patient", ("race", "2106-3"))
        self.add("Patient", ("ethnicity", "2186-5"))
        identifiers = [
            v.value for v in self.values("Patient", "identifier") if v.fhir_type == "Identifier"
        ]
        for ident in self.pick(identifiers, 2):
            self.add("Patient", ("identifier", f"{ident['system']}|{ident['value']}"))
            self.add("Patient", ("identifier", str(ident["value"])))
        ident = self.one(identifiers)
        self.add("Patient", ("identifier", f"|{ident['value']}"))
        self.add("Patient", ("identifier", "http://hl7.org/fhir/sid/us-ssn|"))
        self.add("Patient", ("identifier", "http://hl7.org/fhir/sid/us-ssn|000-00-0000"))
        for value, _ in self.draw("Practitioner", "identifier", 1):
            self.add(
                "Practitioner", ("identifier", f"{value.value['system']}|{value.value['value']}")
            )
        phones = [v.value for v in self.values("Patient", "phone")]
        for phone in self.pick(phones, 1):
            self.add("Patient", ("phone", phone["value"]))
            self.add("Patient", ("telecom", f"phone|{phone['value']}"))
        self.add("Patient", ("phone", re.sub(r"\D", "", self.one(phones)["value"])))
        self.add("Patient", ("email", "nobody@example.org"))
        tags = sorted(
            {
                (v.value.get("system", ""), v.value.get("code", ""))
                for v in self.values("Patient", "_tag")
            }
        )
        for system, value in tags[:1]:
            self.add("Patient", ("_tag", f"{system}|{value}"))
            self.add("Patient", ("_tag", value), ("gender", "female"))
            self.add("Organization", ("_tag", f"{system}|{value}"), ("address-city", "S"))
        self.add(
            "Patient", ("_security", "http://terminology.hl7.org/CodeSystem/v3-Confidentiality|R")
        )
        patients = self.ids("Patient")
        for pid in self.pick(patients, 1):
            self.add("Patient", ("_id", pid))
        self.add("Patient", ("_id", ",".join(self.pick(patients, 3))))
        self.add("Patient", ("_id", "no-such-patient"))
        for oid in self.pick(self.ids("Observation"), 1):
            self.add("Observation", ("_id", oid))
        # AND of two token parameters, and the same parameter twice.
        for value, pid in self.draw("Observation", "code", 1):
            system, token, _ = _codings(value)[0]
            self.add("Observation", ("code", f"{system}|{token}"), ("status", "final"), near=pid)
        self.add("Patient", ("gender", "female"), ("gender", "male"))

    def token_modifier_queries(self) -> None:
        """:not, :text, :of-type and :missing."""
        self.add("Patient", ("gender:not", "male"))
        self.add("Patient", ("gender:not", "female,male"))
        self.add("Patient", ("email:not", "nobody@example.org"))
        self.add("Observation", ("status:not", "final"))
        self.add("Encounter", ("class:not", "AMB"), scope="try")
        for value, pid in self.draw("Observation", "category", 1):
            system, token, _ = _codings(value)[0]
            self.add("Observation", ("category:not", f"{system}|{token}"), near=pid)
        for res_type, code in (
            ("Observation", "code"),
            ("Condition", "code"),
            ("Encounter", "type"),
        ):
            for value, pid in self.draw(res_type, code, 1):
                _, token, display = _codings(value)[0]
                self.add(res_type, (f"{code}:not", token), near=pid)
                text = value.value.get("text") or display
                if text:
                    cut = self.rng.randint(3, max(3, len(text)))
                    self.add(res_type, (f"{code}:text", text[:cut].lower()), near=pid)
        self.add("Observation", ("code:text", "zzz no such text"))
        self.add("Patient", ("identifier:text", "Social"))
        self.add("Patient", ("identifier:text", "driver"))
        typed = [
            v.value
            for v in self.values("Patient", "identifier")
            if v.fhir_type == "Identifier" and "type" in v.value
        ]
        for ident in self.pick(typed, 2):
            coding = ident["type"]["coding"][0]
            self.add(
                "Patient",
                ("identifier:of-type", f"{coding['system']}|{coding['code']}|{ident['value']}"),
            )
        self.add("Patient", ("identifier:of-type", f"{V2_0203}|MR|{self.one(typed)['value']}"))
        for res_type, code, flag in (
            ("Observation", "value-concept", "false"),
            ("Observation", "category", "true"),
            ("Encounter", "reason-code", "true"),
            ("Encounter", "reason-code", "false"),
            ("Patient", "email", "true"),
            ("Patient", "phone", "false"),
            ("Condition", "verification-status", "false"),
        ):
            self.add(res_type, (f"{code}:missing", flag))

    def string_queries(self) -> None:
        """Starts-with (case and accents ignored), :exact, :contains, :missing; OR and AND."""
        for res_type, code in (
            ("Patient", "family"),
            ("Patient", "given"),
            ("Patient", "name"),
            ("Patient", "address"),
            ("Patient", "address-city"),
            ("Patient", "address-postalcode"),
            ("Practitioner", "name"),
            ("Organization", "name"),
            ("Observation", "value-string"),
        ):
            drawn = [
                (p, pid) for v, pid in self.draw(res_type, code, 2) for p in string_parts(v)[:1]
            ]
            for word, pid in drawn[:1]:
                cut = word[: self.rng.randint(1, len(word))].strip()
                if cut:
                    self.add(res_type, (code, _vary_case(cut, self.rng)), near=pid)
            for word, pid in drawn[1:]:
                self.add(res_type, (f"{code}:exact", word), near=pid)
                changed = word.lower() if word != word.lower() else word.upper()
                self.add(res_type, (f"{code}:exact", changed), near=pid)
                inner = word[self.rng.randint(1, max(1, len(word) - 3)) :][:3].strip()
                if len(inner) >= 2:
                    self.add(res_type, (f"{code}:contains", inner.upper()), near=pid)
        accented = [w for w in self.strings("Patient", "name") if w != _ascii(w)]
        for word in self.pick(accented, 2):
            self.add("Patient", ("name", _ascii(word)))  # accents are ignored
            self.add("Patient", ("name:exact", _ascii(word)))  # but not by :exact
            self.add("Patient", ("name", word.upper()))
        families = self.strings("Patient", "family")
        a, b = self.pick(families, 2)
        self.add("Patient", ("family", f"{a},{b}"))
        self.add(
            "Patient", ("family", a[:2]), ("given", self.one(self.strings("Patient", "given"))[:1])
        )
        self.add("Patient", ("family", "Zzyzx"))
        self.add("Patient", ("address-country", "US"))
        self.add("Patient", ("address-city:missing", "false"))
        self.add("Organization", ("name:missing", "true"))

    def date_queries(self) -> None:
        """All nine prefixes at several precisions on date, dateTime, instant and Period."""
        prefixes = ("eq", "ne", "gt", "lt", "ge", "le", "sa", "eb", "ap")
        targets = (
            ("Patient", "birthdate", (4, 7, 10)),
            ("Observation", "date", (4, 7, 10, 16, 25)),
            ("Encounter", "date", (4, 7, 10, 16, 25)),
            ("Condition", "onset-date", (4, 10, 25)),
            ("Condition", "abatement-date", (7, 10)),
            ("Procedure", "date", (7, 10, 25)),
            ("CarePlan", "date", (4, 7, 10)),
            ("Immunization", "date", (4, 10)),
            ("MedicationRequest", "authoredon", (7, 25)),
            ("Patient", "death-date", (4, 10)),
            ("Claim", "created", (7, 10)),
            ("DiagnosticReport", "issued", (10, 25)),
        )
        for prefix in prefixes:
            for res_type, code, precisions in self.pick(targets, 4):
                for value, pid in self.draw(res_type, code, 1):
                    date = self.one(_date_strings(value))
                    cut = _date_at(date, self.one(precisions))
                    written = cut if prefix == "eq" and self.rng.random() < 0.5 else prefix + cut
                    self.add(res_type, (code, written), near=pid)
        # Zones, ranges as AND, alternatives as OR, nothing matching, open periods.
        for value, pid in self.draw("Encounter", "date", 2):
            start = value.value["start"]
            self.add("Encounter", ("date", f"ge{start[:19]}-05:00"), near=pid)
            self.add("Encounter", ("date", f"le{start}"), near=pid)
            self.add("Encounter", ("date", f"eq{start[:10]}"), near=pid)
        births = self.dates("Patient", "birthdate")
        a, b = sorted(self.pick(births, 2))
        self.add("Patient", ("birthdate", f"ge{a[:4]}"), ("birthdate", f"lt{b[:4]}"))
        self.add("Patient", ("birthdate", f"{a},{b[:7]}"))
        self.add("Patient", ("birthdate", "1800-01-01"))
        self.add("Patient", ("birthdate", "sa2100"))
        self.add("Patient", ("birthdate", "eb1800"))
        self.add("Patient", ("death-date:missing", "false"))
        self.add("CarePlan", ("date", f"gt{datetime.now(UTC).year}"))  # open periods go on
        self.add("Condition", ("abatement-date:missing", "true"), scope="try")

    def last_updated_queries(self) -> None:
        """_lastUpdated against the stored meta.lastUpdated."""
        patients = self.ids("Patient")
        for pid in self.pick(patients, 1):
            stamp = f"{{lastUpdated:Patient/{pid}}}"
            day = f"{{lastUpdated:Patient/{pid}:10}}"
            self.add("Patient", ("_lastUpdated", stamp), scope="none")
            for prefix in ("ge", "le", "gt", "lt", "ne"):
                self.add("Patient", ("_lastUpdated", prefix + stamp), ("_id", pid), scope="none")
            for prefix in ("eq", "ap", "sa", "eb"):
                self.add("Patient", ("_lastUpdated", prefix + day), ("_id", pid), scope="none")
        pid = self.one(patients)
        self.add("Patient", ("_lastUpdated", f"{{lastUpdated:Patient/{pid}:7}}"), scope="none")
        self.add("Patient", ("_lastUpdated", "lt2000-01-01"), scope="none")
        self.add("Patient", ("_lastUpdated", "gt2000"), ("gender", "female"), scope="none")

    def number_queries(self) -> None:
        # R4 defines number parameters only on types Synthea does not produce (RiskAssessment,
        # MolecularSequence, ChargeItem): the server must still parse them and find nothing.
        # The focused tests in test_search_oracle.py cover numbers on hand-made resources.
        self.add("RiskAssessment", ("probability", "gt0.5"))
        self.add("RiskAssessment", ("probability", "1e-1"))
        self.add("MolecularSequence", ("variant-start", "ge100"))

    def quantity_queries(self) -> None:
        """``number|system|code``, ``number||code``, ``number``; prefixes; precision."""
        for value, pid in self.draw("Observation", "value-quantity", 3):
            q = value.value
            rounded = _round(Decimal(repr(q["value"])), self.rng.choice((0, 1, 2)))
            self.add(
                "Observation", ("value-quantity", f"{rounded}|{q['system']}|{q['code']}"), near=pid
            )
            self.add("Observation", ("value-quantity", f"{rounded}||{q['unit']}"), near=pid)
            self.add("Observation", ("value-quantity", rounded), near=pid)
        for prefix in ("eq", "ne", "gt", "lt", "ge", "le", "sa", "eb", "ap"):
            for value, pid in self.draw("Observation", "value-quantity", 1):
                q = value.value
                rounded = _round(Decimal(repr(q["value"])), 1)
                self.add(
                    "Observation",
                    ("value-quantity", f"{prefix}{rounded}|{q['system']}|{q['code']}"),
                    near=pid,
                )
        for value, pid in self.draw("Observation", "value-quantity", 1):
            q = value.value
            self.add(
                "Observation",
                ("value-quantity", f"{q['value']}|{q['system']}|{q['code']}"),
                near=pid,
            )
            self.add(
                "Observation",
                ("value-quantity", f"{q['value']}|http://example.org/units|{q['code']}"),
                near=pid,
            )
        # Units that convert (g/dL against mg/dL data, g against kg): canonical matching is
        # allowed, not required.
        self.add("Observation", ("value-quantity", f"gt1|{UCUM}|g/dL"))
        self.add("Observation", ("value-quantity", f"lt50000|{UCUM}|g"))
        self.add("Observation", ("value-quantity", "5e1||kg"))
        for code in ("component-value-quantity", "combo-value-quantity"):
            for prefix in self.pick(("gt", "lt", "ap"), 2):
                for value, pid in self.draw("Observation", code, 1):
                    q = value.value
                    rounded = _round(Decimal(repr(q["value"])), 0)
                    self.add(
                        "Observation",
                        (code, f"{prefix}{rounded}|{q['system']}|{q['code']}"),
                        near=pid,
                    )

    def reference_queries(self) -> None:
        """``id``, ``Type/id``, absolute URLs, ``:Type``, ``:identifier``, ``:missing``."""
        for res_type in ("Observation", "Condition", "Encounter", "Procedure"):
            for pid in self.pick(self.patients(res_type), 1):
                self.add(res_type, ("subject", f"Patient/{pid}"))
                self.add(res_type, ("subject", pid))
                self.add(res_type, ("subject:Patient", pid))
                self.add(res_type, ("patient", pid))
        pid = self.one(self.patients("Observation"))
        self.add("Observation", ("subject", f"{{base}}/Patient/{pid}"))
        self.add("Observation", ("subject", f"http://elsewhere.example/fhir/Patient/{pid}"))
        self.add("Observation", ("subject:Group", pid))
        self.add("Observation", ("subject", "Patient/no-such-patient"))
        p1, p2 = self.pick(self.patients("Condition"), 2)
        self.add("Condition", ("patient", f"Patient/{p1},Patient/{p2}"))
        self.add("Condition", ("patient", f"Patient/{p1}"), ("patient", f"Patient/{p2}"))
        for ref_type, res_type, code in (
            ("Practitioner", "Encounter", "participant"),
            ("Practitioner", "Encounter", "practitioner"),
            ("Organization", "Encounter", "service-provider"),
            ("Practitioner", "MedicationRequest", "requester"),
            ("Encounter", "Observation", "encounter"),
            ("Encounter", "Condition", "encounter"),
            ("Observation", "DiagnosticReport", "result"),
        ):
            refs = self.oracle.references(res_type, code)
            pairs = sorted(
                (r.id, rid)
                for rid, rs in refs.items()
                for r in rs
                if r.res_type == ref_type and r.id in self.addressable
            )
            for target, rid in self.pick(pairs, 1):
                near = self.patient_of(res_type, rid)
                self.add(res_type, (code, f"{ref_type}/{target}"), scope="try", near=near)
                self.add(res_type, (code, target), scope="try", near=near)
        for res_type, code, flag in (
            ("Observation", "performer", "true"),
            ("Observation", "encounter", "false"),
            ("Encounter", "participant", "true"),
            ("Procedure", "reason-reference", "true"),
            ("Procedure", "reason-reference", "false"),
            ("MedicationRequest", "requester", "false"),
        ):
            self.add(res_type, (f"{code}:missing", flag))
        org = self.one(self.ids("Organization"))
        self.add(
            "Encounter",
            ("service-provider:identifier", f"https://github.com/synthetichealth/synthea|{org}"),
        )

    def uri_queries(self) -> None:
        self.add("Patient", ("_profile", "http://hl7.org/fhir/StructureDefinition/Patient"))
        self.add("Patient", ("_profile:missing", "true"))
        self.add("Patient", ("_profile:below", "http://hl7.org/fhir/"))
        self.add("Organization", ("_source:missing", "false"))

    def composite_queries(self) -> None:
        """Both components must hold on the same element: Observation itself or a component."""
        observations = self.oracle.values("Observation", "value-quantity")
        rids = sorted(rid for rid, vs in observations.items() if vs)
        for rid in self.pick(rids, 2):
            resource = self.oracle.resource("Observation", rid)
            assert resource is not None
            coding = resource["code"]["coding"][0]
            quantity = resource["valueQuantity"]
            value = _round(Decimal(repr(quantity["value"])), 0)
            prefix = self.one(("gt", "lt", "ge", "le", "ap", ""))
            pid = self.patient_of("Observation", rid)
            self.add(
                "Observation",
                ("code-value-quantity", f"{coding['system']}|{coding['code']}${prefix}{value}"),
                near=pid,
            )
            self.add(
                "Observation",
                (
                    "code-value-quantity",
                    f"{coding['code']}${value}|{quantity['system']}|{quantity['code']}",
                ),
                near=pid,
            )
        with_components = self.oracle.values("Observation", "component-code")
        pids = [self.patient_of("Observation", rid) for rid, vs in with_components.items() if vs]
        for pid in self.pick(sorted({p for p in pids if p}), 1):
            self.add(
                "Observation", ("component-code-value-quantity", f"{LOINC}|8480-6$gt130"), near=pid
            )
            # 8480-6 (systolic) is never below 80 but its sibling 8462-4 (diastolic) is.
            self.add(
                "Observation", ("component-code-value-quantity", f"{LOINC}|8480-6$lt80"), near=pid
            )
            self.add(
                "Observation",
                ("component-code-value-quantity", f"{LOINC}|8462-4$ge80|{UCUM}|mm[Hg]"),
                near=pid,
            )
            self.add("Observation", ("combo-code-value-quantity", f"{LOINC}|8462-4$lt80"), near=pid)
            self.add("Observation", ("code-value-quantity", f"{LOINC}|8480-6$gt0"), near=pid)
        concepts = self.oracle.values("Observation", "value-concept")
        for rid in self.pick(sorted(rid for rid, vs in concepts.items() if vs), 1):
            resource = self.oracle.resource("Observation", rid)
            assert resource is not None
            code = resource["code"]["coding"][0]
            value = resource["valueCodeableConcept"]["coding"][0]
            pid = self.patient_of("Observation", rid)
            self.add(
                "Observation",
                (
                    "code-value-concept",
                    f"{code['system']}|{code['code']}${value['system']}|{value['code']}",
                ),
                near=pid,
            )
            self.add(
                "Observation", ("code-value-concept", f"{code['code']}$no-such-code"), near=pid
            )
        with_string = [
            rid
            for rid in self.oracle.ids("Observation")
            if "valueString" in (self.oracle.resource("Observation", rid) or {})
        ]
        for rid in self.pick(with_string, 2):
            resource = self.oracle.resource("Observation", rid)
            assert resource is not None
            code = resource["code"]["coding"][0]
            text = str(resource["valueString"])
            pid = self.patient_of("Observation", rid)
            self.add("Observation", ("code-value-string", f"{code['code']}${text[:4]}"), near=pid)

    def chain_queries(self) -> None:
        """One and two levels, with and without a type, ending in every parameter type."""
        for value, pid in self.draw("Patient", "family", 1):
            family = str(value.value)
            self.add(
                "Observation",
                ("subject:Patient.name", family),
                ("category", "vital-signs"),
                near=pid,
            )
            self.add("Condition", ("subject.name", family), near=pid)
            self.add("Encounter", ("patient.family:exact", family), near=pid)
        self.add("Observation", ("subject:Patient.name", "Zzyzx"), scope="try")
        for value, pid in self.draw("Patient", "identifier", 3):
            if str(value.value.get("system", "")).endswith("us-ssn"):
                ident = value.value
                self.add(
                    "Observation",
                    ("subject.identifier", f"{ident['system']}|{ident['value']}"),
                    near=pid,
                )
        self.add("Encounter", ("subject:Patient.birthdate", "lt1950"), ("class", "EMER"))
        self.add("Encounter", ("subject:Patient.gender", "female"), ("class", "EMER"))
        self.add(
            "Condition", ("patient.address-city", self.one(self.strings("Patient", "address-city")))
        )
        self.add("Immunization", ("patient._id", self.one(self.patients("Immunization"))))
        refs = self.oracle.references("Encounter", "participant")
        for rid in self.pick(sorted(refs), 1):
            practitioner = self.oracle.resource("Practitioner", str(refs[rid][0].id))
            if practitioner is None:
                continue
            family = practitioner["name"][0]["family"]
            near = self.patient_of("Encounter", rid)
            self.add(
                "Encounter", ("participant:Practitioner.family", family), scope="try", near=near
            )
            self.add("Encounter", ("practitioner.name", family[:3]), scope="try", near=near)
            # two levels: Procedure -> Encounter -> Practitioner
            self.add(
                "Procedure",
                ("encounter:Encounter.participant:Practitioner.family", family),
                scope="try",
                near=near,
            )
        refs = self.oracle.references("Encounter", "service-provider")
        for rid in self.pick(sorted(refs), 2):
            org = self.oracle.resource("Organization", str(refs[rid][0].id))
            if org is None:
                continue
            self.add("Encounter", ("service-provider.name", org["name"][:5]), scope="try")
            # two levels: Observation -> Encounter -> Organization
            self.add(
                "Observation",
                ("encounter.service-provider.name", org["name"]),
                ("code", f"{LOINC}|8302-2"),
                near=self.patient_of("Encounter", rid),
            )
        city = self.one(self.strings("Patient", "address-city"))
        self.add("DiagnosticReport", ("result.subject:Patient.address-city", city), scope="try")
        self.add("ExplanationOfBenefit", ("claim.patient.gender", "male"))
        for value, pid in self.draw("Encounter", "class", 1):
            self.add("Observation", ("encounter.class", str(value.value["code"])), near=pid)
        for value, pid in self.draw("Encounter", "reason-code", 1):
            token = _codings(value)[0][1]
            self.add("Observation", ("encounter:Encounter.reason-code", token), near=pid)
        for value, pid in self.draw("Encounter", "date", 1):
            year = _date_strings(value)[0][:4]
            self.add("MedicationRequest", ("encounter.date", f"ge{year}"), near=pid)

    def reverse_chain_queries(self) -> None:
        """_has, nested _has, and _has ending in a chain or a modifier."""
        for value, _ in self.draw("Observation", "code", 1):
            token = _codings(value)[0][1]
            self.add("Patient", ("_has:Observation:patient:code", token))
            self.add("Encounter", ("_has:Observation:encounter:code", token), scope="try")
        for value, _ in self.draw("Condition", "code", 1):
            self.add("Patient", ("_has:Condition:subject:code", _codings(value)[0][1]))
        self.add("Patient", ("_has:Observation:patient:code", "0000-0"))
        self.add("Patient", ("_has:Encounter:patient:class", "EMER"))
        self.add("Patient", ("_has:Observation:patient:value-quantity", f"gt40|{UCUM}|kg/m2"))
        self.add(
            "Patient",
            ("_has:Encounter:patient:class", "IMP"),
            ("_has:Condition:patient:clinical-status", "active"),
        )
        self.add("Practitioner", ("_has:Encounter:participant:class", "EMER"))
        self.add("Organization", ("_has:Encounter:service-provider:date", "ge2019"))
        for value, _ in self.draw("Observation", "code", 1):
            token = _codings(value)[0][1]
            self.add("Patient", ("_has:Encounter:patient:_has:Observation:encounter:code", token))
        self.add("Patient", ("_has:Observation:patient:encounter.class", "EMER"))
        self.add("Patient", ("_has:Condition:patient:code:not", "444814009"), ("gender", "male"))

    def include_queries(self) -> None:
        """_include and _revinclude, with a target type, ``*`` and ``:iterate``."""
        pid = self.one(self.patients("Observation"))
        obs = ("patient", f"Patient/{pid}")
        self.add(
            "Observation", obs, ("category", "laboratory"), ("_include", "Observation:subject")
        )
        self.add("Observation", obs, ("_include", "Observation:subject:Patient"))
        self.add("Observation", obs, ("_include", "Observation:subject:Group"))
        self.add("Observation", obs, ("_include", "Observation:*"))
        self.add(
            "Observation",
            obs,
            ("_include", "Observation:encounter"),
            ("_include:iterate", "Encounter:service-provider"),
        )
        self.add(
            "Observation",
            obs,
            ("_include", "Observation:encounter"),
            ("_include", "Encounter:service-provider"),
        )
        for eid in self.pick(self.ids("Encounter"), 1):
            self.add("Encounter", ("_id", eid), ("_revinclude", "Observation:encounter"))
            self.add(
                "Encounter",
                ("_id", eid),
                ("_revinclude", "Observation:encounter"),
                ("_include", "Encounter:participant:Practitioner"),
            )
        for pid in self.pick(self.ids("Patient"), 1):
            self.add("Patient", ("_id", pid), ("_revinclude", "Provenance:target"))
            self.add(
                "Patient",
                ("_id", pid),
                ("_revinclude", "Condition:subject"),
                ("_include:iterate", "Condition:encounter"),
            )
        cid = self.one(self.patients("Condition"))
        self.add(
            "Condition",
            ("patient", cid),
            ("_include", "Condition:encounter"),
            ("_include:iterate", "Encounter:participant"),
        )
        mid = self.one(self.patients("MedicationRequest"))
        self.add("MedicationRequest", ("patient", mid), ("_include", "MedicationRequest:requester"))
        self.add(
            "Practitioner",
            ("_id", self.one(self.ids("Practitioner"))),
            ("_revinclude", "Encounter:practitioner"),
        )


def generate(oracle: Oracle, addressable: Iterable[str], seed: int = SEED) -> list[Query]:
    """A few hundred queries over the data ``oracle`` holds, naming only ``addressable`` ids."""
    return Generator(oracle, addressable, seed).generate()


def _codings(value: Value) -> list[tuple[str, str, str]]:
    """(system, code, display) of a Coding or each Coding of a CodeableConcept."""
    v = value.value
    items: list[Any] = []
    if value.fhir_type == "Coding":
        items = [v]
    elif value.fhir_type == "CodeableConcept":
        items = v.get("coding", [])
    return [
        (str(c.get("system", "")), c["code"], str(c.get("display", "")))
        for c in items
        if isinstance(c.get("code"), str)
    ]


def _date_strings(value: Value) -> list[str]:
    v = value.value
    if isinstance(v, str):
        return [v]
    if isinstance(v, Mapping):
        return [v[k] for k in ("start", "end") if isinstance(v.get(k), str)]
    return []


# --- helpers ------------------------------------------------------------------------------------


def _vary_case(text: str, rng: random.Random) -> str:
    return rng.choice((text, text.lower(), text.upper()))


def _ascii(text: str) -> str:
    return "".join(c for c in unicodedata.normalize("NFKD", text) if not unicodedata.combining(c))


def _date_at(date: str, precision: int) -> str:
    """``date`` cut to a precision (4 year, 7 month, 10 day, 16 minute, 19 second, 25 with
    its zone); a cut that is not a valid FHIR date keeps the whole value."""
    if precision >= len(date) or precision == 25:
        return date
    if precision in (16, 19):
        return date[:precision] + (date[19:] if len(date) > 19 and date[19] in "+-Z" else "Z")
    return date[:precision]


def _round(value: Decimal, places: int) -> str:
    return (
        str(value.quantize(Decimal(1).scaleb(-places)))
        if places
        else str(int(value.to_integral_value()))
    )


def url_label(query: Query) -> str:
    """The query as it travels (percent-encoded), for messages."""
    return f"{query.res_type}?" + "&".join(
        f"{quote(k, safe=':._-')}={quote(v, safe=':/|,$._-')}" for k, v in query.params
    )
