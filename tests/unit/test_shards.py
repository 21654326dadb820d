"""``prepare --audio-layout shards``: each split packed into NeMo tarred audio (audio_<i>.tar +
manifest_<i>.json + index.json), read natively by NeMo, by align (random access by offset), finetune
(NeMo's Lhotse loader, streamed with duration buckets) and evaluate (in manifest order) — the same audio,
so the same results as one file per clip."""

from __future__ import annotations

import json
import os
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from avasr_cli.data.manifest import check_audio_files, read_manifest
from avasr_cli.errors import InputError
from avasr_cli.models.audio_data import read_clip
from avasr_cli.run import RunDir
from avasr_cli.stages.align import AlignConfig, run_align
from avasr_cli.stages.embed_images import EmbedConfig, run_embed_images
from avasr_cli.stages.prepare import SPLITS, PrepareConfig, run_prepare

pytestmark = pytest.mark.slow
SIZES = dict(num_align=30, num_train=18, num_dev=6, num_test=6)


@pytest.fixture(scope="module")
def twins(tmp_path_factory):
    """The same prepared data twice: one file per clip, and in shards of 5 clips; features embedded."""
    home = tmp_path_factory.mktemp("home")
    out = {}
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AVASR_HOME", str(home))
        for layout in ("files", "shards"):
            run = RunDir(tmp_path_factory.mktemp(layout) / "run")
            cfg = PrepareConfig(**SIZES, audio_layout=layout, shard_clips=5)
            run_prepare(run, cfg, None)
            run.record_stage("prepare", cfg, {})
            ecfg = EmbedConfig(vision="tiny-siglip", workers=0)
            run_embed_images(run, ecfg, None)
            run.record_stage("embed-images", ecfg, {})
            out[layout] = run
    return home, out


@pytest.fixture
def runs(twins, tmp_path, monkeypatch):
    home, out = twins
    monkeypatch.setenv("AVASR_HOME", str(home))
    copies = {}
    for layout, run in out.items():
        shutil.copytree(run.root, tmp_path / layout)
        copies[layout] = RunDir(tmp_path / layout)
    return copies


def test_shards_hold_the_same_audio_and_nemo_reads_them(runs):
    from nemo.collections.common.data.lhotse.nemo_adapters import LazyNeMoTarredIterator

    for split in SPLITS:
        files, shards = (read_manifest(runs[k].manifest(split)) for k in ("files", "shards"))
        assert [r["utt_id"] for r in shards] == [r["utt_id"] for r in files]
        strip = ("audio_filepath", "shard_id", "tar_filepath", "tar_offset", "tar_size", "image_filepath",
                 "image_tar_filepath")
        assert [{k: v for k, v in r.items() if k not in strip} for r in shards] == \
               [{k: v for k, v in r.items() if k not in strip} for r in files]
        for f, s in zip(files, shards):
            np.testing.assert_array_equal(read_clip(s), sf.read(f["audio_filepath"], dtype="float32")[0])
            # the corpus was rendered straight into shards: the picture is a member of an image tar, same bytes
            with tarfile.open(s["image_tar_filepath"]) as tar:
                assert tar.extractfile(s["image_filepath"]).read() == Path(f["image_filepath"]).read_bytes()
        # NeMo's own reader of its tarred layout yields every clip of the split, with the same samples
        directory = {r["tar_filepath"].rsplit("/", 1)[0] for r in shards}.pop()
        n = len(json.loads(open(f"{directory}/index.json").read())["shards"])
        span = f"_OP_0..{n - 1}_CL_"
        cuts = list(LazyNeMoTarredIterator(f"{directory}/manifest_{span}.json", f"{directory}/audio_{span}.tar"))
        by_name = {r["audio_filepath"]: r for r in shards}
        assert sorted(c.id for c in cuts) == sorted(by_name) and len(cuts) == len(shards)
        for c in cuts:
            np.testing.assert_allclose(c.load_audio()[0], read_clip(by_name[c.id]), atol=1e-6)
            assert c.supervisions[0].text == by_name[c.id]["text"]
    card = {k: json.loads((runs[k].data / "data_card.json").read_text()) for k in runs}
    assert card["shards"]["audio_layout"] == "shards" and card["files"]["audio_layout"] == "files"
    # 30 align clips in shards of 5: 6 tars + 6 manifests + 1 index, against 30 files
    assert card["shards"]["audio_files"]["align"] == 13 and card["files"]["audio_files"]["align"] == 30
    assert card["shards"]["audio_files_per_10k_clips"]["align"] < card["files"]["audio_files_per_10k_clips"]["align"]
    # and no file per clip anywhere in the shards corpus: no audio/ or images/ folder of single files
    packed = Path(card["shards"]["corpus"]["dir"])
    assert packed.name == "packed-5" and card["shards"]["voices"] == card["files"]["voices"]
    singles = [p for p in packed.rglob("*") if p.is_file() and p.suffix in (".wav", ".png", ".flac")]
    assert singles == []
    n_clips = sum(SIZES.values())
    assert sum(1 for p in packed.rglob("*") if p.is_file()) <= 2 * (n_clips // 5 + 4) * 2 + 4 + 3


def test_align_on_shards_trains_exactly_as_on_files(runs):
    cfg = AlignConfig(max_steps=3, batch_size=6, workers=0, heldout_images=0.2, checkpoint_every=100)
    a, b = run_align(runs["files"], cfg), run_align(runs["shards"], cfg)
    assert a.encoder_sha256 == b.encoder_sha256  # the same clips in the same batches: the same weights
    assert a.final_loss == b.final_loss


def test_finetune_streams_shards_and_evaluate_reads_them_in_order(runs):
    """finetune on the sharded run goes through NeMo's Lhotse loader; evaluate of that model on both
    layouts gives the same hypotheses, utterance by utterance."""
    from avasr_cli.stages.evaluate import EvaluateConfig, run_evaluate
    from avasr_cli.stages.finetune import FinetuneConfig, run_finetune

    import lightning.pytorch as pl

    class Loader(pl.Callback):
        kind = None

        def on_train_start(self, trainer, pl_module):
            Loader.kind = type(trainer.train_dataloader.dataset).__name__

    fcfg = FinetuneConfig(decoder="ctc", max_steps=4, batch_size=4, val_every=2, workers=0, warmup_steps=1)
    result = run_finetune(runs["shards"], fcfg, callbacks=[Loader()])
    assert result.steps == 4 and Loader.kind == "IterableDatasetWrapper"  # Lhotse's, over the tar stream
    runs["shards"].record_stage("finetune", fcfg, {"decoder": "ctc"})
    shutil.copytree(runs["shards"].finetune_dir, runs["files"].finetune_dir)
    runs["files"].record_stage("finetune", fcfg, {"decoder": "ctc"})
    for run in runs.values():
        run_evaluate(run, EvaluateConfig(batch_size=4))
    for split in ("dev", "test"):
        hyps = {k: [json.loads(line)["hyp"] for line in (runs[k].reports / f"hyps-{split}.jsonl").read_text().splitlines()]
                for k in runs}
        assert hyps["shards"] == hyps["files"] and len(hyps["files"]) == SIZES[f"num_{split}"]


@pytest.mark.parametrize("damage", ["cut", "garbage", "lost", "moved member"])
def test_a_damaged_shard_is_named_before_anything_runs(runs, damage):
    run = runs["shards"]
    rows = read_manifest(run.manifest("train"))
    tar = rows[0]["tar_filepath"]
    backup = open(tar, "rb").read()
    try:
        if damage == "cut":
            open(tar, "wb").write(backup[: len(backup) // 2])
        elif damage == "garbage":
            open(tar, "wb").write(np.random.default_rng(0).bytes(len(backup)))
        elif damage == "lost":
            os.unlink(tar)
        else:
            rows[0] = dict(rows[0], tar_offset=rows[0]["tar_offset"] + 512)
        with pytest.raises(InputError) as err:
            check_audio_files(run.manifest("train"), rows)
        assert tar in err.value.message and err.value.hint
    finally:
        open(tar, "wb").write(backup)


def test_prepare_force_packs_just_the_damaged_shard_again(runs, twins):
    home, _ = twins
    run = runs["shards"]
    rows = read_manifest(run.manifest("align"))
    tars = sorted({r["tar_filepath"] for r in rows})
    before = {t: os.stat(t).st_mtime_ns for t in tars}
    good = open(tars[1], "rb").read()
    with open(tars[1], "r+b") as fh:
        fh.truncate(1000)
    with pytest.raises(InputError, match="audio_1.tar"):
        check_audio_files(run.manifest("align"), rows)
    cfg = PrepareConfig(**SIZES, audio_layout="shards", shard_clips=5)
    run_prepare(run, cfg, None)  # what `avasr prepare --force` runs
    check_audio_files(run.manifest("align"), read_manifest(run.manifest("align")))
    assert open(tars[1], "rb").read() == good  # the same bytes again (deterministic packing)
    assert {t: os.stat(t).st_mtime_ns for t in tars if t != tars[1]} == {t: v for t, v in before.items() if t != tars[1]}


def test_two_process_finetune_streams_disjoint_shards_that_cover_the_split(runs, tmp_path):
    """Under DDP each rank streams its own shards (r, r + W, …, NeMo's scatter): over several passes no
    clip reaches both ranks, and together they train on every clip of the split."""
    import os
    import subprocess
    import sys

    from test_finetune_ddp import DRIVER, _records

    run = runs["shards"]
    train = read_manifest(run.manifest("train"))
    length = {len(read_clip(r)): int(r["shard_id"]) for r in train}
    assert len(length) == len(train)  # clips tell apart by their length in samples
    driver, out = tmp_path / "driver.py", tmp_path / "out"
    driver.write_text(DRIVER)
    out.mkdir()
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONPATH=os.getcwd())
    proc = subprocess.run([sys.executable, str(driver), str(run.root), str(out), "2", "12"], env=env,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    recs = _records(out)
    seen = {rank: {k[0] for r in rs for k in r["keys"]} for rank, rs in recs.items()}
    assert set(seen) == {"rank0", "rank1"}
    for rank, lengths in seen.items():
        shards = {length[n] for n in lengths}
        assert shards <= {s for s in set(length.values()) if s % 2 == int(rank[-1])}, (rank, shards)
    assert not seen["rank0"] & seen["rank1"] and seen["rank0"] | seen["rank1"] == set(length)
    budget = json.loads((run.root / "finetune" / "budget.json").read_text())
    assert budget["world_size"] == 2 and budget["effective_batch"] == 4


def _packed(run) -> Path:
    return Path(json.loads((run.data / "data_card.json").read_text())["corpus"]["dir"])


def test_prepare_force_checks_checksums_and_renders_a_same_size_corruption_again(runs):
    """A flipped byte keeps a tar's size and headers: a plain rerun reuses the corpus, `prepare --force`
    (verify) reads every checksum and renders just that shard again, to its first bytes."""
    run = runs["shards"]
    tar = sorted({r["tar_filepath"] for r in read_manifest(run.manifest("align"))})[1]
    good = open(tar, "rb").read()
    with open(tar, "r+b") as fh:
        fh.seek(len(good) - 2000)
        fh.write(bytes([good[len(good) - 2000] ^ 0xFF]))
    cfg = PrepareConfig(**SIZES, audio_layout="shards", shard_clips=5)
    run_prepare(run, cfg, None, verify=True)
    assert open(tar, "rb").read() == good


def test_a_lost_index_or_record_of_commits_is_rebuilt_not_a_dead_end(runs):
    run = runs["shards"]
    packed = _packed(run)
    cfg = PrepareConfig(**SIZES, audio_layout="shards", shard_clips=5)
    index = packed / "align" / "index.json"
    good = index.read_bytes()
    index.write_text("garbage")
    run_prepare(run, cfg, None)  # the indexes are written again from progress.json
    assert index.read_bytes() == good
    tars = {p: p.read_bytes() for p in packed.rglob("*.tar")}
    (packed / "progress.json").unlink()  # nothing left to check the shards against: render them all again
    run_prepare(run, cfg, None)
    assert json.loads((packed / "progress.json").read_text())["commits"]
    assert {p: p.read_bytes() for p in packed.rglob("*.tar")} == tars and index.read_bytes() == good
    check_audio_files(run.manifest("align"), read_manifest(run.manifest("align")))


def test_a_missing_image_tar_is_named_as_one(runs):
    from avasr_cli.vision.images import collect_images

    run = runs["shards"]
    image_tar = read_manifest(run.manifest("align"))[0]["image_tar_filepath"]
    moved = image_tar + ".away"
    os.rename(image_tar, moved)
    try:
        images, skipped, _ = collect_images(run)
    finally:
        os.rename(moved, image_tar)
    assert skipped and all(s["reason"].startswith(f"image tar {image_tar} cannot be read") for s in skipped)
    assert "audio shard" not in skipped[0]["reason"] and "prepare --force" in skipped[0]["reason"]
