"""The threat model of docs/security.md, one test per claim: untrusted files never run code, secrets are
never written or printed, hostile images cost bounded time and memory, a run directory has one writer,
a full disk and SIGTERM leave nothing half-trusted, and paths and manifests read as users expect.

Most cases drive the CLI in this process (``avasr_cli.cli.main``, as tests/e2e/test_paths.py does); a
separate process is used where one is the point: two writers at once, a signal, a process's peak memory,
and everything a whole pipeline prints (its output at the file-descriptor level, NeMo's logs included).
"""

from __future__ import annotations

import ast
import contextlib
import hashlib
import io
import json
import os
import secrets
import shutil
import signal
import struct
import subprocess
import sys
import tarfile
import time
import zlib
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
PREP = ["prepare", "--num-align", "8", "--num-train", "4", "--num-dev", "2", "--num-test", "2"]
EMBED = ["embed-images", "--vision", "tiny-siglip", "--workers", "0"]
ALIGN = ["align", "--max-steps", "2", "--batch-size", "4", "--workers", "0"]
FINETUNE = ["finetune", "--decoder", "ctc", "--max-steps", "2", "--batch-size", "4", "--val-every", "2",
            "--workers", "0"]
EVALUATE = ["evaluate", "--batch-size", "4"]
_DROPPED = ("AVASR_RUN_DIR", "AVASR_DEBUG", "HF_TOKEN", "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD")


# ------------------------------------------------------------------------------------------------ helpers
def inproc(home: Path, run: Path, *args: str, **env: str) -> tuple[int, str, str]:
    """``avasr -r RUN ARGS`` through ``avasr_cli.cli.main`` in this process → (exit code, stdout, stderr)."""
    from avasr_cli.cli import main

    out, err = io.StringIO(), io.StringIO()
    with pytest.MonkeyPatch.context() as mp:
        for name in _DROPPED:
            mp.delenv(name, raising=False)
        for name, value in dict(AVASR_HOME=str(home), COLUMNS="1000", HF_HUB_OFFLINE="1", **env).items():
            mp.setenv(name, value)
        mp.setattr(sys, "argv", ["avasr", "-r", str(run), *args])
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                main()
                code = 0
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    return code, out.getvalue(), err.getvalue()


def _env(home: Path, **extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in _DROPPED}
    env.update(AVASR_HOME=str(home), HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_DATASETS_OFFLINE="1",
               COLUMNS="1000", **extra)
    return env


def avasr(home: Path, run: Path, *args: str, timeout: int = 600, **env: str) -> subprocess.CompletedProcess:
    """``avasr -r RUN ARGS`` in its own process, its output captured at the file descriptors."""
    return subprocess.run([sys.executable, "-m", "avasr_cli", "-r", str(run), *args], env=_env(home, **env),
                          capture_output=True, timeout=timeout, cwd=ROOT)


def spawn(home: Path, run: Path, *args: str, log: Path, **env: str) -> subprocess.Popen:
    with open(log, "wb") as fh:
        return subprocess.Popen([sys.executable, "-m", "avasr_cli", "-r", str(run), *args], env=_env(home, **env),
                                stdout=fh, stderr=subprocess.STDOUT, cwd=ROOT, start_new_session=True)


def reap(proc: subprocess.Popen, timeout: float) -> int:
    """Wait for ``proc``; on timeout kill its whole session and fail."""
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        pytest.fail(f"pid {proc.pid} still running after {timeout} s")


def wait_for(predicate, proc: subprocess.Popen, log: Path, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if proc.poll() is not None:
            pytest.fail(f"exited {proc.returncode} before it was expected to:\n{log.read_text()[-3000:]}")
        if time.monotonic() > deadline:
            os.killpg(proc.pid, signal.SIGKILL)
            pytest.fail(f"waited {timeout} s in vain:\n{log.read_text()[-3000:]}")
        time.sleep(0.05)


def one_error(err: str, *names: str) -> str:
    """Exactly one ``Error:`` line, not the catch-all, no traceback, a hint; it names every one of ``names``."""
    assert "Traceback" not in err, err[-3000:]
    lines = [line for line in err.splitlines() if line.startswith("Error:")]
    assert len(lines) == 1, err[-3000:]
    assert "Error: unexpected" not in lines[0], lines[0]
    assert any(line.startswith("Hint:") and len(line) > 7 for line in err.splitlines()), err[-2000:]
    for name in names:
        assert str(name) in lines[0], (name, lines[0])
    return lines[0]


def stages(run: Path) -> dict:
    path = run / "run.json"
    return json.loads(path.read_text())["stages"] if path.exists() else {}


def leftovers(*roots: Path) -> list[Path]:
    return [p for root in roots for p in root.rglob("*") if p.name.endswith(".tmp") or p.name.startswith(".tmp-")]


class Plant:
    """Unpickling this calls ``os.mkdir(marker)``: had any loader run the pickle, the marker would exist."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return os.mkdir, (self.marker,)


# ------------------------------------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def embedded(tmp_path_factory) -> tuple[Path, Path]:
    """(state, work): a run prepared and embedded in-process at ``work``, copied to ``state``."""
    root = tmp_path_factory.mktemp("security")
    work = root / "work"
    for args in (PREP, EMBED):
        code, _, err = inproc(work / "home", work / "run", *args)
        assert code == 0, err[-3000:]
    shutil.copytree(work, root / "state", symlinks=True)
    return root / "state", work


@pytest.fixture
def fresh(embedded) -> tuple[Path, Path]:
    """(home, run) put back as ``embedded`` left them (manifests hold absolute paths: always at ``work``)."""
    state, work = embedded
    shutil.rmtree(work, ignore_errors=True)
    shutil.copytree(state, work, symlinks=True)
    return work / "home", work / "run"


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory) -> tuple[Path, Path, str, list]:
    """The whole pipeline, each stage its own process, under a directory with spaces and Kannada in its
    name, with a Hugging Face token in the environment: (home, run, token, [(stage, completed process)])."""
    base = tmp_path_factory.mktemp("paths") / "tmp" / "ರನ್ dir with spaces"
    home, run = base / "ಮನೆ home", base / "run ರನ್"
    token = "hf_" + secrets.token_urlsafe(24).replace("-", "x").replace("_", "y")
    done = []
    for args in (PREP, EMBED, ALIGN, FINETUNE, EVALUATE):
        proc = avasr(home, run, *args, HF_TOKEN=token)
        done.append((args[0], proc))
        if proc.returncode:
            break
    return home, run, token, done


# ----------------------------------------------------------------------------- 1. untrusted files never run code
def _calls(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and isinstance(node.func.value, ast.Name):
            yield node, node.func.value.id, node.func.attr


def _true(node: ast.Call, keyword: str) -> bool:
    return any(k.arg == keyword and isinstance(k.value, ast.Constant) and k.value.value is True for k in node.keywords)


def test_no_loader_in_the_source_can_unpickle():
    """Every torch.load passes weights_only=True, no np.load passes allow_pickle=True, nothing imports a
    pickle-style loader. (Read from the syntax tree: a comment or a string cannot hide or fake one.)"""
    bad, loads = [], 0
    for path in sorted((ROOT / "avasr_cli").rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        where = lambda node: f"{path.relative_to(ROOT)}:{node.lineno}"  # noqa: E731
        for node, owner, attr in _calls(tree):
            if owner == "torch" and attr == "load":
                loads += 1
                if not _true(node, "weights_only"):
                    bad.append(f"{where(node)}: torch.load without weights_only=True")
            if owner in ("np", "numpy") and attr == "load" and _true(node, "allow_pickle"):
                bad.append(f"{where(node)}: np.load(allow_pickle=True)")
            if owner in ("pickle", "dill", "joblib", "cloudpickle") and attr in ("load", "loads"):
                bad.append(f"{where(node)}: {owner}.{attr}")
        for node in ast.walk(tree):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            bad += [f"{where(node)}: imports {n}" for n in names if n.split(".")[0] in ("pickle", "dill", "joblib",
                                                                                         "cloudpickle", "marshal")]
    assert loads >= 3, "the walker finds no torch.load: it is broken"
    assert not bad, "\n".join(bad)


def _pickled_npy(shard: Path, name: str, marker: Path) -> None:
    """Replace ``shard/name`` with an object array (a pickle) whose header, size and row count all agree
    with the shard's keys.json and index.json: only its dtype gives it away."""
    rows = len(json.loads((shard / "keys.json").read_text()))
    arr = np.empty((rows, 64), dtype=object)
    arr[0, 0] = Plant(marker)
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=True)
    data = buf.getvalue()
    head = io.BytesIO(data)
    np.lib.format.read_magic(head)
    np.lib.format.read_array_header_1_0(head)
    size = head.tell() + rows * 64 * np.dtype(object).itemsize
    assert len(data) <= size
    data += b"\0" * (size - len(data))
    (shard / name).write_bytes(data)
    index = json.loads((shard / "index.json").read_text())
    index["files"][name] = {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    (shard / "index.json").write_text(json.dumps(index))
    loaded = np.load(io.BytesIO(data), allow_pickle=True)  # it is a real pickle: loading it runs code
    assert loaded.dtype == object and marker.is_dir()
    marker.rmdir()


def test_a_pickled_array_in_the_feature_store_is_refused(fresh, tmp_path):
    """align names the shard and the file and stops; embed-images (the hint) removes the shard and
    embeds its images again. The pickle is never loaded."""
    home, run = fresh
    marker = tmp_path / "ran"
    shard = next((home / "features").glob("*/shard-00000"))
    _pickled_npy(shard, "pooled.npy", marker)
    code, _, err = inproc(home, run, *ALIGN)
    assert code == 2
    line = one_error(err, f"{shard.parent}: shard-00000 is damaged (pooled.npy holds object values, not float16)")
    assert not marker.exists()
    hint = next(h for h in err.splitlines() if h.startswith("Hint:"))
    assert "avasr embed-images" in hint, hint
    code, _, err = inproc(home, run, *EMBED)
    assert code == 0 and f"removed damaged feature shard {shard}" in err, (line, err[-2000:])
    assert not marker.exists()


@pytest.mark.slow
def test_a_pickled_checkpoint_in_the_run_directory_is_never_unpickled(fresh, tmp_path):
    """align finds its checkpoints poisoned (every .ckpt a pickle that would run code): each is skipped
    with a warning naming it, the stage trains afresh and finishes; nothing is executed and no
    checkpoint reaches Lightning (which would unpickle it in full)."""
    import torch

    home, run = fresh
    args = [*ALIGN, "--checkpoint-every", "1"]
    code, _, err = inproc(home, run, *args)
    assert code == 0, err[-3000:]
    record = json.loads((run / "run.json").read_text())
    del record["stages"]["align"]  # as if align had been killed before it finished
    (run / "run.json").write_text(json.dumps(record))
    marker = tmp_path / "ran"
    ckpts = sorted((run / "align" / "checkpoints").glob("*.ckpt"))
    assert ckpts
    for ckpt in ckpts:
        torch.save({"global_step": 1, "state_dict": {}, "plant": Plant(marker)}, ckpt)
    code, _, err = inproc(home, run, *args)
    assert code == 0, err[-3000:]
    for ckpt in ckpts:
        assert f"ignoring checkpoint {ckpt}: it does not load safely (UnpicklingError)" in err, err[-3000:]
    assert "resuming from" not in err and stages(run)["align"]["result"]["resumed_from"] is None
    assert not marker.exists()


def _tiny_ctc_config() -> dict:
    from avasr_cli.models.fastconformer import NAMED_CONFIGS, encoder_config, preprocessor_config

    p = NAMED_CONFIGS["tiny"]
    return {"target": "nemo.collections.asr.models.ctc_models.EncDecCTCModel", "sample_rate": 16000,
            "preprocessor": preprocessor_config(p["features"]), "encoder": encoder_config(**p),
            "decoder": {"_target_": "nemo.collections.asr.modules.ConvASRDecoder", "feat_in": p["d_model"],
                        "num_classes": 3, "vocabulary": ["a", "b", "c"]}}


def _nemo(path: Path, members: list[tuple[tarfile.TarInfo, bytes]]) -> Path:
    with tarfile.open(path, "w") as tar:
        for info, data in members:
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if info.isfile() else None)
    return path


def _file(name: str, data: bytes) -> tuple[tarfile.TarInfo, bytes]:
    return tarfile.TarInfo(name), data


def _hostile_nemo(kind: str, tmp_path: Path, marker: Path) -> Path:
    import torch
    import yaml

    cfg = _tiny_ctc_config()
    weights = io.BytesIO()
    torch.save({"encoder.pre_encode.conv.0.weight": torch.zeros(1)}, weights)
    if kind == "pickled weights":
        weights = io.BytesIO()
        torch.save({"plant": Plant(marker)}, weights)
    if kind == "a class outside NeMo's allow-list":
        cfg["preprocessor"] = {"_target_": "os.mkdir", "path": str(marker)}
    members = [_file("model_config.yaml", yaml.safe_dump(cfg).encode()), _file("model_weights.ckpt", weights.getvalue())]
    if kind == "members outside the archive":
        link = tarfile.TarInfo("link")
        link.type, link.linkname = tarfile.SYMTYPE, str(tmp_path)
        members += [_file("../../../escaped.txt", b"x"), _file(str(tmp_path / "absolute.txt"), b"x"), (link, b""),
                    _file("link/through-link.txt", b"x")]
    return _nemo(tmp_path / f"{kind.replace(' ', '-')}.nemo", members)


@pytest.mark.parametrize("kind", ["pickled weights", "a class outside NeMo's allow-list", "members outside the archive"])
def test_a_hostile_init_nemo_runs_nothing_and_writes_nothing_outside(fresh, tmp_path, monkeypatch, kind):
    """``--init x.nemo``: one warning line naming the file before NeMo restores it; NeMo 3.0 refuses
    pickled weights (torch's weights-only default) and classes outside its allow-list, and skips archive
    members that would land outside its extraction directory. The stage stops with one error."""
    home, run = fresh
    marker = tmp_path / "ran"
    extract = tmp_path / "a" / "b"  # NeMo extracts into tempfile's directory: ../../../ is tmp_path
    extract.mkdir(parents=True)
    monkeypatch.setattr("tempfile.tempdir", str(extract))
    nemo = _hostile_nemo(kind, tmp_path, marker)
    code, _, err = inproc(home, run, *ALIGN, "--init", str(nemo))
    assert code == 2
    warning = [line for line in err.splitlines() if line.startswith(f"Warning: --init {nemo}:")]
    assert len(warning) == 1 and "load only .nemo files you trust" in warning[0], err[-3000:]
    line = one_error(err, f"--init {nemo}", "cannot restore the .nemo file")
    if kind == "pickled weights":
        assert "UnpicklingError" in line and "posix.mkdir" in line
    if kind == "a class outside NeMo's allow-list":
        assert "os.mkdir" in line
    assert not marker.exists()
    assert not (tmp_path / "escaped.txt").exists() and not (tmp_path / "through-link.txt").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["a", nemo.name])  # nothing landed beside them
    from nemo.utils import AppState

    # NeMo sets a process-wide "being restored" flag and clears it only on success: left set, every model
    # built later in this process skips its data set-up (finetune then dies with train_dataloader None)
    assert not AppState().is_model_being_restored


def test_with_torch_force_no_weights_only_load_set_nemo_runs_the_pickle_and_the_warning_says_so(fresh, tmp_path):
    """Why the warning exists: NeMo 3.0 calls torch.load without weights_only, so this environment
    variable turns its weights loading into full unpickling, and a .nemo's pickle runs."""
    home, run = fresh
    marker = tmp_path / "ran"
    nemo = _hostile_nemo("pickled weights", tmp_path, marker)
    code, _, err = inproc(home, run, *ALIGN, "--init", str(nemo), TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD="1")
    assert code == 2
    assert f"Warning: --init {nemo}: NeMo builds the classes named in a .nemo's config and unpickles its weights " \
           "(in full, as TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD is set: the file can run any code)" in err, err[-3000:]
    assert marker.is_dir()  # the pickle ran (it made this directory), then the model failed to load
    one_error(err, f"--init {nemo}")


@pytest.mark.slow
def test_a_pickled_model_nemo_in_the_run_directory_is_refused_by_evaluate(pipeline, tmp_path):
    """The run's own finetune/model.nemo, its weights swapped for a pickle that would run code: evaluate
    (stock NeMo restore, torch's weights-only default) stops with one error naming the file."""
    import torch

    home, run, _, done = pipeline
    assert [p.returncode for _, p in done] == [0] * 5
    copy = tmp_path / "run"
    shutil.copytree(run, copy, symlinks=True)
    marker = tmp_path / "ran"
    weights = io.BytesIO()
    torch.save({"plant": Plant(marker)}, weights)
    model = copy / "finetune" / "model.nemo"
    with tarfile.open(run / "finetune" / "model.nemo") as src, tarfile.open(model, "w") as dst:
        for info in src.getmembers():
            if not info.isfile():  # the archive's "./"
                dst.addfile(info)
                continue
            data = weights.getvalue() if info.name.endswith("model_weights.ckpt") else src.extractfile(info).read()
            info.size = len(data)
            dst.addfile(info, io.BytesIO(data))
    reports = {p.name: p.read_bytes() for p in (copy / "reports").iterdir()}
    code, _, err = inproc(home, copy, *EVALUATE, "--force")
    assert code == 2
    one_error(err, f"cannot load {model} as a NeMo ASR model (UnpicklingError)")
    assert not marker.exists() and {p.name: p.read_bytes() for p in (copy / "reports").iterdir()} == reports
    from nemo.utils import AppState

    assert not AppState().is_model_being_restored  # the refused restore leaves NeMo's process-wide flag clear


# --------------------------------------------------------------------------------------------- 2. secrets
@pytest.mark.slow
def test_a_token_in_the_environment_is_never_written_or_printed(pipeline, tmp_path):
    home, run, token, done = pipeline
    assert [stage for stage, proc in done if proc.returncode == 0] == [a[0] for a in (PREP, EMBED, ALIGN, FINETUNE,
                                                                                      EVALUATE)]
    needle = token.encode()
    for stage, proc in done:
        assert needle not in proc.stdout + proc.stderr, stage
    written = [p for root in (run, home) for p in root.rglob("*") if p.is_file() and needle in p.read_bytes()]
    assert not written and len(list(run.rglob("*"))) > 20, written
    # a failing command: the Vaani source, offline, with the token at hand
    proc = avasr(tmp_path / "home", tmp_path / "run", "prepare", "--source", "vaani", "--lang", "kannada",
                 "--dataset", "someone/not-there", "--transcribed-dataset", "someone/not-there-either",
                 HF_TOKEN=token)
    one_error(proc.stderr.decode(), "someone/not-there")
    assert proc.returncode != 0 and needle not in proc.stdout + proc.stderr
    assert not [p for p in tmp_path.rglob("*") if p.is_file() and needle in p.read_bytes()]


# --------------------------------------------------------------------------------------------- 3. images
def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def bomb_png(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height RGB pixels; its few kB of data are zero rows."""
    z = zlib.compressobj(9)
    data = b"".join(z.compress(b"\0" * (1 + 3 * width)) for _ in range(min(height, 100))) + z.flush()
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + _png_chunk(b"IDAT", data) + _png_chunk(b"IEND", b""))


@pytest.mark.slow
def test_hostile_images_are_named_and_skipped_in_bounded_time_and_memory(fresh, tmp_path):
    """Two decompression bombs (900 M pixels: past Pillow's error limit; 144 M pixels: past its warning
    limit only, which Pillow would decode at 0.4 GB per copy), a truncated PNG and a text file named .png:
    embed-images skips each with a warning naming it, and finishes; its peak memory stays near a plain
    run's (about 0.5 GB)."""
    from PIL import Image

    home, run = fresh
    bad = {"bomb-30000.png": bomb_png(30000, 30000), "bomb-12000.png": bomb_png(12000, 12000)}
    noise = io.BytesIO()
    Image.effect_noise((64, 64), 60).convert("RGB").save(noise, "PNG")
    bad["truncated.png"] = noise.getvalue()[: len(noise.getvalue()) // 2]
    bad["not-an-image.png"] = b"just some text, not an image\n"
    paths = []
    for name, data in bad.items():
        (tmp_path / name).write_bytes(data)
        paths.append(tmp_path / name)
    assert all(p.stat().st_size < 20_000 for p in paths)
    manifest = run / "data" / "align.jsonl"
    rows = [json.loads(line) for line in manifest.read_text(encoding="utf-8").splitlines()]
    for row, path in zip(rows, paths):
        row["image_filepath"] = str(path)
        row.pop("image_sha256", None)
    manifest.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    out, errlog = tmp_path / "out.json", tmp_path / "err.log"
    started = time.monotonic()
    with open(out, "wb") as fo, open(errlog, "wb") as fe:
        proc = subprocess.Popen([sys.executable, "-m", "avasr_cli", "-r", str(run), *EMBED, "--force", "--json"],
                                env=_env(home), stdout=fo, stderr=fe, cwd=ROOT, start_new_session=True)
    code, peak_mb = reap_measured(proc, timeout=120)
    seconds, err = time.monotonic() - started, errlog.read_text()
    assert code == 0, err[-3000:]
    assert seconds < 60, seconds
    assert peak_mb < 1200, f"peak resident memory {peak_mb} MB"
    skipped = {s["path"]: s["reason"] for s in json.loads(out.read_text())["skipped_images"]}
    assert set(skipped) == {str(p) for p in paths}, skipped
    for path in paths:
        assert f"Warning: skipped image {path}:" in err, err[-3000:]
    assert "DecompressionBombError" in skipped[str(tmp_path / "bomb-30000.png")]
    assert "DecompressionBombWarning" in skipped[str(tmp_path / "bomb-12000.png")]


def reap_measured(proc: subprocess.Popen, timeout: float) -> tuple[int, int]:
    """(exit code, peak resident memory in MB) of ``proc``, reaped here with wait4 (Popen's own wait
    would drop the child's resource usage); past ``timeout`` its session is killed and the test fails."""
    deadline = time.monotonic() + timeout
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            proc.returncode = os.waitstatus_to_exitcode(status)
            return proc.returncode, usage.ru_maxrss // 1024
        if time.monotonic() > deadline:
            os.killpg(proc.pid, signal.SIGKILL)
            os.wait4(proc.pid, 0)
            proc.returncode = -9
            pytest.fail(f"still running after {timeout} s: a hang")
        time.sleep(0.05)


# ---------------------------------------------------------------------------------------------- 4. concurrency
@pytest.mark.slow
def test_a_second_process_on_a_running_stage_is_refused_and_the_first_finishes(fresh, tmp_path):
    home, run = fresh
    log = tmp_path / "first.log"
    first = spawn(home, run, *EMBED, "--force", log=log)
    try:
        wait_for((run / ".lock").exists, first, log)
        code, _, err = inproc(home, run, *EMBED, "--force")
        assert code == 2
        one_error(err, f"run directory {run} is locked by pid {first.pid}", "embed-images")
    finally:
        rc = reap(first, 300)
    assert rc == 0, log.read_text()[-3000:]
    assert "embed-images" in stages(run) and (run / "features.json").is_file() and not (run / ".lock").exists()
    features = json.loads((run / "features.json").read_text())
    assert features["skipped"] == 0 and features["images"] == features["embedded"] + features["cached"]


def test_two_runs_sharing_one_home_prepare_at_once(tmp_path):
    """Both build from the one corpus in $AVASR_HOME (its generation is locked): both succeed, with the
    same manifests, every clip whole, one corpus and nothing half-written left in the cache."""
    from avasr_cli.data.manifest import check_audio_files, read_manifest

    home = tmp_path / "home"
    runs = [tmp_path / "run-a", tmp_path / "run-b"]
    procs = [spawn(home, r, *PREP, log=tmp_path / f"{r.name}.log") for r in runs]
    for proc, r in zip(procs, runs):
        assert reap(proc, 300) == 0, (tmp_path / f"{r.name}.log").read_text()[-3000:]
    assert len(list((home / "corpora").iterdir())) == 1
    for split in ("align", "train", "dev", "test"):
        a, b = (r / "data" / f"{split}.jsonl" for r in runs)
        assert a.read_bytes() == b.read_bytes(), split
        rows = read_manifest(a)
        assert len(rows) == {"align": 8, "train": 4, "dev": 2, "test": 2}[split]
        check_audio_files(a, rows)
    assert not leftovers(home, *runs)


# --------------------------------------------------------------------------------------------------- 5. faults
@pytest.fixture
def small_disk(tmp_path):
    """A 4 MiB tmpfs at tmp_path/disk (needs root and mount(8)); unmounted afterwards."""
    disk = tmp_path / "disk"
    disk.mkdir()
    if shutil.which("mount") is None or os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root and mount(8)")
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(disk)], capture_output=True, text=True)
    if proc.returncode:
        pytest.skip(f"cannot mount a small tmpfs here: {proc.stderr.strip()}")
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


@pytest.mark.parametrize("free_kb", [1500, 2200, 2600])
def test_a_full_disk_is_one_error_and_the_rerun_trusts_no_half_written_file(small_disk, free_kb):
    """Run directory and $AVASR_HOME on a small disk filled to ``free_kb`` kB free, so prepare runs out
    while estimating the corpus, while writing it, or while writing the manifests: one error that says
    so; after the filler is removed the same command succeeds, and every file its manifests name is whole."""
    from PIL import Image

    from avasr_cli.data.manifest import check_audio_files, read_manifest

    home, run = small_disk / "home", small_disk / "run"
    st = os.statvfs(small_disk)
    (small_disk / "filler").write_bytes(b"\0" * (st.f_bavail * st.f_frsize - free_kb * 1000))
    code, _, err = inproc(home, run, *PREP)
    assert code == 2, err[-3000:]
    line = one_error(err, str(small_disk))
    assert "disk" in line and ("space" in line or "full" in line) and "free" in line, line
    assert "prepare" not in stages(run)
    (small_disk / "filler").unlink()
    code, _, err = inproc(home, run, *PREP)
    assert code == 0, err[-3000:]
    for split, n in (("align", 8), ("train", 4), ("dev", 2), ("test", 2)):
        rows = read_manifest(run / "data" / f"{split}.jsonl")
        assert len(rows) == n
        check_audio_files(run / "data" / f"{split}.jsonl", rows)  # decodes each header, checks each duration
        for row in rows:
            if row.get("image_filepath"):
                with Image.open(row["image_filepath"]) as im:
                    im.load()
    for chunk in (home / "corpora").glob("*/chunks/*.jsonl"):
        [json.loads(line) for line in chunk.read_text(encoding="utf-8").splitlines()]
    assert not leftovers(home, run)


@pytest.mark.slow
def test_sigterm_stops_training_soon_and_the_same_command_resumes(fresh, tmp_path):
    home, run = fresh
    args = ["align", "--max-steps", "20", "--batch-size", "4", "--workers", "0", "--checkpoint-every", "2"]
    log = tmp_path / "align.log"
    proc = spawn(home, run, *args, log=log)
    wait_for(lambda: any((run / "align" / "checkpoints").glob("step*.ckpt")), proc, log)
    proc.send_signal(signal.SIGTERM)
    sent = time.monotonic()
    rc = reap(proc, 60)
    took = time.monotonic() - sent
    text = log.read_text()
    print(f"exited {took:.1f} s after SIGTERM, status {rc}")
    assert took < 10, f"{took:.1f} s after SIGTERM"
    assert rc == 143, f"exit {rc} after SIGTERM:\n{text[-3000:]}"
    assert "Terminated (SIGTERM); rerun the same command to resume." in text
    assert "align" not in stages(run) and not (run / ".lock").exists()
    code, _, err = inproc(home, run, *args)
    assert code == 0, err[-3000:]
    assert "resuming from" in err
    result = stages(run)["align"]["result"]
    assert result["steps"] == 20 and result["resumed_from"].endswith(".ckpt")
    assert (run / "align" / "encoder" / "encoder.safetensors").is_file() and not leftovers(run)


# ------------------------------------------------------------------------------------------ 6. paths and manifests
@pytest.mark.slow
def test_paths_with_spaces_and_non_ascii_run_the_whole_pipeline(pipeline):
    home, run, _, done = pipeline
    for stage, proc in done:
        assert proc.returncode == 0, (stage, proc.stderr.decode(errors="replace")[-3000:])
    assert len(done) == 5
    assert "ರನ್ dir with spaces" in str(run) and " " in str(home)
    rows = [json.loads(line) for line in (run / "data" / "train.jsonl").read_text(encoding="utf-8").splitlines()]
    assert all(r["audio_filepath"].startswith(str(home)) and os.path.isfile(r["audio_filepath"]) for r in rows)
    assert (run / "finetune" / "model.nemo").is_file()
    report = json.loads((run / "reports" / "wer-test.json").read_text(encoding="utf-8"))
    assert report["num_utterances"] == 2
    assert set(stages(run)) == {"prepare", "embed-images", "align", "finetune", "evaluate"}


def _byo(root: Path, newline: bytes = b"\n", bom: bool = False, replace: dict | None = None) -> list[str]:
    """Four small manifests of our own media; ``replace[split] = (line number, field, value)`` puts one
    wrong field in. Returns the ``prepare --source manifest`` arguments."""
    import soundfile as sf
    from PIL import Image

    root.mkdir(parents=True, exist_ok=True)
    t = np.arange(16000) / 16000
    args = ["prepare", "--source", "manifest", "--lang", "kannada", "--workers", "1"]
    for k, split in enumerate(("align", "train", "dev", "test")):
        rows = []
        for i in range(2):
            wav = root / f"{split}{i}.wav"
            sf.write(wav, (0.3 * np.sin(2 * np.pi * (200 + 40 * (2 * k + i)) * t)).astype(np.float32), 16000)
            row = {"audio_filepath": str(wav), "duration": 1.0, "speaker": f"{split}-{i}"}
            if split == "align":
                Image.new("RGB", (16, 16), (80 * i, 30, 30)).save(root / f"img{i}.png")
                row["image_filepath"] = str(root / f"img{i}.png")
            else:
                row["text"] = "ನಮಸ್ಕಾರ ಮನೆ"
            rows.append(row)
        if replace and split in replace:
            lineno, field, value = replace[split]
            rows[lineno - 1][field] = value
        body = b"".join(json.dumps(r, ensure_ascii=False).encode() + newline for r in rows)
        (root / f"{split}.jsonl").write_bytes((b"\xef\xbb\xbf" if bom else b"") + body)
        args += [f"--{split}", str(root / f"{split}.jsonl")]
    return args


@pytest.mark.parametrize("newline, bom", [(b"\n", True), (b"\r\n", False), (b"\r\n", True)],
                         ids=["utf8-bom", "crlf", "bom-and-crlf"])
def test_manifests_with_a_bom_or_crlf_line_ends_are_read(tmp_path, newline, bom):
    from avasr_cli.data.manifest import read_manifest

    run = tmp_path / "run"
    code, _, err = inproc(tmp_path / "home", run, *_byo(tmp_path / "m", newline, bom))
    assert code == 0, err[-3000:]
    for split in ("align", "train", "dev", "test"):
        rows = read_manifest(run / "data" / f"{split}.jsonl")
        assert len(rows) == 2 and all(not r["audio_filepath"].endswith("\r") for r in rows)
        if split != "align":
            assert {r["text"] for r in rows} == {"ನಮಸ್ಕಾರ ಮನೆ"}


@pytest.mark.parametrize("field, value, says", [
    ("duration", "abc", "duration must be a number, got 'abc'"),
    ("text", 5, "text must be a string, got 5"),
    ("audio_filepath", 7, "audio_filepath must be a string, got 7"),
])
@pytest.mark.parametrize("newline, bom", [(b"\n", False), (b"\r\n", True)], ids=["lf", "bom-and-crlf"])
def test_a_field_of_the_wrong_type_names_the_file_and_line(tmp_path, field, value, says, newline, bom):
    run = tmp_path / "run"
    code, _, err = inproc(tmp_path / "home", run, *_byo(tmp_path / "m", newline, bom, {"train": (2, field, value)}))
    assert code == 2
    one_error(err, f"{tmp_path / 'm' / 'train.jsonl'}:2: {says}")
    assert not (run / "run.json").exists()
