"""align and finetune as library calls on a tiny built-in corpus made on the fly (real NeMo, CPU)."""

import json
import unicodedata

import numpy as np
import pytest
import torch

from avasr_cli.data.manifest import read_manifest
from avasr_cli.errors import ConfigError, PrerequisiteError
from avasr_cli.models.audio_data import BucketBatchSampler
from avasr_cli.models.fastconformer import EncoderBundle, load_init
from avasr_cli.run import RunDir
from avasr_cli.stages.align import AlignConfig, run_align, split_heldout
from avasr_cli.stages.finetune import FinetuneConfig, run_finetune, subsample_hours

TINY_ALIGN = dict(max_steps=3, batch_size=6, workers=0, checkpoint_every=2, warmup_steps=1)
TINY_FT = dict(decoder="ctc", max_steps=3, batch_size=6, val_every=2, workers=0, warmup_steps=1)


def test_bucket_sampler_gives_equal_disjoint_deterministic_batches():
    durations = list(np.random.default_rng(0).uniform(1, 3, size=53))
    ranks = [BucketBatchSampler(durations, 4, seed=1, rank=r, world_size=2) for r in range(2)]
    batches = [list(s) for s in ranks]
    assert all(len(b) == 4 for bs in batches for b in bs)
    assert len(batches[0]) == len(batches[1]) == len(ranks[0]) == 53 // 4 // 2
    seen = [i for bs in batches for b in bs for i in b]
    assert len(seen) == len(set(seen))
    assert batches[0] == list(BucketBatchSampler(durations, 4, seed=1, rank=0, world_size=2))
    ranks[0].set_epoch(1)
    assert list(ranks[0]) != batches[0]


def test_heldout_split_holds_out_whole_images():
    rows = [{"image_sha256": f"img{i // 2}", "utt_id": str(i)} for i in range(40)]
    train, held = split_heldout(rows, 0.25, seed=0)
    assert len(held) == 10 and len(train) == 30
    assert not {r["image_sha256"] for r in train} & {r["image_sha256"] for r in held}
    assert split_heldout(rows, 0.25, seed=0) == (train, held)


def test_align_image_trains_every_layer_and_records_recall(run):
    result = run_align(run, AlignConfig(**TINY_ALIGN))
    assert result.steps == 3 and result.objective == "image" and result.vision == "tiny-siglip"
    assert result.vision_untrained is True
    recall = json.loads((run.align_dir / "recall.json").read_text())
    assert 0 <= recall["after"]["a2i_r@5"] <= 1 and recall["before"]["num_pairs"] == result.heldout_pairs
    aligned = EncoderBundle.load(run.align_dir / "encoder")
    base = load_init("tiny", seed=0)
    changed = [k for k in base.state_dict if not torch.equal(base.state_dict[k], aligned.state_dict[k])]
    assert any(k.startswith("layers.0.") for k in changed) and any(k.startswith("pre_encode.") for k in changed)
    assert aligned.history[-1]["objective"] == "image"


@pytest.mark.parametrize("loss", ["siglip", "maxsim"])
def test_align_other_losses(run, loss):
    result = run_align(run, AlignConfig(**dict(TINY_ALIGN, loss=loss)))
    assert result.loss == loss and result.steps == 3 and result.final_loss is not None
    assert np.isfinite(result.final_loss) and result.recall_after["num_pairs"] == result.heldout_pairs


def test_align_freeze_layers_keeps_them(run):
    run_align(run, AlignConfig(**dict(TINY_ALIGN, freeze_layers=1)))
    aligned = EncoderBundle.load(run.align_dir / "encoder")
    base = load_init("tiny", seed=0)
    for k, v in base.state_dict.items():
        if k.startswith("layers.0.") and "running" not in k and "num_batches" not in k:
            assert torch.equal(v, aligned.state_dict[k]), k


def test_audio_only_control_same_budget_and_data(run):
    result = run_align(run, AlignConfig(**dict(TINY_ALIGN, objective="audio-only")))
    assert result.objective == "audio-only" and result.steps == 3 and result.loss is None
    img = AlignConfig(**TINY_ALIGN)
    # the control trains on the same pairs (held-out images excluded in both arms)
    from avasr_cli.data.manifest import read_manifest

    rows = read_manifest(run.manifest("align"))
    assert result.train_pairs == len(split_heldout(rows, img.heldout_images, img.seed)[0])


def test_align_needs_features_for_the_image_objective(run):
    run.forget_stage("embed-images")
    (run.root / "features.json").unlink()
    with pytest.raises(PrerequisiteError) as exc:
        run_align(run, AlignConfig(**TINY_ALIGN))
    assert "embed-images" in exc.value.hint


def test_align_refuses_features_of_another_vision_model(run):
    with pytest.raises(ConfigError) as exc:
        run_align(run, AlignConfig(**dict(TINY_ALIGN, vision="clip")))
    assert "--vision clip" in exc.value.message and "embed-images --vision clip" in exc.value.hint


@pytest.mark.parametrize("decoder", ["ctc", "hybrid-rnnt-ctc"])
def test_finetune_from_aligned_encoder(run, decoder):
    run_align(run, AlignConfig(**TINY_ALIGN))
    run.record_stage("align", {}, {})
    result = run_finetune(run, FinetuneConfig(**dict(TINY_FT, decoder=decoder)))
    assert result.init_kind == "aligned" and result.decoder == decoder and result.steps == 3
    assert result.budget["effective_batch"] == 6 and result.budget["train_hours"] > 0
    assert (run.finetune_dir / "model.nemo").is_file()


def test_finetune_from_base_init_without_align(run):
    result = run_finetune(run, FinetuneConfig(**TINY_FT))
    assert result.init_kind == "init" and result.init.startswith("tiny")


@pytest.mark.parametrize("decoder", ["hybrid-tdt-ctc", "tdt"])
def test_tdt_finetunes_on_cpu(run, decoder):
    result = run_finetune(run, FinetuneConfig(**dict(TINY_FT, decoder=decoder)))
    assert result.decoder == decoder and result.steps == 3
    assert (run.finetune_dir / "model.nemo").is_file()


def test_tokenizer_keeps_indic_text_as_written(tmp_path):
    from avasr_cli.models.asr import train_tokenizer

    texts = ["ಕೊಡು ಎರಡು ಕೆಂಪು ವೃತ್ತಗಳು", "ನೀಲಿ ಚೌಕ ಕೊಡು", "हरा गोला और दो पीले तारे"]
    assert unicodedata.normalize("NFKD", texts[0]) != texts[0]  # NFKD would split the vowel sign ೊ
    tok = train_tokenizer(texts * 5, tmp_path, vocab_size=16)
    assert tok["round_trip_failures"] == 0 and not tok["unrepresentable_chars"]
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_file=str(tmp_path / "tokenizer.model"))
    assert sp.decode(sp.encode(texts[0])) == texts[0]


def test_subsample_hours_is_deterministic_and_within_budget():
    rows = [{"duration": 2.0, "utt_id": str(i)} for i in range(100)]
    a = subsample_hours(rows, 60 / 3600, seed=3)
    assert a == subsample_hours(rows, 60 / 3600, seed=3) and sum(r["duration"] for r in a) <= 60
    assert len(a) == 30 and subsample_hours(rows, 0, seed=3) == rows


def test_rnnt_decoder_finetunes(run):
    result = run_finetune(run, FinetuneConfig(**dict(TINY_FT, decoder="rnnt")))
    assert result.decoder == "rnnt" and result.steps == 3


def test_same_vocabulary_size_trap_cannot_happen(run, tmp_path):
    """The trap: fine-tuning a model on a new tokenizer of the same size silently keeps the old decoder
    (shapes match, so a full state-dict load succeeds) and WER stays at 1.0. avasr transfers only the
    encoder and always builds a fresh decoder for the new tokenizer."""
    import shutil

    from nemo.collections.asr.models import ASRModel

    from avasr_cli.data.manifest import read_manifest
    from avasr_cli.run import write_jsonl_atomic

    run_finetune(run, FinetuneConfig(**TINY_FT))
    first = ASRModel.restore_from(str(run.finetune_dir / "model.nemo"), map_location="cpu")

    # a second corpus: same audio, transcripts rewritten by a bijection of the characters → a different
    # tokenizer with the same number of pieces
    other = RunDir(tmp_path / "other")
    shutil.copytree(run.root, other.root, ignore=shutil.ignore_patterns("finetune"))
    chars = sorted({c for r in read_manifest(run.manifest("train")) for c in r["text"] if not c.isspace()})
    rotate = {c: chars[(i + 1) % len(chars)] for i, c in enumerate(chars)}
    for split in ("train", "dev"):
        rows = read_manifest(other.manifest(split))
        write_jsonl_atomic(other.manifest(split), [dict(r, text="".join(rotate.get(c, c) for c in r["text"])) for r in rows])
    result = run_finetune(other, FinetuneConfig(**dict(TINY_FT, init=str(run.finetune_dir / "model.nemo"),
                                                        max_steps=1, lr=1e-9, warmup_steps=0)))
    second = ASRModel.restore_from(str(other.finetune_dir / "model.nemo"), map_location="cpu")
    assert result.init_kind == "init" and result.init.endswith("model.nemo")
    assert first.tokenizer.vocab_size == second.tokenizer.vocab_size  # the trap's precondition
    assert first.tokenizer.vocab != second.tokenizer.vocab
    old, new = first.decoder.state_dict(), second.decoder.state_dict()
    assert {k: v.shape for k, v in old.items()} == {k: v.shape for k, v in new.items()}  # a naive load would succeed
    assert not any(torch.allclose(old[k], new[k]) for k in old if old[k].is_floating_point())  # but avasr re-initialised
    enc_old, enc_new = first.encoder.state_dict(), second.encoder.state_dict()
    weights = [k for k in enc_old if enc_old[k].is_floating_point() and "running" not in k]
    assert max((enc_old[k] - enc_new[k]).abs().max().item() for k in weights) < 1e-5  # the encoder was transferred


def test_noam_schedule_and_train_hours_subset(run):
    result = run_finetune(run, FinetuneConfig(**dict(TINY_FT, schedule="noam", train_hours=0.005)))
    assert result.budget["schedule"].startswith("noam") and 0 < result.train_hours <= 0.005


def test_bucket_sampler_seeds_never_share_an_epochs_order():
    """seed + epoch used to seed the shuffle: seed 1's first epoch was seed 0's second."""
    durations = list(np.random.default_rng(0).uniform(1, 3, size=200))
    orders = {}
    for seed in (0, 1, 2):
        for epoch in range(3):
            s = BucketBatchSampler(durations, 4, seed=seed)
            s.set_epoch(epoch)
            orders[seed, epoch] = list(s)
    keys = list(orders)
    assert all(orders[a] != orders[b] for i, a in enumerate(keys) for b in keys[i + 1:])


def test_recall_scores_at_most_recall_pairs_held_out_pairs(run):
    """At scale the held-out set is thousands of pairs: recall is scored on a fixed-size sample of it (and as
    many training pairs), so its cost does not grow with the corpus; training still never sees any of it."""
    result = run_align(run, AlignConfig(**dict(TINY_ALIGN, heldout_images=0.3, recall_pairs=2)))
    assert result.heldout_pairs > 2 and result.recall_after["num_pairs"] == 2
    assert result.train_pairs + result.heldout_pairs == len([r for r in read_manifest(run.manifest("align"))
                                                            if r.get("image_sha256")])


def test_accumulation_adds_no_contrastive_negatives(run):
    """Gradient accumulation sums the gradients of separate batches; each batch's loss only ever sees its
    own negatives: the recorded effective (contrastive) batch is batch × world, the samples per update
    batch × accumulate × world."""
    result = run_align(run, AlignConfig(**dict(TINY_ALIGN, accumulate=2)))
    budget = result.budget
    assert result.effective_batch == TINY_ALIGN["batch_size"]
    assert budget["samples_per_update"] == 2 * TINY_ALIGN["batch_size"] and budget["accumulate"] == 2
