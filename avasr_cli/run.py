"""The run directory: paths, ``run.json`` (schema version + one record per stage), a writer lock and
atomic writes.

Layout (every path relative to the run directory)::

    run.json                 schema version and one record per finished stage
    .lock                    present while a stage writes (pid, host, command)
    data/                    manifests (train/dev/test/align .jsonl) and data_card.json
    features.json            which feature store (in the shared cache) this run uses
    align/                   aligned encoder (encoder.safetensors + encoder.json), recall.json, checkpoints
    finetune/                model.nemo, tokenizer/, checkpoints
    reports/                 wer-<split>.json, hyps-<split>.jsonl, errors-<split>.txt
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import socket
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Iterable, Iterator

from avasr_cli import __version__
from avasr_cli.errors import PrerequisiteError, ResourceError, RunDirError

SCHEMA_VERSION = 1
STAGE_ORDER = ("prepare", "embed-images", "align", "finetune", "evaluate")


def avasr_home() -> Path:
    """The shared cache for decoded corpora, feature stores and tiny models (``$AVASR_HOME``)."""
    home = Path(os.environ.get("AVASR_HOME") or Path.home() / ".cache" / "avasr").expanduser()  # "" is unset
    if home.exists() and not home.is_dir():
        raise RunDirError(f"AVASR_HOME {home} is a file, not a directory",
                          "point AVASR_HOME at a directory (it is created when missing)")
    return home


# --------------------------------------------------------------------------------------------- atomic io
def _check_space(path: Path, nbytes: int) -> None:
    try:
        st = os.statvfs(path)
        free = st.f_bavail * st.f_frsize
    except OSError:
        return
    if free < nbytes + (1 << 20):
        raise ResourceError(
            f"not enough disk space in {path} ({free >> 20} MiB free, {nbytes >> 20} MiB needed)",
            "free some space or point AVASR_HOME / --run-dir at a larger disk",
        )


@contextlib.contextmanager
def atomic_path(dest: Path | str) -> Iterator[Path]:
    """Yield a temporary path next to ``dest``; rename it onto ``dest`` only if the block succeeds."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp_path, dest)
    except OSError as exc:
        tmp_path.unlink(missing_ok=True)
        if exc.errno == 28:  # ENOSPC
            raise ResourceError(f"disk full while writing {dest}", "free some space and rerun the command") from exc
        raise
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def write_bytes_atomic(dest: Path | str, data: bytes) -> None:
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    _check_space(dest.parent, len(data))
    with atomic_path(dest) as tmp:
        tmp.write_bytes(data)


def write_text_atomic(dest: Path | str, text: str) -> None:
    write_bytes_atomic(dest, text.encode("utf-8"))


def write_json_atomic(dest: Path | str, obj: Any) -> None:
    write_text_atomic(dest, json.dumps(obj, indent=2, ensure_ascii=False, default=_json_default) + "\n")


def write_jsonl_atomic(dest: Path | str, rows: Iterable[dict]) -> int:
    """Write ``rows`` (any iterable: a generator is streamed, one line at a time, never all in memory) to
    ``dest`` atomically; return how many were written."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    n = 0
    with atomic_path(dest) as tmp, open(tmp, "w", encoding="utf-8") as fh:
        for r in rows:
            fh.write(json.dumps(r, ensure_ascii=False) + "\n")
            n += 1
    return n


def _json_default(o: Any) -> Any:
    if dataclasses.is_dataclass(o):
        return dataclasses.asdict(o)
    if isinstance(o, Path):
        return str(o)
    if hasattr(o, "item"):
        return o.item()
    raise TypeError(f"not JSON serialisable: {type(o)}")


def sha256_file(path: Path | str, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


# --------------------------------------------------------------------------------------------- run dir
@dataclasses.dataclass
class RunDir:
    root: Path

    def __post_init__(self) -> None:
        self.root = Path(self.root).expanduser().resolve()

    # paths ---------------------------------------------------------------------------------------------
    @property
    def run_json(self) -> Path:
        return self.root / "run.json"

    @property
    def data(self) -> Path:
        return self.root / "data"

    def manifest(self, split: str) -> Path:
        return self.data / f"{split}.jsonl"

    @property
    def align_dir(self) -> Path:
        return self.root / "align"

    @property
    def finetune_dir(self) -> Path:
        return self.root / "finetune"

    @property
    def reports(self) -> Path:
        return self.root / "reports"

    # record --------------------------------------------------------------------------------------------
    def exists(self) -> bool:
        return self.run_json.exists()

    def load(self) -> dict:
        if not self.run_json.exists():
            return {"schema_version": SCHEMA_VERSION, "avasr_version": __version__, "stages": {}}
        try:
            record = json.loads(self.run_json.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise RunDirError(f"{self.run_json} is not valid JSON ({exc})", "restore it from a backup or start a new run directory") from exc
        except OSError as exc:  # a directory, unreadable
            raise RunDirError(f"cannot read {self.run_json} ({exc.strerror or exc})",
                              "restore it from a backup or start a new run directory") from exc
        if not isinstance(record, dict):
            raise RunDirError(f"{self.run_json} is not a run record (a JSON {type(record).__name__})",
                              "restore it from a backup or start a new run directory")
        version = record.get("schema_version")
        if version != SCHEMA_VERSION:
            raise RunDirError(
                f"{self.run_json} has schema version {version!r}; this avasr ({__version__}) reads version {SCHEMA_VERSION}",
                "use the avasr version that wrote this run, or start a new run directory",
            )
        return record

    def stage(self, name: str) -> dict | None:
        return self.load()["stages"].get(name)

    def require(self, name: str, hint: str) -> dict:
        rec = self.stage(name)
        if rec is None:
            raise PrerequisiteError(f"run directory {self.root} has no finished '{name}' stage", hint)
        return rec

    def record_stage(self, name: str, config: Any, result: Any) -> None:
        """Write the stage record last: a stage without a record is unfinished. It holds the stage's options,
        its result, and the stack and machine it ran on (:func:`avasr_cli.env.environment`)."""
        from avasr_cli.env import environment

        record = self.load()
        record["avasr_version"] = __version__
        record["stages"][name] = {
            "config": dataclasses.asdict(config) if dataclasses.is_dataclass(config) else config,
            "result": dataclasses.asdict(result) if dataclasses.is_dataclass(result) else result,
            "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "command": " ".join(sys.argv),
            "environment": environment(),
        }
        # a redone stage invalidates every stage that consumed its output
        for later in STAGE_ORDER[STAGE_ORDER.index(name) + 1 :] if name in STAGE_ORDER else ():
            record["stages"].pop(later, None)
        write_json_atomic(self.run_json, record)

    def forget_stage(self, name: str) -> None:
        record = self.load()
        if record["stages"].pop(name, None) is not None:
            write_json_atomic(self.run_json, record)

    # lock ----------------------------------------------------------------------------------------------
    @contextlib.contextmanager
    def lock(self, command: str) -> Iterator[None]:
        """Hold the run directory's writer lock; a stale lock of a dead process on this host is taken over."""
        self.root.mkdir(parents=True, exist_ok=True)
        lock = self.root / ".lock"
        me = {"pid": os.getpid(), "host": socket.gethostname(), "command": command, "since": time.time()}
        for _ in range(2):
            try:
                fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                holder = _read_lock(lock)
                if holder and holder.get("host") == me["host"] and not _pid_alive(holder.get("pid", -1)):
                    lock.unlink(missing_ok=True)  # stale: its process is gone
                    continue
                if holder is None:  # half-written lock: its writer died between create and write
                    if time.time() - lock.stat().st_mtime > 5:
                        lock.unlink(missing_ok=True)
                        continue
                who = f"pid {holder.get('pid')} on {holder.get('host')} running '{holder.get('command')}'" if holder else "another process"
                raise RunDirError(
                    f"run directory {self.root} is locked by {who}",
                    f"wait for it to finish; if that process is dead on another host, delete {lock}",
                )
            with os.fdopen(fd, "w") as fh:
                json.dump(me, fh)
            break
        try:
            yield
        finally:
            holder = _read_lock(lock)
            if holder and holder.get("pid") == me["pid"]:
                lock.unlink(missing_ok=True)


def _read_lock(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def is_secondary_rank() -> bool:
    """True in the extra processes of a distributed run (Lightning's DDP children, torchrun, SLURM):
    they train but neither lock nor write the run directory; rank 0 does."""
    for var in ("RANK", "SLURM_PROCID", "LOCAL_RANK", "NODE_RANK"):
        value = os.environ.get(var, "")
        if value.isdigit() and int(value) > 0:
            return True
    return False


def resolve_run_dir(path: str | os.PathLike | None) -> RunDir:
    """``--run-dir`` beats ``$AVASR_RUN_DIR`` beats the current directory."""
    if path is None:
        path = os.environ.get("AVASR_RUN_DIR") or "."
    run = RunDir(Path(path))
    if run.root.exists() and not run.root.is_dir():
        raise RunDirError(f"run directory {run.root} is a file, not a directory",
                          "choose another --run-dir (it is created when missing), or move the file away")
    return run


def input_fingerprint(files: dict[str, Path], start: str | None = None) -> dict:
    """What a stage consumed, to tell a finished stage whose inputs changed from one that can be skipped:
    the sha256 of each existing file in ``files`` (manifests, records) and the identity of the starting
    encoder ``start`` (the weights' sha256 for an encoder directory or a checkpoint file, else the name)."""
    out = {name: sha256_file(path) for name, path in files.items() if Path(path).is_file()}
    if start is not None:
        path = Path(start).expanduser()
        weights = path / "encoder.safetensors" if path.is_dir() else path
        out["starting encoder"] = sha256_file(weights) if weights.is_file() else start
    return out

