"""Typed errors. Each carries a one-line message and a hint (usually the next command to run).

The CLI maps every :class:`AvasrError` to ``Error: ...`` / ``Hint: ...`` on stderr and a non-zero exit
code, without a traceback unless ``AVASR_DEBUG=1``.
"""

from __future__ import annotations


class AvasrError(Exception):
    """Base class for errors a user can act on."""

    exit_code = 2
    default_hint = ""

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message = " ".join(str(message).split())  # always one line
        self.hint = hint if hint is not None else self.default_hint


class ConfigError(AvasrError):
    """An option has a bad value (or several options do: messages are joined)."""


class InputError(AvasrError):
    """A file the user gave us (manifest, audio, image, checkpoint) is missing or malformed."""


class PrerequisiteError(AvasrError):
    """A stage needs the output of an earlier stage that is not in the run directory."""


class RunDirError(AvasrError):
    """The run directory cannot be used (locked, wrong schema, not a run directory)."""


class ModelLoadError(AvasrError):
    """A model (hub id, local snapshot, .nemo file) cannot be loaded."""


class ResourceError(AvasrError):
    """The machine lacks something asked for (GPUs, disk space, a TTS voice)."""


class FairnessError(AvasrError):
    """Runs that cannot be compared fairly (different test sets)."""


def at_least_one(cfg, names: tuple[str, ...]) -> list[str]:
    """``--name must be at least 1`` for each integer option of ``cfg`` below 1."""
    return [f"--{n.replace('_', '-')} must be at least 1" for n in names if getattr(cfg, n) < 1]


def raise_problems(problems: list[str], hint: str) -> None:
    """A config's validate() collects every problem, then raises them as one ConfigError."""
    if problems:
        raise ConfigError("; ".join(problems), hint)
