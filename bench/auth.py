"""(f) Authorization and privacy: token issuance, and what authorization costs a search.

- the data: the data set loaded by ``healthmesh load`` (the read benchmark's database when
  it ran first), plus patient-privacy Consents written for a fraction of the patients
  (opt-outs, a labs exception, treatment-only) so the consent SQL has rules to evaluate;
- two servers on that one database: ``healthmesh serve --test-idp`` (SMART required) and
  ``healthmesh serve --open``; the rate limits of the token endpoints raised for the run
  (the limiter's counter statement still runs on every token request);
- search: the US Core patient-scoped query mix (:func:`query_mix`) by wrk at
  ``--concurrency``, against the open server without tokens, the secured server with a
  ``patient/*.rs`` token for each query's patient, and the secured server with a
  ``system/*.rs`` token (the path that carries the consent and sensitive-label conditions,
  store/consent_sql.py); the three take turns, run by run, for ``--rounds`` rounds;
- token issuance at ``--auth-clients`` concurrent clients: cms_smart (client_credentials,
  private_key_jwt assertion with a nested IAL2 id_token from the test IdP, all pre-minted),
  the whole authorization-code flow per person (each person a loaded patient with a
  test-IdP account, logging in once: a TOTP code is good once per 30 s step), and the
  code -> token exchange alone, on codes fetched just before.
"""

from __future__ import annotations

import random
import re
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import orjson
import psycopg

from bench import auth_flows, auth_setup
from bench.common import (
    BenchError,
    Context,
    CpuMeter,
    Figure,
    MachineMeter,
    OthersMeter,
    Section,
    Service,
    free_port,
    healthmesh_argv,
    quiet_check,
    reused_url,
    run_measured,
    switched_argv,
)
from bench.loadgen import run_load
from bench.read import median_run

LUA = Path(__file__).with_name("wrk_auth.lua")
PATIENT_RATIO_TARGET = 1.2  # secured (patient token) / open, p50 and throughput
SYSTEM_RATIO_TARGET = 1.25  # secured (system token, consent SQL) / open
CONSENT_TARGET = 1.25  # consent and label filters on / off (the privacy issue)
NO_AUDIT, NO_CONSENT = ", no audit", ", no audit, no consent"  # bench/switched.py servers
MAX_PATIENTS = 500  # patients drawn for the query mix and their tokens
CONSENT_SHARES = {"opt-out": 0.15, "no-labs": 0.15, "treatment-only": 0.10}
LOINC = "http://loinc.org"
CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
DATA_CATEGORY = "https://healthmesh.dev/fhir/CodeSystem/data-category"
ACT_REASON = "http://terminology.hl7.org/CodeSystem/v3-ActReason"
CONSENT_SCOPE = "http://terminology.hl7.org/CodeSystem/consentscope"
Run = dict[str, Any]


# --- data ----------------------------------------------------------------------------------


def load_patients(url: str, limit: int, seed: int = 7) -> list[dict[str, Any]]:
    """Up to ``limit`` loaded patients (their stored JSON), in a seeded random order."""
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT content FROM resource WHERE res_type = 'Patient' AND NOT deleted ORDER BY id"
        ).fetchall()
    patients = [r[0] if isinstance(r[0], dict) else orjson.loads(r[0]) for r in rows]
    random.Random(seed).shuffle(patients)
    return patients[:limit]


def all_patient_ids(url: str) -> list[str]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT id FROM resource WHERE res_type = 'Patient' AND NOT deleted ORDER BY id"
        ).fetchall()
    return [str(r[0]) for r in rows]


def _observation_code(conn: psycopg.Connection[Any], patient: str) -> str | None:
    row = conn.execute(
        "SELECT t.code FROM search_reference p"
        " JOIN search_token t ON t.res_type = p.res_type AND t.res_id = p.res_id"
        "  AND t.param = 'code' AND t.system = %s"
        " WHERE p.res_type = 'Observation' AND p.param = 'patient'"
        "  AND p.target_type = 'Patient' AND p.target_id = %s"
        " ORDER BY t.code LIMIT 1",
        (LOINC, patient),
    ).fetchone()
    return str(row[0]) if row else None


def query_mix(url: str, patients: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """(patient id, path) of the US Core patient-scoped queries, for every drawn patient:
    Observation by patient + category, + code, + category + date; Condition, Encounter and
    MedicationRequest by patient; Patient by _id, identifier and name."""
    mix: list[tuple[str, str]] = []

    def q(pid: str, type_: str, pairs: list[tuple[str, str]]) -> None:
        mix.append((pid, f"/fhir/{type_}?{urlencode(pairs)}"))

    with psycopg.connect(url) as conn:
        for p in patients:
            pid = str(p["id"])
            q(pid, "Observation", [("patient", pid), ("category", f"{CATEGORY}|laboratory")])
            code = _observation_code(conn, pid)
            if code:
                q(pid, "Observation", [("patient", pid), ("code", f"{LOINC}|{code}")])
            q(
                pid,
                "Observation",
                [("patient", pid), ("category", "vital-signs"), ("date", "ge2015-01-01")],
            )
            q(pid, "Condition", [("patient", pid)])
            q(pid, "Encounter", [("patient", pid)])
            q(pid, "MedicationRequest", [("patient", pid), ("intent", "order")])
            q(pid, "Patient", [("_id", pid)])
            ident = next(
                (i for i in p.get("identifier", []) if i.get("system") and i.get("value")), None
            )
            if ident:
                q(pid, "Patient", [("identifier", f"{ident['system']}|{ident['value']}")])
            family = next((n.get("family") for n in p.get("name", []) if n.get("family")), None)
            if family:
                q(pid, "Patient", [("family", str(family)), ("birthdate", p.get("birthDate", ""))])
    return mix


def consents_for(patient_ids: list[str], seed: int = 11) -> dict[str, list[dict[str, Any]]]:
    """Patient-privacy Consents for shares of the patients (docs/privacy.md's examples)."""
    provisions: dict[str, dict[str, Any]] = {
        "opt-out": {"type": "deny"},
        "no-labs": {
            "type": "permit",
            "provision": [
                {"type": "deny", "code": [{"coding": [{"system": DATA_CATEGORY, "code": "labs"}]}]}
            ],
        },
        "treatment-only": {
            "type": "deny",
            "provision": [{"type": "permit", "purpose": [{"system": ACT_REASON, "code": "TREAT"}]}],
        },
    }
    ids = list(patient_ids)
    random.Random(seed).shuffle(ids)
    out: dict[str, list[dict[str, Any]]] = {}
    start = 0
    for kind, share in CONSENT_SHARES.items():
        chosen = ids[start : start + round(share * len(ids))]
        start += len(chosen)
        out[kind] = [
            {
                "resourceType": "Consent",
                "status": "active",
                "scope": {"coding": [{"system": CONSENT_SCOPE, "code": "patient-privacy"}]},
                "category": [{"coding": [{"system": LOINC, "code": "59284-0"}]}],
                "patient": {"reference": f"Patient/{pid}"},
                "provision": provisions[kind],
            }
            for pid in chosen
        ]
    return out


def write_consents(base: str, consents: list[dict[str, Any]]) -> None:
    """POST them as transaction Bundles of 200 to the (open) server."""
    with httpx.Client(timeout=300) as http:
        for i in range(0, len(consents), 200):
            bundle = {
                "resourceType": "Bundle",
                "type": "transaction",
                "entry": [
                    {"resource": c, "request": {"method": "POST", "url": "Consent"}}
                    for c in consents[i : i + 200]
                ],
            }
            response = http.post(
                base,
                content=orjson.dumps(bundle),
                headers={"Content-Type": "application/fhir+json"},
            )
            if response.status_code != 200:
                raise BenchError(f"writing Consents: HTTP {response.status_code}")


def wait_for_relabel(url: str, ctx: Context, timeout: float = 600) -> None:
    """A server started on a database `healthmesh load` made sweeps the labelled types in
    the background (no digest in label_rules_state yet): wait for it, it would skew runs."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with psycopg.connect(url) as conn:
            if conn.execute("SELECT 1 FROM label_rules_state").fetchone():
                return
        time.sleep(1)
    ctx.log.print("  [yellow]warning: the start-up relabel sweep did not finish[/]")


# --- search under authorization ------------------------------------------------------------


def _measure(ctx: Context, service: Service, url: str, label: str, lines: Path) -> Run:
    """One wrk run of ``lines`` against ``service``; what it served and who used the CPU."""
    server_cpu = CpuMeter(service.pid).start()
    pg_cpu = CpuMeter(database_url=url).start()
    machine, others = MachineMeter().start(), OthersMeter().start()
    load = run_load(
        service.base + "/",
        lines,
        duration=ctx.duration,
        concurrency=ctx.concurrency,
        threads=ctx.wrk_threads,
        script=LUA,
    )
    cpu, pg, busy = server_cpu.stop(), pg_cpu.stop(), machine.stop()
    busiest = others.stop(set(server_cpu.pids()) | set(pg_cpu.pids()))
    if load.errors:
        raise BenchError(f"{load.errors} failed requests on {label}:\n{service.log_tail(800)}")
    result: Run = asdict(load) | {
        "rate": load.rate,
        "server_cpu_share": cpu / load.seconds,
        "postgres_cpu_share": pg / load.seconds,
        "generator_cpu_share": load.generator_cpu_share,
        "machine_busy_cores": busy,
        "busiest_other_processes": busiest,
        "other_cpu_share": max(
            0.0, busy - cpu / load.seconds - pg / load.seconds - load.generator_cpu_share
        ),
    }
    ctx.log.print(
        f"    {label:<16} {load.rate:>7,.0f} req/s  p50 {load.p50_ms:5.1f} ms"
        f"  p99 {load.p99_ms:6.1f} ms  cores: app {cpu / load.seconds:.2f},"
        f" postgres {pg / load.seconds:.2f}, wrk {load.generator_cpu_share:.2f},"
        f" others {result['other_cpu_share']:.2f}"
    )
    return result


def _check_answers(base: str, lines: list[str], expect: int) -> None:
    """A few requests by hand before timing: wrong tokens would otherwise time 401s."""
    with httpx.Client(timeout=60) as http:
        for line in lines[:: max(1, len(lines) // 20)]:
            path, _, token = line.partition("\t")
            headers = {"Authorization": f"Bearer {token}"} if token else {}
            response = http.get(base + path, headers=headers)
            if response.status_code != expect:
                raise BenchError(f"{path.split('?')[0]}: HTTP {response.status_code}")


def search_under_auth(
    ctx: Context,
    url: str,
    secured: Service,
    open_: Service,
    variants: dict[str, Service],
    patients: list[dict[str, Any]],
    section: Section,
) -> None:
    mix = query_mix(url, patients)
    fhir = secured.base + "/fhir"
    ids = sorted({pid for pid, _ in mix})
    patient_tokens = dict(
        zip(
            ids,
            auth_setup.mint_tokens(
                url, fhir, "bench-patient-app", [("patient/*.rs", pid) for pid in ids]
            ),
            strict=True,
        )
    )
    (system_token,) = auth_setup.mint_tokens(url, fhir, "bench-backend", [("system/*.rs", None)])
    patient_lines = [f"{path}\t{patient_tokens[pid]}" for pid, path in mix]
    system_lines = [f"{path}\t{system_token}" for _, path in mix]
    files = {"open": [path for _, path in mix]}
    services = {"open": open_}
    # The production path (audited), then the same without auditing, then without auditing
    # and without the consent and label conditions (bench/switched.py): each part's cost.
    for variant, service in (
        ("", secured),
        (NO_AUDIT, variants[NO_AUDIT]),
        (NO_CONSENT, variants[NO_CONSENT]),
    ):
        for kind, lines in (("patient token", patient_lines), ("system token", system_lines)):
            files[kind + variant] = lines
            services[kind + variant] = service
    paths: dict[str, Path] = {}
    for name, lines in files.items():
        paths[name] = ctx.work / f"auth-{re.sub(r'[^a-z]+', '-', name)}.txt"
        paths[name].write_text("\n".join(lines) + "\n")
    for name, lines in files.items():
        _check_answers(services[name].base, lines, 200)
    ctx.log.print(
        f"[bold]auth search[/]: {len(mix):,} queries of {len(ids)} patients, concurrency"
        f" {ctx.concurrency}, {ctx.rounds} rounds of {ctx.duration:g} s, {' / '.join(files)}"
        " taking turns"
    )
    section.details["search_busy_cores_before"] = quiet_check(ctx)
    for name in files:  # warm-up: caches, plans, the token verifier's key
        run_load(
            services[name].base + "/",
            paths[name],
            duration=ctx.warmup,
            concurrency=ctx.concurrency,
            threads=ctx.wrk_threads,
            script=LUA,
        )
    runs: dict[str, list[Run]] = {name: [] for name in files}
    for round_ in range(ctx.rounds):
        ctx.log.print(f"  round {round_ + 1}/{ctx.rounds}")
        for name in files:
            runs[name].append(_measure(ctx, services[name], url, name, paths[name]))
    median = {name: median_run(r) for name, r in runs.items()}
    for name, baseline, versus, target in (
        ("patient token", "open", "open server", PATIENT_RATIO_TARGET),
        ("system token", "open", "open server", SYSTEM_RATIO_TARGET),
        ("patient token" + NO_AUDIT, "open", "open server", PATIENT_RATIO_TARGET),
        ("system token" + NO_AUDIT, "open", "open server", SYSTEM_RATIO_TARGET),
        # The privacy issue's target: consent and label filters on vs off, same run.
        ("patient token" + NO_AUDIT, "patient token" + NO_CONSENT, "consent off", CONSENT_TARGET),
        ("system token" + NO_AUDIT, "system token" + NO_CONSENT, "consent off", CONSENT_TARGET),
    ):
        m, base = median[name], median[baseline]
        others = max(m["others"] + base["others"])
        section.figures += [
            Figure(
                "auth",
                f"search, {name}: throughput" + (" (consent on)" if baseline != "open" else ""),
                m["rate"],
                "req/s",
                versus=versus,
                versus_value=base["rate"],
                # secured/open <= target in time per request is open/secured rate <= target.
                target=f">= {1 / target:.2f}",
                target_on="ratio",
                note=(
                    f"target ratio >= 1/{target} (secured/open <= {target}); rates per run"
                    f" {name} {m['rates']}, {baseline} {base['rates']}; others' CPU up to"
                    f" {others:.2f} cores"
                ),
            ),
            Figure(
                "auth",
                f"search, {name}: p50" + (" (consent on)" if baseline != "open" else ""),
                m["p50_ms"],
                "ms",
                versus=versus,
                versus_value=base["p50_ms"],
                target=f"<= {target}",
                target_on="ratio",
                note=f"p99 {name} {m['p99_ms']:.1f} ms, {baseline} {base['p99_ms']:.1f} ms",
            ),
        ]
    section.details["search"] = {"queries": len(mix), "patients": len(ids), "runs": median}


# --- token issuance ------------------------------------------------------------------------


def _flow_figures(
    name: str, burst: auth_flows.Burst, concurrency: int, steps: list[str]
) -> list[Figure]:
    summary = burst.summary()
    parts = [
        f"{s} {summary['steps'][s]['p50_ms']:.1f}/{summary['steps'][s]['p95_ms']:.1f}"
        for s in steps
        if s in summary["steps"]
    ]
    failed = f"; {burst.failed} FAILED: {sorted(set(burst.failures))[:3]}" if burst.failed else ""
    return [
        Figure(
            "auth",
            f"tokens, {name}",
            burst.rate,
            "per s",
            note=(
                f"{burst.ok} in {burst.seconds:.1f} s at {concurrency} concurrent clients;"
                f" p50/p95 ms: {', '.join(parts)}{failed}"
            ),
        )
    ]


def token_issuance(
    ctx: Context, url: str, secured: Service, patients: list[dict[str, Any]], section: Section
) -> None:
    fhir = secured.base + "/fhir"
    token_url = f"{fhir}/auth/token"
    clients = ctx.auth_clients
    flows = min(ctx.auth_flows, len(patients) // 2)
    section.details["tokens_busy_cores_before"] = quiet_check(ctx)

    # cms_smart: each request's id_token and assertion minted before the clock starts.
    key = auth_setup.AppKey()
    app = auth_setup.backend_client(url, key, "patient/*.rs")
    forms = auth_setup.cms_smart_forms(
        url,
        client=app,
        key=key,
        token_url=token_url,
        idp_issuer=f"{secured.base}/idp",
        idp_audience="healthmesh",
        patients=[patients[i % len(patients)] for i in range(ctx.auth_flows)],
    )
    http_of = auth_flows.per_thread_client()
    cpu = CpuMeter(secured.pid).start()
    cms = auth_flows.run_burst(
        [auth_flows.token_job(http_of, token_url, f) for f in forms], clients
    )
    cms_cpu = cpu.stop()
    ctx.log.print(
        f"  cms_smart: {cms.ok} tokens in {cms.seconds:.1f} s ({cms.rate:.1f}/s),"
        f" {cms.failed} failed; server {cms_cpu / max(cms.seconds, 1e-9):.2f} cores"
    )
    section.figures += _flow_figures("cms_smart client_credentials", cms, clients, ["token"])

    # The authorization-code flow: half the people for whole flows, half for exchanges.
    people = auth_setup.idp_accounts(url, patients[: 2 * flows])
    whole, for_codes = people[:flows], people[flows : 2 * flows]
    app_client = auth_setup.public_client(url)
    cpu = CpuMeter(secured.pid).start()
    full = auth_flows.run_burst(
        [auth_flows.full_flow_job(fhir, app_client, p) for p in whole], clients
    )
    full_cpu = cpu.stop()
    ctx.log.print(
        f"  authorization code, whole flow: {full.ok} in {full.seconds:.1f} s"
        f" ({full.rate:.1f}/s), {full.failed} failed;"
        f" server {full_cpu / max(full.seconds, 1e-9):.2f} cores"
    )
    section.figures += _flow_figures(
        "authorization code, whole flow", full, clients, [*auth_flows.STEPS, "whole flow"]
    )

    exchange = auth_flows.Burst()
    if for_codes:
        codes: list[tuple[str, str]] = []

        def get_code(who: dict[str, str]) -> Callable[[auth_flows.Burst], None]:
            def job(burst: auth_flows.Burst) -> None:
                codes.append(auth_flows.browser_to_code(fhir, app_client, who, burst))

            return job

        # Untimed: the browser part, for codes to exchange (they live 60 s at most).
        fetched = auth_flows.run_burst([get_code(p) for p in for_codes], clients)
        exchange_http = auth_flows.per_thread_client()

        def exchange_job(code: str, verifier: str) -> Callable[[auth_flows.Burst], None]:
            def job(burst: auth_flows.Burst) -> None:
                auth_flows.exchange(exchange_http(), fhir, app_client, code, verifier, burst)

            return job

        exchange = auth_flows.run_burst([exchange_job(c, v) for c, v in codes], clients)
        exchange.failed += fetched.failed
        exchange.failures += fetched.failures
        ctx.log.print(
            f"  authorization code, exchange only: {exchange.ok} in {exchange.seconds:.2f} s"
            f" ({exchange.rate:.1f}/s), {exchange.failed} failed"
        )
        section.figures += _flow_figures(
            "authorization code, code -> token only", exchange, clients, ["token"]
        )
    section.details["tokens"] = {
        "cms_smart": cms.summary() | {"server_cpu_seconds": cms_cpu},
        "authorization_code": full.summary() | {"server_cpu_seconds": full_cpu},
        "code_exchange": exchange.summary(),
        "concurrency": clients,
    }


# --- the run -------------------------------------------------------------------------------


def run(ctx: Context) -> Section:
    if not shutil.which("wrk"):
        raise BenchError("the auth benchmark needs wrk (apt-get install wrk)")
    section = Section()
    url = ctx.loaded_url
    if url is None and ctx.reuse_database:
        url = ctx.loaded_url = reused_url(ctx)
        ctx.log.print(f"[bold]auth[/]: reusing {ctx.reuse_database}")
    if url is None:
        url = ctx.databases.create("auth")
        ctx.log.print(f"[bold]auth[/]: loading {ctx.dataset.label} first (not timed) ...")
        load = run_measured(
            healthmesh_argv("load", "--quiet", "--database-url", url, str(ctx.dataset.root))
        )
        if load.returncode != 0:
            raise BenchError(f"healthmesh load failed:\n{load.output[-3000:]}")
        ctx.loaded_url = url
    patients = load_patients(url, MAX_PATIENTS)
    if not patients:
        raise BenchError("the database holds no Patient to authorize")

    secured_port, open_port = free_port(), free_port()
    variant_ports = {NO_AUDIT: free_port(), NO_CONSENT: free_port()}
    # The variants answer for the secured server's base URL: its tokens' audience.
    same_audience = {"HEALTHMESH_BASE_URL": f"http://127.0.0.1:{secured_port}/fhir"}
    common = ["--database-url", url]
    # The token endpoints' brute-force limits (60 per client and minute) would refuse a
    # benchmark; raised, the counter statement still runs on every request.
    limits = {
        "HEALTHMESH_AUTH_RATE_PER_CLIENT": "100000000",
        "HEALTHMESH_AUTH_RATE_PER_ADDRESS": "100000000",
    }
    with (
        Service(
            healthmesh_argv("serve", "--test-idp", "--port", str(secured_port), *common),
            secured_port,
            env=limits,
        ) as secured,
        Service(
            healthmesh_argv("serve", "--open", "--port", str(open_port), *common), open_port
        ) as open_,
        Service(
            switched_argv(["--no-audit"], "--port", str(variant_ports[NO_AUDIT]), *common),
            variant_ports[NO_AUDIT],
            env=limits | same_audience,
        ) as unaudited,
        Service(
            switched_argv(
                ["--no-audit", "--no-consent"], "--port", str(variant_ports[NO_CONSENT]), *common
            ),
            variant_ports[NO_CONSENT],
            env=limits | same_audience,
        ) as unconsented,
    ):
        wait_for_relabel(url, ctx)
        ids = all_patient_ids(url)
        consents = consents_for(ids)
        with psycopg.connect(url) as conn:
            before = conn.execute("SELECT count(*) FROM consent_rule").fetchone()
        if before and before[0] == 0:  # a reused database keeps the ones written before
            write_consents(open_.base + "/fhir", [c for cs in consents.values() for c in cs])
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("ANALYZE")
            rules = conn.execute("SELECT count(*) FROM consent_rule").fetchone()
        section.details["consents"] = {
            "patients": len(ids),
            **{kind: len(cs) for kind, cs in consents.items()},
            "consent_rule_rows": rules[0] if rules else 0,
        }
        ctx.log.print(
            f"[bold]auth[/]: {len(ids):,} patients, Consents: "
            + ", ".join(f"{len(cs)} {kind}" for kind, cs in consents.items())
        )
        variants = {NO_AUDIT: unaudited, NO_CONSENT: unconsented}
        search_under_auth(ctx, url, secured, open_, variants, patients, section)
        if ctx.auth_tokens:
            token_issuance(ctx, url, secured, patients, section)

    section.details["audit"] = (
        "search with auditing on (the node as it runs) and off (bench/switched.py --no-audit),"
        " same run: 'patient token' vs 'patient token, no audit'; reads and searches on vs off"
        " at equal authorization: bench/audit_http.py (--only audit)"
    )
    section.details["python"] = sys.version.split()[0]
    return section
