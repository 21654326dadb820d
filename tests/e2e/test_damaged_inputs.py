"""Every file a stage reads, damaged in turn: each damage ends in the stage's own one-line error naming the
file (or the shard holding it) with a hint — never the catch-all ``Error: unexpected …`` — or the stage
goes on with a warning naming it (an undecodable image is skipped and counted).

The files are not listed by hand: each stage first runs once under a Python audit hook that records every
file it opens for reading under the run directory and ``$AVASR_HOME`` (the audio named in the manifests
is added: libsndfile opens it outside Python). Both audio layouts are walked: one file per clip, and
NeMo tarred shards (``prepare --audio-layout shards``). Files of one kind (shards, images, manifests of one split
pattern) are represented by the first of them. Then, for each file and each damage — cut to half its
size, overwritten with random bytes, replaced by a directory, deleted — a fresh copy of the run directory and of
``$AVASR_HOME`` gets the damage and the stage runs again through the CLI's own entry point (in-process).
"""

from __future__ import annotations

import os
import re
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from avasr_cli.data.manifest import read_manifest

pytestmark = pytest.mark.slow
PREP = ["--num-align", "24", "--num-train", "12", "--num-dev", "4", "--num-test", "4"]
STAGES = {
    "embed-images": ["embed-images", "--vision", "tiny-siglip", "--workers", "0"],
    "align": ["align", "--max-steps", "2", "--batch-size", "4", "--workers", "0"],
    "finetune": ["finetune", "--decoder", "ctc", "--max-steps", "2", "--batch-size", "4", "--val-every", "2",
                 "--workers", "0"],
    "evaluate": ["evaluate", "--batch-size", "4"],
}
ORDER = ["prepare", *STAGES]

_TRACE: dict = {"on": False, "roots": (), "paths": set()}


def _audit(event: str, args: tuple) -> None:
    if not _TRACE["on"] or event != "open":
        return
    path, mode, flags = args
    if isinstance(path, int) or path is None:
        return
    reading = ("r" in mode and "+" not in mode) if isinstance(mode, str) else (flags or 0) & os.O_ACCMODE == os.O_RDONLY
    if reading:
        p = os.path.abspath(os.fsdecode(path))
        if p.startswith(_TRACE["roots"]):
            _TRACE["paths"].add(p)


sys.addaudithook(_audit)  # audit hooks cannot be removed: this one is inert unless _TRACE["on"]


def cli(monkeypatch, capsys, home: Path, run: Path, args: list[str]) -> tuple[int, str]:
    """``avasr -r RUN ARGS`` through ``avasr_cli.cli.main`` in this process → (exit code, stderr)."""
    from avasr_cli.cli import main

    monkeypatch.setenv("AVASR_HOME", str(home))
    monkeypatch.setenv("COLUMNS", "1000")
    monkeypatch.setattr(sys, "argv", ["avasr", "-r", str(run), *args])
    capsys.readouterr()
    try:
        main()
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    return code, capsys.readouterr().err


def restore(state: Path, work: Path) -> tuple[Path, Path]:
    """Put ``state`` back at ``work``: manifests hold absolute paths into it, so every case runs there."""
    shutil.rmtree(work, ignore_errors=True)
    shutil.copytree(state, work, symlinks=True)
    return work / "home", work / "run"


@pytest.fixture(scope="module", params=["files", "shards"])
def states(tmp_path_factory, request):
    """(work, states): the run directory and AVASR_HOME as each stage finds them (``states[stage]``, the
    state before it), to be put back at ``work`` for each case."""
    root = tmp_path_factory.mktemp("damage")
    mp, cap, stderr = pytest.MonkeyPatch(), _Capture(), sys.stderr
    work = root / "work"
    home, run = work / "home", work / "run"
    out = {}
    try:
        for stage in ORDER:
            if stage != "prepare":
                out[stage] = root / f"before-{stage}"
                shutil.copytree(work, out[stage], symlinks=True)
            args = ["prepare", *PREP, "--audio-layout", request.param, "--shard-clips", "5"] if stage == "prepare" \
                else STAGES[stage]
            code, err = cli(mp, cap, home, run, args)
            assert code == 0, err[-3000:]
    finally:
        mp.undo()
        sys.stderr = stderr
    return work, out


class _Capture:
    """capsys for the module fixture (pytest's is function-scoped): stderr goes to a buffer."""

    def __init__(self):
        self.buf = None

    def readouterr(self):
        import io

        class Result:
            pass

        res = Result()
        res.err = self.buf.getvalue() if self.buf is not None else ""
        self.buf = io.StringIO()
        sys.stderr = self.buf
        return res


def kind(path: Path, root: Path) -> str:
    """Files of one kind share this: digits and hashes masked (shard-00003 ~ shard-00007)."""
    rel = str(path.relative_to(root))
    return re.sub(r"\d+", "#", re.sub(r"[0-9a-f]{16,}", "H", rel))


def reads(stage: str, state: Path, work: Path, monkeypatch, capsys) -> list[tuple[str, str]]:
    """(root name, path relative to it) of one file of each kind that ``stage`` reads from ``state``."""
    home, run = restore(state, work)
    _TRACE.update(on=True, roots=(str(home) + os.sep, str(run) + os.sep), paths=set())
    try:
        code, err = cli(monkeypatch, capsys, home, run, STAGES[stage])
    finally:
        _TRACE["on"] = False
    assert code == 0, err[-3000:]
    paths = {Path(p) for p in _TRACE["paths"]}
    for manifest in [p for p in paths if p.suffix == ".jsonl" and p.parent == run / "data"]:
        rows = read_manifest(manifest, require=())
        if stage != "embed-images" and rows and "audio_filepath" in rows[0]:
            paths.add(Path(rows[0]["audio_filepath"]))
    picked: dict[str, tuple[str, str]] = {}
    for p in sorted(paths):
        for name, root in (("run", run), ("home", home)):
            if p.is_relative_to(root) and (state / name / p.relative_to(root)).is_file():  # there before the stage
                picked.setdefault(name + ":" + kind(p, root), (name, str(p.relative_to(root))))
    return sorted(picked.values())


def truncate(p: Path) -> None:
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])


def garbage(p: Path) -> None:
    p.write_bytes(np.random.default_rng(0).bytes(max(64, p.stat().st_size)))


def directory(p: Path) -> None:
    p.unlink()
    p.mkdir()


def delete(p: Path) -> None:
    p.unlink()


DAMAGES = {"cut in half": truncate, "random bytes": garbage, "a directory": directory, "deleted": delete}


def outcome(code: int, err: str, damaged: Path, roots: tuple[Path, Path]) -> str | None:
    """None when the CLI handled the damage (went on with a warning that names the file, or stopped with one
    error that names it and a hint), else what is wrong."""
    names = {str(damaged), str(damaged.parent), str(damaged.parent.parent)}
    for root in roots:
        if damaged.is_relative_to(root):
            names.add(str(damaged.relative_to(root)))
    if code == 0:  # the warning must name the file itself (or the store shard holding it)
        own = {str(damaged)} | ({str(damaged.parent)} if damaged.parent.name.startswith("shard-") else set())
        return None if any(n in err for n in own) else "went on without a word about it"
    if "Traceback" in err or "Error: unexpected" in err:
        return "fell to the catch-all or a traceback: " + err.strip()[-600:]
    errors = [line for line in err.splitlines() if line.startswith("Error:")]
    if len(errors) != 1:
        return f"{len(errors)} Error: lines: " + err.strip()[-600:]
    if not any(line.startswith("Hint:") and len(line) > 7 for line in err.splitlines()):
        return "no hint: " + errors[0]
    if not any(n in errors[0] for n in names):
        return "does not name the file: " + errors[0]
    return None


@pytest.mark.parametrize("stage", list(STAGES))
def test_every_file_a_stage_reads_damaged_in_turn(stage, states, monkeypatch, capsys):
    work, states = states
    files = reads(stage, states[stage], work, monkeypatch, capsys)
    assert any(name == "run" and rel == "run.json" for name, rel in files), files  # the tracer sees reads
    failures, report = [], []
    for i, (name, rel) in enumerate(files):
        for what, damage in DAMAGES.items():
            home, run = restore(states[stage], work)
            target = (home if name == "home" else run) / rel
            damage(target)
            code, err = cli(monkeypatch, capsys, home, run, STAGES[stage])
            problem = outcome(code, err, target, (home, run))
            first = next((line for line in err.splitlines() if line.startswith("Error:")), "repaired / tolerated")
            report.append(f"{name}:{rel} {what}: exit {code}: {first[:160]}")
            if problem:
                failures.append(f"{name}:{rel} {what}: {problem}")
    print(f"\n{stage}: {len(files)} files x {len(DAMAGES)} damages\n" + "\n".join(report))
    assert not failures, "\n".join(failures)


def test_the_hint_repairs_a_damaged_feature_shard(states, monkeypatch, capsys):
    """align names the damaged shard and says to rerun embed-images; that very command (same options, no
    --force) repairs the store instead of reporting the stage as finished, and align then runs."""
    work, states = states
    home, run = restore(states["align"], work)
    shard = next((home / "features").glob("*/shard-*"))
    truncate(shard / "patches.npy")
    code, err = cli(monkeypatch, capsys, home, run, STAGES["align"])
    assert code != 0 and shard.name in err and "avasr embed-images" in err, err
    code, err = cli(monkeypatch, capsys, home, run, STAGES["embed-images"])
    assert code == 0 and "already finished" not in err and f"removed damaged feature shard {shard}" in err, err
    code, err = cli(monkeypatch, capsys, home, run, STAGES["align"])
    assert code == 0, err[-2000:]
    code, err = cli(monkeypatch, capsys, home, run, STAGES["embed-images"])  # whole again: skipped
    assert code == 0 and "already finished" in err, err
