"""Tunables of bulk export (docs/export.md), from HEALTHMESH_EXPORT_* environment variables."""

from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True, slots=True, kw_only=True)
class ExportSettings:
    retention: int = 24 * 3600  # seconds a finished job's files are kept (then 404)
    max_file_resources: int = 100_000  # a type with more resources is split over files
    # ... and a file holds at most this many patients' data: its download writes one
    # AuditEvent per patient before the first byte, so this bounds that wait.
    max_file_patients: int = 1_000
    chunk_bytes: int = 1 << 20  # NDJSON stored (and served) in pieces of about this size
    max_active_jobs: int = 5  # per client and user: more at once is 429
    stale_after: int = 30  # seconds without heartbeat before a running job is taken over
    max_attempts: int = 3  # runs of a job (restarts included) before it is marked failed
    poll_interval: float = 1.0  # seconds between looks for jobs other processes accepted
    retry_after: int = 2  # Retry-After of a status answer while the job runs

    def __post_init__(self) -> None:
        if (
            min(self.retention, self.max_file_resources, self.max_file_patients, self.chunk_bytes)
            < 1
        ):
            raise ValueError("export retention, file size and chunk size must be positive")
        if self.max_active_jobs < 1 or self.max_attempts < 1 or self.stale_after < 1:
            raise ValueError("export job limits must be positive")

    @staticmethod
    def from_env() -> ExportSettings:
        values: dict[str, object] = {}
        for name, env in (
            ("retention", "HEALTHMESH_EXPORT_RETENTION"),
            ("max_file_resources", "HEALTHMESH_EXPORT_MAX_FILE_RESOURCES"),
            ("max_file_patients", "HEALTHMESH_EXPORT_MAX_FILE_PATIENTS"),
            ("max_active_jobs", "HEALTHMESH_EXPORT_MAX_ACTIVE_JOBS"),
        ):
            if env in os.environ:
                values[name] = int(os.environ[env])
        return ExportSettings(**values)  # type: ignore[arg-type]
