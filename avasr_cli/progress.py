"""How stages report progress without printing: they call a :class:`Reporter` the CLI hands them.

Stages never import rich or print; the CLI passes :class:`RichReporter`, tests pass the silent default.
"""

from __future__ import annotations

import contextlib
from typing import Iterator, Protocol


class Task(Protocol):
    def advance(self, n: float = 1) -> None: ...

    def update(self, **fields: object) -> None: ...


class _NullTask:
    def advance(self, n: float = 1) -> None:
        pass

    def update(self, **fields: object) -> None:
        pass


class Reporter:
    """Silent reporter (library use and tests)."""

    def log(self, message: str) -> None:
        pass

    def warn(self, message: str) -> None:
        pass

    @contextlib.contextmanager
    def task(self, description: str, total: float | None = None, unit: str = "") -> Iterator[Task]:
        yield _NullTask()


class RichReporter(Reporter):
    """Progress bars and log lines on stderr."""

    def __init__(self, console) -> None:
        self.console = console

    def log(self, message: str) -> None:
        self.console.print(f"[dim]•[/dim] {message}", highlight=False)

    def warn(self, message: str) -> None:
        self.console.print(f"[yellow]Warning:[/yellow] {message}", highlight=False)

    @contextlib.contextmanager
    def task(self, description: str, total: float | None = None, unit: str = "") -> Iterator[Task]:
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                                   TimeRemainingColumn)

        columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                   TextColumn("{task.fields[info]}"), TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn()]
        with Progress(*columns, console=self.console, transient=False) as progress:
            tid = progress.add_task(description, total=total, info="")

            class _Task:
                def advance(self, n: float = 1) -> None:
                    progress.advance(tid, n)

                def update(self, **fields: object) -> None:
                    info = " ".join(f"{k}={v}" for k, v in fields.items())
                    progress.update(tid, info=info)

            yield _Task()
