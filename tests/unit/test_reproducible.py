"""Same commit, inputs, seed and machine → the same weights, hypotheses and WER; every stage records the
stack it ran on; the negative control pairs clips with foreign images."""

import hashlib
import json
import shutil

import pytest

from avasr_cli.run import RunDir
from avasr_cli.stages.align import AlignConfig, run_align, shuffle_pairs
from avasr_cli.stages.evaluate import EvaluateConfig, run_evaluate
from avasr_cli.stages.finetune import FinetuneConfig, run_finetune

# DataLoader workers on: their seeding is part of what must repeat
ALIGN = dict(init="tiny", max_steps=6, batch_size=6, workers=2, checkpoint_every=100, warmup_steps=2)
FT = dict(decoder="ctc", max_steps=6, batch_size=6, val_every=3, workers=2, warmup_steps=2)


def _arm(src, dest, pairs="true"):
    shutil.copytree(src, dest)
    run = RunDir(dest)
    align = run_align(run, AlignConfig(**ALIGN, pairs=pairs))
    run.record_stage("align", AlignConfig(**ALIGN, pairs=pairs), align)
    ft = FinetuneConfig(**FT)
    run.record_stage("finetune", ft, run_finetune(run, ft))
    run_evaluate(run, EvaluateConfig())
    return run, align


def _scores(run, split):
    """The report without what names the files (paths, and the .nemo archive's hash: a tar of the same
    weights carries its own timestamps)."""
    report = json.loads((run.reports / f"wer-{split}.json").read_text())
    return {k: v for k, v in report.items() if k not in ("checkpoint", "checkpoint_sha256", "manifest")}


@pytest.mark.slow
def test_an_align_arm_run_twice_gives_byte_identical_hypotheses(prepared, tmp_path, monkeypatch):
    src, home = prepared
    monkeypatch.setenv("AVASR_HOME", str(home))
    first, a1 = _arm(src, tmp_path / "one")
    second, a2 = _arm(src, tmp_path / "two")
    assert a1.encoder_sha256 == a2.encoder_sha256 and a1.final_loss == a2.final_loss
    for split in ("dev", "test"):
        one = (first.reports / f"hyps-{split}.jsonl").read_bytes()
        assert hashlib.sha256(one).digest() == hashlib.sha256((second.reports / f"hyps-{split}.jsonl").read_bytes()).digest()
        assert _scores(first, split) == _scores(second, split)
    env = first.load()["stages"]["finetune"]["environment"]
    assert env["deterministic"] is True and env["torch_threads"] >= 1 and env["torch"] and env["nemo_toolkit"]
    assert env["cpu"] and env["lightning"] and env["avasr"]
    # the negative control is the same arm with shuffled pairs: another encoder from the same start
    shuffled, a3 = _arm(src, tmp_path / "three", pairs="shuffled")
    assert a3.budget["pairs"] == "shuffled" and a3.budget["true_pairs_left"] == 0
    assert a3.encoder_sha256 != a1.encoder_sha256 and a3.init_sha256 == a1.init_sha256
    assert a3.train_pairs == a1.train_pairs and a3.heldout_pairs == a1.heldout_pairs


def test_shuffled_pairs_give_every_clip_a_foreign_image_and_keep_the_images():
    # two descriptions per image, as in the built-in alignment pool
    rows = [{"utt_id": str(i), "image_sha256": f"img{i // 2}"} for i in range(40)]
    shuffled, left = shuffle_pairs(rows, seed=3)
    assert left == 0 and [r["utt_id"] for r in shuffled] == [r["utt_id"] for r in rows]
    assert all(r["image_sha256"] != r["true_image_sha256"] for r in shuffled)
    assert sorted(r["image_sha256"] for r in shuffled) == sorted(r["image_sha256"] for r in rows)
    assert shuffle_pairs(rows, seed=3) == (shuffled, 0)
    assert shuffle_pairs(rows, seed=4)[0] != shuffled


def test_shuffled_pairs_need_the_image_objective():
    from avasr_cli.errors import ConfigError

    with pytest.raises(ConfigError, match="--pairs shuffled applies only to the image objective"):
        AlignConfig(objective="audio-only", pairs="shuffled").validate()
    with pytest.raises(ConfigError, match="--pairs 'some' is not one of true, shuffled"):
        AlignConfig(pairs="some").validate()
