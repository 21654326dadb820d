"""How stages report progress without printing: they call a :class:`Reporter` the CLI hands them.

Stages never import rich or print; the CLI passes :class:`RichReporter`, tests pass the silent default.
Every stage advances a Reporter task as its work gets done (align and finetune from a Lightning callback,
once per optimiser step), which makes the task the one place where a test can stop a stage at a known point.

Testing hook (fault injection): ``AVASR_FAULT=kill:<task-prefix>:<n>`` makes the process SIGKILL itself as
soon as the progress of a task whose description starts with ``<task-prefix>`` reaches ``n``
(e.g. ``kill:align:4`` right after step 4, ``kill:transcribing test:10`` after 10 test utterances). The
kill lands at that point and nowhere else, so a kill test needs no guessed sleep. The variable is read
once when a task opens; unset, the task is returned unwrapped and costs nothing.
"""

from __future__ import annotations

import contextlib
import os
import signal
from typing import Iterator, Protocol

from avasr_cli.errors import ConfigError


class Task(Protocol):
    def advance(self, n: float = 1) -> None: ...

    def update(self, **fields: object) -> None: ...


class _NullTask:
    def advance(self, n: float = 1) -> None:
        pass

    def update(self, **fields: object) -> None:
        pass


class _KillAt:
    """Wraps a task: SIGKILLs this process once the task's progress reaches ``at``."""

    def __init__(self, task: Task, at: float):
        self.task, self.at, self.done = task, at, 0.0

    def advance(self, n: float = 1) -> None:
        self.task.advance(n)
        self.done += n
        if self.done >= self.at:
            os.kill(os.getpid(), signal.SIGKILL)

    def update(self, **fields: object) -> None:
        self.task.update(**fields)


def _with_fault(description: str, task: Task) -> Task:
    spec = os.environ.get("AVASR_FAULT")
    if not spec:
        return task
    kind, _, rest = spec.partition(":")
    prefix, _, at = rest.rpartition(":")
    if kind != "kill" or not prefix or not at.isdigit():
        raise ConfigError(f"AVASR_FAULT={spec!r} is not kill:<task-prefix>:<n>",
                          "unset AVASR_FAULT (a testing hook) or fix its value")
    return _KillAt(task, int(at)) if description.startswith(prefix) else task


class Reporter:
    """Silent reporter (library use and tests). Subclasses draw tasks by overriding :meth:`_open`."""

    def log(self, message: str) -> None:
        pass

    def warn(self, message: str) -> None:
        pass

    @contextlib.contextmanager
    def task(self, description: str, total: float | None = None, unit: str = "") -> Iterator[Task]:
        with self._open(description, total, unit) as task:
            yield _with_fault(description, task)

    @contextlib.contextmanager
    def _open(self, description: str, total: float | None, unit: str) -> Iterator[Task]:
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
    def _open(self, description: str, total: float | None, unit: str) -> Iterator[Task]:
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
