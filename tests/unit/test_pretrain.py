"""``avasr pretrain``: the self-supervised starting point, its pool kept apart from every experiment split,
resumable and reusable, and picked up by ``--init auto`` on the built-in corpus."""

import json
import subprocess
import sys

import pytest

from avasr_cli.data.builtin import LANGUAGES, CorpusConfig, plan
from avasr_cli.errors import ConfigError, PrerequisiteError
from avasr_cli.models.start import builtin_dir, resolve_init
from avasr_cli.stages.align import AlignConfig, run_align
from avasr_cli.stages.finetune import FinetuneConfig, run_finetune
from avasr_cli.stages.pretrain import POOL_PER_ALIGN_CLIP, PretrainConfig, run_pretrain

TINY = dict(num_clips=40, max_steps=3, batch_size=8, warmup_steps=1, workers=0, checkpoint_every=2)


@pytest.mark.parametrize("lang", sorted(LANGUAGES))
def test_pool_has_its_own_speakers_and_sentences(lang):
    main = plan(CorpusConfig(lang=lang))
    pool = plan(CorpusConfig(lang=lang, num_align=0, num_train=0, num_dev=0, num_test=0, num_pretrain=3000))
    assert {i["split"] for i in pool} == {"pretrain"}
    assert not {i["text"] for i in main} & {i["text"] for i in pool}
    assert not {i["speaker"]["id"] for i in main} & {i["speaker"]["id"] for i in pool}
    held_out_voices = {i["speaker"]["voice"] for i in main if i["split"] in ("dev", "test")}
    assert not held_out_voices & {i["speaker"]["voice"] for i in pool}
    # another corpus seed draws other scenes, but never a pool sentence
    other = plan(CorpusConfig(lang=lang, seed=5))
    assert not {i["text"] for i in other} & {i["text"] for i in pool}
    assert PretrainConfig().num_clips == POOL_PER_ALIGN_CLIP * CorpusConfig().num_align


def test_pretrain_writes_a_valid_init_and_reruns_are_free(tmp_path):
    result = run_pretrain(PretrainConfig(**TINY))
    out = builtin_dir("kannada")
    record = json.loads((out / "pretrain.json").read_text())
    assert record["steps"] == 3 and record["pool"]["clips"] == 40 and result["reused"] is False
    assert (out / "encoder" / "encoder.json").is_file() and (out / "tensorboard").is_dir()
    again = run_pretrain(PretrainConfig(**TINY))
    assert again["reused"] is True and again["encoder_sha256"] == record["encoder_sha256"]
    with pytest.raises(ConfigError) as exc:
        run_pretrain(PretrainConfig(**dict(TINY, max_steps=4)))
    assert "--force" in exc.value.hint


@pytest.fixture
def own_pretrained(run):
    """The start point this test builds lives in the session's shared corpus home: remove it afterwards, or
    every later test's ``--init auto`` would start from it."""
    import shutil

    yield run
    shutil.rmtree(builtin_dir("kannada"), ignore_errors=True)


def test_init_auto_uses_the_pretrained_start_point(own_pretrained):
    run = own_pretrained
    with pytest.raises(PrerequisiteError) as exc:
        resolve_init(run, "builtin-ssl")
    assert "avasr pretrain" in exc.value.hint
    assert resolve_init(run, "auto") == "tiny"  # not built: a random start (warned)
    record = run_pretrain(PretrainConfig(**TINY))
    assert resolve_init(run, "auto") == resolve_init(run, "builtin-ssl") == record["encoder_dir"]
    aligned = run_align(run, AlignConfig(max_steps=2, batch_size=6, workers=0, warmup_steps=1))
    assert aligned.init_sha256 == record["encoder_sha256"] and aligned.init.startswith("builtin-ssl-kannada")
    assert [h["stage"] for h in aligned.history] == ["pretrain", "align"]


def test_pretrain_on_your_own_manifest_via_the_cli(run, tmp_path):
    out = tmp_path / "ssl"
    cmd = [sys.executable, "-m", "avasr_cli", "pretrain", "--manifest", str(run.manifest("align")), "--out", str(out),
           "--max-steps", "2", "--batch-size", "6", "--warmup-steps", "1", "--workers", "0", "--json"]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout)
    assert result["pool"]["kind"] == "manifest" and result["steps"] == 2
    ft = run_finetune(run, FinetuneConfig(decoder="ctc", init=result["encoder_dir"], max_steps=2, batch_size=6,
                                          val_every=2, workers=0, warmup_steps=1))
    assert ft.init_kind == "init" and ft.encoder_sha256 == result["encoder_sha256"]
    bad = subprocess.run([sys.executable, "-m", "avasr_cli", "pretrain", "--manifest", str(tmp_path / "nope.jsonl")],
                         capture_output=True, text=True)
    assert bad.returncode != 0 and "Error:" in bad.stderr and "--out" in bad.stderr


def test_force_retrains_and_a_changed_manifest_is_another_pool(run, tmp_path):
    from avasr_cli.data.manifest import read_manifest
    from avasr_cli.run import write_jsonl_atomic

    manifest = tmp_path / "pool.jsonl"
    rows = read_manifest(run.manifest("align"))
    write_jsonl_atomic(manifest, rows[:16])
    cfg = PretrainConfig(**dict(TINY, manifest=str(manifest), out=str(tmp_path / "ssl")))
    first = run_pretrain(cfg)
    forced = run_pretrain(cfg, force=True)
    assert forced["reused"] is False and forced["final_loss"] is not None and forced["steps"] == 3
    write_jsonl_atomic(manifest, rows[:24])  # same path, other audio
    with pytest.raises(ConfigError):
        run_pretrain(cfg)
    assert first["pool"]["clips"] == 16


def test_pretrain_refuses_init_auto_and_a_file_as_out(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError) as exc:
        PretrainConfig(init="auto", out=str(tmp_path / "file"), manifest="m.jsonl").validate()
    assert "--init auto" in exc.value.message and "is a file" in exc.value.message
