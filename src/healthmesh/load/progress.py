"""A rich progress bar for loads: bytes through the input and resources per second."""

from __future__ import annotations

import time
from types import TracebackType

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


class LoadProgress:
    def __init__(self, total_bytes: int, console: Console):
        self._progress = Progress(
            TextColumn("[bold]loading"),
            BarColumn(),
            DownloadColumn(),
            TextColumn("{task.fields[resources]:>9,} resources"),
            TextColumn("{task.fields[rate]:>7,.0f}/s"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=console,
        )
        self._task: TaskID = self._progress.add_task(
            "load", total=total_bytes, resources=0, rate=0.0
        )
        self._resources = 0
        self._started = time.perf_counter()

    def advance(self, resources: int, nbytes: int) -> None:
        self._resources += resources
        elapsed = max(time.perf_counter() - self._started, 1e-6)
        self._progress.update(
            self._task, advance=nbytes, resources=self._resources, rate=self._resources / elapsed
        )

    @property
    def rate(self) -> float:
        return self._resources / max(time.perf_counter() - self._started, 1e-6)

    def __enter__(self) -> LoadProgress:
        self._progress.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._progress.stop()
