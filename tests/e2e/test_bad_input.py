"""The bad-input table of issue 8: each wrong, missing or hostile input ends in one ``Error:`` line naming the
file, line or option at fault, a ``Hint:`` line, a non-zero exit without a traceback, and a run directory
left byte for byte as it was.

Every case runs the real CLI in a subprocess on its own copy of one prepared run directory (built once per
module). Cases that only make sense in-process (a full disk) monkeypatch ``avasr_cli.run``. The Vaani token
never reaching disk is tested end to end in ``tests/unit/test_vaani.py::test_token_is_never_written``;
here we only check the CLI's error path does not echo it.
"""

from __future__ import annotations

import errno
import hashlib
import importlib.util
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]
PREP = ["--num-align", "24", "--num-train", "12", "--num-dev", "4", "--num-test", "4"]
FAKE_TOKEN = "hf_FAKEbadInputTOKENneverWRITTEN99"


# ------------------------------------------------------------------------------------------------ helpers
def _env(home: Path, **extra) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("AVASR_RUN_DIR", "AVASR_DEBUG", "HF_TOKEN")}
    env.update(AVASR_HOME=str(home), HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_DATASETS_OFFLINE="1",
               COLUMNS="400", **extra)
    return env


def avasr(home: Path, run: Path | None, *args: str, timeout: int = 300, **env) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "avasr_cli"] + (["-r", str(run)] if run is not None else []) + list(args)
    return subprocess.run(cmd, env=_env(home, **env), capture_output=True, text=True, timeout=timeout, cwd=ROOT)


def snapshot(root: Path) -> dict[str, str]:
    """relative path → sha256 of every file under ``root`` (hidden files included, nothing ignored)."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() or p.is_symlink()}


def assert_clean_error(proc: subprocess.CompletedProcess, run: Path | None, before: dict | None,
                       *names: str) -> str:
    """Non-zero exit, one ``Error:`` line naming every one of ``names``, a ``Hint:``, no traceback, run intact."""
    stderr = proc.stderr
    assert proc.returncode != 0, f"exit 0\n{stderr[-2000:]}"
    assert "Traceback" not in stderr, stderr[-3000:]
    errors = [line for line in stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, stderr[-3000:]
    for name in names:
        assert str(name) in errors[0], f"{name!r} not in {errors[0]!r}"
    assert any(line.startswith("Hint:") and len(line) > 7 for line in stderr.splitlines()), stderr[-2000:]
    if run is not None:
        assert snapshot(run) == before, "the run directory changed"
    print(errors[0])
    return errors[0]


def tone(seconds: float = 1.0, sr: int = 16_000, channels: int = 1, freq: float = 220.0) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    x = (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32)
    return np.stack([x] * channels, axis=1) if channels > 1 else x


def write_wav(path: Path, data: np.ndarray, sr: int = 16_000) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), data, sr, subtype="PCM_16")
    return path


def write_png(path: Path, color=(200, 30, 30)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (32, 32), color).save(path)
    return path


def write_jsonl(path: Path, rows: list) -> Path:
    """Rows are dicts (JSON-encoded) or raw bytes (written as they are)."""
    with open(path, "wb") as fh:
        for r in rows:
            fh.write(r if isinstance(r, bytes) else json.dumps(r, ensure_ascii=False).encode() + b"\n")
    return path


# ------------------------------------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def base(tmp_path_factory) -> tuple[Path, Path]:
    """(AVASR_HOME, prepared + embedded run directory), built once per module."""
    root = tmp_path_factory.mktemp("bad_input")
    home, run = root / "home", root / "run"
    for args in (["prepare", *PREP], ["embed-images"]):
        proc = avasr(home, run, *args)
        assert proc.returncode == 0, proc.stderr[-3000:]
    return home, run


@pytest.fixture
def case(base, tmp_path):
    """(home, a fresh copy of the prepared run)."""
    home, run = base
    copy = tmp_path / "run"
    shutil.copytree(run, copy, symlinks=True)
    return home, copy


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("media")
    files = {f"good{i}": write_wav(d / f"good{i}.wav", tone(1.0, freq=200 + 40 * i)) for i in range(8)}
    files["stereo"] = write_wav(d / "stereo.wav", tone(1.0, sr=44_100, channels=2), sr=44_100)
    files["8k"] = write_wav(d / "narrow.wav", tone(1.0, sr=8_000), sr=8_000)
    files["silent8k"] = write_wav(d / "silent.wav", np.zeros(8_000, dtype=np.float32), sr=8_000)
    files["empty"] = write_wav(d / "empty.wav", np.zeros(0, dtype=np.float32))
    files["corrupt"] = d / "corrupt.wav"
    files["corrupt"].write_bytes(np.random.default_rng(0).bytes(4096))
    for i in range(4):
        files[f"img{i}"] = write_png(d / f"img{i}.png", (60 * i, 30, 200 - 40 * i))
    files["bad_img"] = d / "bad.png"
    files["bad_img"].write_bytes(b"\x89PNG\r\n\x1a\n" + np.random.default_rng(1).bytes(512))
    return files


def byo(tmp: Path, media: dict, **replace) -> list[str]:
    """Four valid BYO manifests (two lines each, speaker-disjoint); ``replace[split]`` swaps a split's rows.
    Returns the ``prepare --source manifest`` arguments."""
    def row(i, split, **kw):
        r = dict(audio_filepath=str(media[f"good{i}"]), duration=1.0, speaker=f"{split}-spk{i}")
        if split == "align":
            r["image_filepath"] = str(media[f"img{i % 4}"])
        else:
            r["text"] = f"ನಮಸ್ಕಾರ {i}"
        r.update(kw)
        return r

    rows = {"align": [row(0, "align"), row(1, "align")], "train": [row(2, "train"), row(3, "train")],
            "dev": [row(4, "dev"), row(5, "dev")], "test": [row(6, "test"), row(7, "test")]}
    rows.update({k: (v(row) if callable(v) else v) for k, v in replace.items()})
    tmp.mkdir(parents=True, exist_ok=True)
    args = ["prepare", "--source", "manifest", "--lang", "kannada", "--workers", "1"]
    for split, split_rows in rows.items():
        args += [f"--{split}", str(write_jsonl(tmp / f"{split}.jsonl", split_rows))]
    return args


# ------------------------------------------------------------------------------------ manifests and audio
def test_missing_audio_file_in_manifest(case, media, tmp_path):
    home, run = case
    before = snapshot(run)
    args = byo(tmp_path / "m", media, train=lambda row: [row(2, "train"), row(3, "train", audio_filepath="gone.wav")])
    assert_clean_error(avasr(home, run, *args), run, before, f"{tmp_path / 'm' / 'train.jsonl'}:2", "gone.wav")


@pytest.mark.parametrize("bad, reason", [("corrupt", "corrupt_audio"), ("empty", "empty_audio"),
                                         ("silent8k", "empty_or_silent")])
def test_unusable_audio_is_dropped_and_an_empty_split_is_an_error(case, media, tmp_path, bad, reason):
    home, run = case
    before = snapshot(run)
    args = byo(tmp_path / "m", media,
               train=lambda row: [row(2, "train", audio_filepath=str(media[bad]))])
    line = assert_clean_error(avasr(home, run, *args), run, before, str(tmp_path / "m" / "train.jsonl"), reason)
    assert "no usable lines" in line


def test_stereo_and_8k_audio_in_byo_manifest_are_converted(case, media, tmp_path):
    home, run = case
    args = byo(tmp_path / "m", media, train=lambda row: [
        row(2, "train", audio_filepath=str(media["stereo"])), row(3, "train", audio_filepath=str(media["8k"])),
        row(5, "train", audio_filepath=str(media["corrupt"]), speaker="train-x")])
    proc = avasr(home, run, *args, "--json")
    assert proc.returncode == 0, proc.stderr[-3000:]
    card = json.loads((run / "data" / "data_card.json").read_text())
    assert card["corpus"]["audio_converted"] == 2
    assert card["corpus"]["dropped"]["train"] == {"corrupt_audio": 1}
    for line in (run / "data" / "train.jsonl").read_text().splitlines():
        info = sf.info(json.loads(line)["audio_filepath"])
        assert (info.samplerate, info.channels) == (16_000, 1)


@pytest.mark.parametrize("bad", ["8k", "stereo", "corrupt", "empty"])
def test_finetune_on_a_manifest_pointing_at_unusable_audio(case, media, bad):
    home, run = case
    manifest = run / "data" / "train.jsonl"
    lines = manifest.read_text(encoding="utf-8").splitlines()
    first = json.loads(lines[0])
    first["audio_filepath"] = str(media[bad])
    manifest.write_text("\n".join([json.dumps(first, ensure_ascii=False)] + lines[1:]) + "\n", encoding="utf-8")
    before = snapshot(run)
    proc = avasr(home, run, "finetune", "--decoder", "ctc", "--max-steps", "2", "--workers", "0")
    assert_clean_error(proc, run, before, f"{manifest}:1", media[bad].name)


@pytest.mark.parametrize("kind, line, expect", [
    ("malformed_json", b'{"audio_filepath": "x.wav", "duration": 1.0,\n', "not valid JSON"),
    ("non_utf8", b'{"audio_filepath": "x.wav", "duration": 1.0, "text": "\xff\xfe caf\xe9"}\n', "not UTF-8"),
    ("missing_duration", b'{"audio_filepath": "x.wav", "text": "hello"}\n', "duration"),
    ("not_an_object", b'["x.wav", 1.0]\n', "JSON object"),
])
def test_malformed_manifest_line(case, media, tmp_path, kind, line, expect):
    home, run = case
    before = snapshot(run)
    args = byo(tmp_path / "m", media, dev=lambda row: [row(4, "dev"), line])
    assert_clean_error(avasr(home, run, *args), run, before, f"{tmp_path / 'm' / 'dev.jsonl'}:2", expect)


def test_markup_only_transcripts_are_dropped_with_a_count(case, media, tmp_path):
    home, run = case
    args = byo(tmp_path / "m", media, train=lambda row: [row(2, "train"), row(3, "train", text="<noise> [...] --"),
                                                         row(5, "train", text="", speaker="train-y")])
    proc = avasr(home, run, *args)
    assert proc.returncode == 0, proc.stderr[-3000:]
    card = json.loads((run / "data" / "data_card.json").read_text())
    assert card["corpus"]["dropped"]["train"] == {"empty_transcript": 2}
    assert card["counts"]["train"] == 1


def test_only_markup_transcripts_is_an_error(case, media, tmp_path):
    home, run = case
    before = snapshot(run)
    args = byo(tmp_path / "m", media, test=lambda row: [row(6, "test", text="<noise>"), row(7, "test", text="{office}")])
    assert_clean_error(avasr(home, run, *args), run, before, str(tmp_path / "m" / "test.jsonl"), "2 empty_transcript")


# --------------------------------------------------------------------------------------------- images
def _point_images(run: Path, paths: list[Path], rows: int | None = None) -> None:
    """Point the first ``rows`` (default all) image rows of every manifest at ``paths`` (cycled)."""
    k = 0
    for manifest in sorted((run / "data").glob("*.jsonl")):
        out = []
        for line in manifest.read_text(encoding="utf-8").splitlines():
            r = json.loads(line)
            if r.get("image_filepath") and (rows is None or k < rows):
                r["image_filepath"] = str(paths[k % len(paths)])
                r.pop("image_sha256", None)
                k += 1
            out.append(json.dumps(r, ensure_ascii=False))
        manifest.write_text("\n".join(out) + "\n", encoding="utf-8")


def test_missing_and_corrupt_images_are_skipped_and_counted(case, media, tmp_path):
    home, run = case
    _point_images(run, [tmp_path / "missing.png", media["bad_img"]], rows=2)
    proc = avasr(home, run, "embed-images", "--force", "--json")
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout)
    assert result["skipped"] == 2
    assert {Path(s["path"]).name for s in result["skipped_images"]} == {"missing.png", "bad.png"}
    assert "missing.png" in proc.stderr and "bad.png" in proc.stderr  # warned, not silent


@pytest.mark.parametrize("which", ["missing", "corrupt"])
def test_all_images_bad_is_an_error(case, media, tmp_path, which):
    home, run = case
    bad = tmp_path / "missing.png" if which == "missing" else media["bad_img"]
    _point_images(run, [bad])
    before = snapshot(run)
    proc = avasr(home, run, "embed-images", "--force")
    assert_clean_error(proc, run, before, str(bad))


# ------------------------------------------------------------------------------------ options and hub ids
@pytest.mark.parametrize("args, names", [
    (["embed-images", "--vision", "nope", "--force"], ["'nope'", "vision"]),
    (["prepare", "--lang", "klingon"], ["--lang", "klingon"]),
    (["align", "--loss", "nope"], ["--loss", "nope"]),
    (["finetune", "--max-steps", "0"], ["--max-steps"]),
    (["prepare", "--source", "somewhere"], ["--source", "somewhere"]),
])
def test_bad_option_values(case, args, names):
    home, run = case
    before = snapshot(run)
    assert_clean_error(avasr(home, run, *args), run, before, *names)


def test_hub_vision_model_not_cached_offline(case):
    home, run = case
    before = snapshot(run)
    proc = avasr(home, run, "embed-images", "--vision", "someone/not-cached", "--force")
    assert_clean_error(proc, run, before, "someone/not-cached", "offline")


def test_gated_dataset_without_token_offline(case):
    home, run = case
    before = snapshot(run)
    proc = avasr(home, run, "prepare", "--source", "vaani", "--lang", "kannada",
                 "--dataset", "someone/fake-vaani", "--transcribed-dataset", "someone/fake-vaani-tr")
    assert_clean_error(proc, run, before, "someone/fake-vaani")


def test_token_given_on_the_command_line_is_not_echoed(case):
    """The full on-disk check is tests/unit/test_vaani.py::test_token_is_never_written; this is the error path."""
    home, run = case
    proc = avasr(home, run, "prepare", "--source", "vaani", "--lang", "kannada", "--token", FAKE_TOKEN,
                 "--dataset", "someone/fake-vaani", "--transcribed-dataset", "someone/fake-vaani-tr")
    assert proc.returncode != 0
    assert FAKE_TOKEN not in proc.stderr + proc.stdout
    assert not any(FAKE_TOKEN.encode() in p.read_bytes() for p in run.rglob("*") if p.is_file())
    assert not any(FAKE_TOKEN.encode() in p.read_bytes() for p in home.rglob("*") if p.is_file())


@pytest.mark.parametrize("extra, names", [
    ([], ["no config for language 'kannada'", "--districts"]),  # district configs only: never all of them
    (["--districts", "Atlantis"], ["--districts Atlantis", "no district config"]),
])
def test_vaani_snapshot_configs_that_cannot_be_chosen(case, tmp_path, extra, names):
    """An older Vaani revision (``{State}_{District}`` configs, no language config), as a local snapshot."""
    from tests.unit.test_vaani_snapshot import write_older

    home, run = case
    va, tr = write_older(tmp_path / "snap")
    before = snapshot(run)
    proc = avasr(home, run, "prepare", "--source", "vaani", "--lang", "kannada", "--dataset", str(va),
                 "--transcribed-dataset", str(tr), *extra)
    assert_clean_error(proc, run, before, *names)
    assert not (home / "corpora").exists() or not any((home / "corpora").glob("vaani-*"))


# --------------------------------------------------------------------------------- features and checkpoints
def test_features_of_the_wrong_dimension(case):
    home, run = case
    features = run / "features.json"
    info = json.loads(features.read_text())
    info["dim"] = int(info["dim"]) + 1
    features.write_text(json.dumps(info, indent=2))
    before = snapshot(run)
    proc = avasr(home, run, "align", "--max-steps", "2", "--batch-size", "4", "--workers", "0")
    assert_clean_error(proc, run, before, str(features), "dimension")


def test_init_checkpoint_of_the_wrong_kind(case, tmp_path):
    home, run = case
    txt = tmp_path / "some.txt"
    txt.write_text("not a model\n")
    before = snapshot(run)
    proc = avasr(home, run, "finetune", "--init", str(txt), "--max-steps", "2")
    assert_clean_error(proc, run, before, f"--init {txt}", "not a NeMo checkpoint")


def test_init_random_bytes_nemo(case, tmp_path):
    home, run = case
    nemo = tmp_path / "broken.nemo"
    nemo.write_bytes(np.random.default_rng(2).bytes(10_000))
    before = snapshot(run)
    proc = avasr(home, run, "finetune", "--init", str(nemo), "--max-steps", "2")
    assert_clean_error(proc, run, before, f"--init {nemo}", "not a valid .nemo")


def test_more_gpus_than_the_machine_has(case):
    home, run = case
    before = snapshot(run)
    proc = avasr(home, run, "finetune", "--gpus", "64", "--decoder", "ctc", "--max-steps", "2",
                 CUDA_VISIBLE_DEVICES="")
    assert_clean_error(proc, run, before, "--gpus 64")


# ------------------------------------------------------------------------------------ run directory state
def test_run_locked_by_a_live_process(case):
    home, run = case
    holder = subprocess.Popen(["sleep", "60"])
    try:
        host = socket.gethostname()
        (run / ".lock").write_text(json.dumps({"pid": holder.pid, "host": host, "command": "avasr align --max-steps 9",
                                               "since": time.time()}))
        before = snapshot(run)
        proc = avasr(home, run, "prepare", *PREP)
        assert_clean_error(proc, run, before, f"pid {holder.pid}", host, "avasr align --max-steps 9")
    finally:
        holder.kill()
        holder.wait()


def test_stale_lock_of_a_dead_process_is_taken_over(case):
    home, run = case
    dead = subprocess.Popen(["true"])
    dead.wait()
    (run / ".lock").write_text(json.dumps({"pid": dead.pid, "host": socket.gethostname(), "command": "avasr align",
                                           "since": time.time() - 3600}))
    proc = avasr(home, run, "prepare", *PREP)  # same config: takes the lock, finds the stage finished
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "already finished" in proc.stderr
    assert not (run / ".lock").exists()


def test_run_json_of_a_newer_schema_is_refused(case):
    home, run = case
    record = json.loads((run / "run.json").read_text())
    record["schema_version"] = 99
    (run / "run.json").write_text(json.dumps(record))
    before = snapshot(run)
    assert_clean_error(avasr(home, run, "prepare", *PREP), run, before, str(run / "run.json"), "schema version 99")


def test_evaluate_before_finetune(case):
    home, run = case
    before = snapshot(run)
    assert_clean_error(avasr(home, run, "evaluate"), run, before, "finetune", "'finetune'")
    # the hint names the command to run first
    proc = avasr(home, run, "evaluate")
    assert "avasr finetune" in proc.stderr


def test_compare_runs_with_different_test_manifests(tmp_path):
    spec = importlib.util.spec_from_file_location("_test_compare", ROOT / "tests" / "unit" / "test_compare.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    a = mod.make_run(tmp_path, "direct", manifest_sha="a" * 64)
    b = mod.make_run(tmp_path, "img", arm="image", manifest_sha="b" * 64)
    before = {p: snapshot(p) for p in (a, b)}
    proc = avasr(tmp_path / "home", None, "compare", str(a), str(b))
    assert_clean_error(proc, None, None, str(a), str(b), "different test sets")
    assert {p: snapshot(p) for p in (a, b)} == before


# ------------------------------------------------------------------------------------ disk full (in-process)
def test_full_disk_by_statvfs_leaves_nothing_behind(tmp_path, monkeypatch):
    from avasr_cli import run as run_mod
    from avasr_cli.errors import ResourceError

    dest = tmp_path / "out" / "model.bin"
    dest.parent.mkdir()
    dest.write_bytes(b"old")

    class Full:
        f_bavail, f_frsize = 0, 4096

    monkeypatch.setattr(run_mod.os, "statvfs", lambda path: Full())
    with pytest.raises(ResourceError) as exc:
        run_mod.write_bytes_atomic(dest, b"x" * 10_000)
    assert "disk space" in exc.value.message and str(dest.parent) in exc.value.message and exc.value.hint
    assert sorted(p.name for p in dest.parent.iterdir()) == ["model.bin"]
    assert dest.read_bytes() == b"old"


def test_full_disk_during_write_leaves_nothing_behind(tmp_path, monkeypatch):
    from avasr_cli import run as run_mod
    from avasr_cli.errors import ResourceError

    dest = tmp_path / "out" / "run.json"
    dest.parent.mkdir()
    dest.write_bytes(b"{}")

    def enospc(self, data):
        with open(self, "wb") as fh:
            fh.write(data[: len(data) // 2])  # half written, then the disk fills
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Path, "write_bytes", enospc)
    with pytest.raises(ResourceError) as exc:
        run_mod.write_bytes_atomic(dest, b"y" * 10_000)
    assert "disk full" in exc.value.message and str(dest) in exc.value.message and exc.value.hint
    assert sorted(p.name for p in dest.parent.iterdir()) == ["run.json"]
    assert dest.read_bytes() == b"{}"


# ------------------------------------------------------------------------------------ safety
def test_trust_remote_code_only_with_the_flag(monkeypatch):
    import transformers

    from avasr_cli.stages.embed_images import EmbedConfig
    from avasr_cli.vision import encoder

    seen = []
    monkeypatch.setattr(transformers.AutoConfig, "from_pretrained",
                        classmethod(lambda cls, model, **kw: seen.append(kw) or object()))
    encoder._load_config("someone/model", None, False)
    encoder._load_config("someone/model", None, True)
    assert "trust_remote_code" not in seen[0] and seen[1]["trust_remote_code"] is True
    assert EmbedConfig().trust_remote_code is False
    for path in (ROOT / "avasr_cli" / "vision").rglob("*.py"):  # the loading code lives in the adapters
        assert "trust_remote_code=True" not in path.read_text().replace(" ", ""), path  # never hard-coded on


def test_debug_env_shows_the_traceback(case):
    home, run = case
    proc = avasr(home, run, "prepare", "--lang", "klingon", AVASR_DEBUG="1")
    assert proc.returncode != 0
    assert "Traceback" in proc.stderr and "ConfigError" in proc.stderr and "klingon" in proc.stderr
