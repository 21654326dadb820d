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


_OS_HINTS = {
    "EEXIST": ("is a file where a directory is needed", "move the file away or choose another path"),
    "ENOTDIR": ("has a file where a directory is needed", "move the file away or choose another path"),
    "EISDIR": ("is a directory where a file is needed", "name a file, or move the directory away"),
    "ENOENT": ("does not exist", "check the path (a typo, or an earlier stage not run yet); if it is not a path "
                                 "you gave, rerun with AVASR_DEBUG=1 and report it"),
    "EACCES": ("is not accessible (permission denied)", "check its permissions or choose a path you can write"),
    "EPERM": ("is not accessible (operation not permitted)", "check its permissions or choose another path"),
    "EROFS": ("is on a read-only file system", "point --run-dir / AVASR_HOME at a writable disk"),
    "ENOSPC": ("is on a full disk", "free some space or point --run-dir / AVASR_HOME at a larger disk"),
    "EDQUOT": ("is over the disk quota", "free some space or point --run-dir / AVASR_HOME at a larger disk"),
    "ENAMETOOLONG": ("has a name that is too long", "choose a shorter path"),
}


def from_os_error(exc: OSError) -> AvasrError | None:
    """An :class:`OSError` that names a path, as the CLI's one-line error naming that path (or None)."""
    import errno
    from pathlib import Path

    name = errno.errorcode.get(exc.errno or 0, "")
    path = exc.filename2 if exc.filename2 is not None else exc.filename  # a rename: its destination
    if name not in _OS_HINTS or path is None:
        return None
    what, hint = _OS_HINTS[name]
    if name == "EEXIST" and Path(path).is_dir():
        return None  # a directory that exists where one was to be made: not the user's path, a bug
    if name in ("ENOTDIR", "EEXIST"):
        blocker = next((p for p in [Path(path), *Path(path).parents] if p.exists() and not p.is_dir()), None)
        if blocker is not None and str(blocker) != str(path):
            return InputError(f"{blocker} is a file, so {path} cannot be made or used as a directory", hint)
    return InputError(f"{path} {what}", hint)


def not_a_file(path) -> str:
    """Why ``path`` cannot be read as a file ("does not exist", "is a directory, not a file", "is not
    readable"), or "" when it can."""
    import os
    from pathlib import Path

    p = Path(path)
    if p.is_dir():
        return "is a directory, not a file"
    if not p.exists():
        return "does not exist"
    if not p.is_file():
        return "is not a regular file"
    if not os.access(p, os.R_OK):
        return "is not readable (permission denied)"
    return ""
