"""The image arm and the audio-only control, driven through the real ``trainer.fit`` (``run_align``) and
watched by a Lightning callback: both train in training mode, epochs bring new batches, and the two arms
differ only in their objective (same start, data order, optimiser settings and schedule)."""

import lightning.pytorch as pl
import pytest
import torch

from avasr_cli.models.fastconformer import EncoderBundle
from avasr_cli.progress import Reporter
from avasr_cli.run import RunDir
from avasr_cli.stages.align import AlignConfig, run_align
from avasr_cli.stages.finetune import FinetuneConfig, run_finetune

# 30 align clips, 3 held-out images → 24 training pairs = 4 batches of 6: 8 steps are 2 epochs
TWO_EPOCHS = dict(max_steps=8, batch_size=6, workers=0, checkpoint_every=4, warmup_steps=2)
TINY_FT = dict(decoder="ctc", max_steps=3, batch_size=6, val_every=3, workers=0, warmup_steps=1)


class Watch(pl.Callback):
    """Records, at every training step, the module's mode, the batch (clip lengths), the learning rate;
    and the encoder's BatchNorm running statistics before and after the fit."""

    def __init__(self):
        self.steps, self.bn_before, self.bn_after, self.groups = [], None, None, None

    @staticmethod
    def _bn(module):
        return {n: b.detach().clone() for n, b in module.encoder.named_buffers() if "running_mean" in n}

    def on_train_start(self, trainer, pl_module):
        self.bn_before = self._bn(pl_module)
        opt = trainer.optimizers[0]
        encoder = {id(p) for p in pl_module.encoder.parameters()}
        self.groups = [{"name": g.get("name"), "lr": g["initial_lr"] if "initial_lr" in g else g["lr"],
                        "weight_decay": g["weight_decay"], "betas": g["betas"],
                        "encoder_params": sum(id(p) in encoder for p in g["params"]), "params": len(g["params"])}
                       for g in opt.param_groups]

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.steps.append({
            "epoch": trainer.current_epoch,
            "training": pl_module.training,
            "all_training": all(m.training for m in pl_module.modules()),
            "lengths": tuple(batch[1].tolist()),
            "lr": trainer.optimizers[0].param_groups[0]["lr"],
        })

    def on_train_end(self, trainer, pl_module):
        self.bn_after = self._bn(pl_module)


@pytest.fixture(scope="module")
def arms(prepared, tmp_path_factory):
    """Both objectives from one config, each watched through its whole fit."""
    import shutil

    src, home = prepared
    out = {}
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AVASR_HOME", str(home))
        for objective in ("image", "audio-only"):
            root = tmp_path_factory.mktemp(objective) / "run"
            shutil.copytree(src, root)
            watch = Watch()
            result = run_align(RunDir(root), AlignConfig(**dict(TWO_EPOCHS, objective=objective)), callbacks=[watch])
            out[objective] = (watch, result)
    return out


@pytest.mark.parametrize("objective", ["image", "audio-only"])
def test_every_training_step_runs_in_training_mode(arms, objective):
    watch, _ = arms[objective]
    assert len(watch.steps) == TWO_EPOCHS["max_steps"]
    assert all(s["training"] and s["all_training"] for s in watch.steps), watch.steps


@pytest.mark.parametrize("objective", ["image", "audio-only"])
def test_batchnorm_statistics_update_in_both_arms(arms, objective):
    watch, _ = arms[objective]
    assert watch.bn_before and watch.bn_before.keys() == watch.bn_after.keys()
    assert all(not torch.equal(watch.bn_before[k], watch.bn_after[k]) for k in watch.bn_before)


@pytest.mark.parametrize("objective", ["image", "audio-only"])
def test_each_epoch_brings_new_batches(arms, objective):
    watch, _ = arms[objective]
    epochs = {}
    for s in watch.steps:
        epochs.setdefault(s["epoch"], []).append(s["lengths"])
    assert sorted(epochs) == [0, 1] and len(epochs[0]) == len(epochs[1]) == 4
    assert epochs[0] != epochs[1]
    # not just the same batches in another order: other groupings, so other in-batch negatives
    assert {frozenset(b) for b in epochs[0]} != {frozenset(b) for b in epochs[1]}


def test_arms_differ_only_in_their_objective(arms):
    (wi, ri), (wa, ra) = arms["image"], arms["audio-only"]
    assert ri.init_sha256 == ra.init_sha256  # one starting encoder
    assert [s["lengths"] for s in wi.steps] == [s["lengths"] for s in wa.steps]  # one data order
    assert [s["lr"] for s in wi.steps] == pytest.approx([s["lr"] for s in wa.steps])  # one schedule
    assert [s["all_training"] for s in wi.steps] == [s["all_training"] for s in wa.steps]
    n_encoder = sum(1 for p in EncoderBundle.load(ri.encoder_dir).build_encoder().parameters())
    # the whole encoder, split the same way into groups with the same optimiser settings in both arms;
    # the groups of each arm's own new parts (projection head + temperature vs the SSL decoder) differ
    # in what they hold, never in their settings
    encoder_groups = []
    for groups in (wi.groups, wa.groups):
        assert sum(g["encoder_params"] for g in groups) == n_encoder
        assert all(g["encoder_params"] in (0, g["params"]) for g in groups)  # no group mixes encoder and head
        encoder_groups.append([g for g in groups if g["encoder_params"]])
    assert encoder_groups[0] == encoder_groups[1]
    heads = {(g["lr"], g["betas"]) for g in wi.groups + wa.groups if not g["encoder_params"]}
    assert len(heads) == 1
    bi, ba = dict(ri.budget), dict(ra.budget)
    for key in ("max_steps", "steps", "effective_batch", "samples_per_update", "lr", "weight_decay", "warmup_steps",
                "schedule", "init", "init_sha256", "manifest_sha256", "train_pairs", "freeze_layers", "seed",
                "head_lr", "layer_decay", "align_layer", "encoder_layers"):
        assert bi[key] == ba[key], key
    enc_summary = [[g for g in b["param_groups"] if g["name"].startswith("encoder")] for b in (bi, ba)]
    assert enc_summary[0] == enc_summary[1] and enc_summary[0]
    assert ri.train_pairs == ra.train_pairs and ri.heldout_pairs == ra.heldout_pairs


def test_audio_only_uses_nemo_nest_recipe_settings(arms):
    from avasr_cli.models.ssl import SSL_DEFAULTS

    _, ra = arms["audio-only"]
    assert ra.budget["ssl"] == {"mask_prob": 0.01, "block_size": 40, "num_codes": 8192}
    cfg = AlignConfig()
    assert (cfg.ssl_mask_prob, cfg.ssl_block_size, cfg.ssl_codebook_size) == (
        SSL_DEFAULTS["mask_prob"], SSL_DEFAULTS["block_size"], SSL_DEFAULTS["num_codes"])


def test_audio_only_masks_about_a_third_of_the_frames():
    """NEST's 40-frame blocks starting at each frame with p=0.01 (overlapping) cover 1-(0.99)^40 ≈ 33%."""
    from avasr_cli.models.ssl import build_objective

    torch.manual_seed(0)
    ssl = build_objective(features=80, d_model=64, subsampling=8)
    feats = torch.randn(64, 80, 400)
    _, masks = ssl.masking(input_feats=feats, input_lengths=torch.full((64,), 400))
    fraction = masks[:, 0, :].float().mean().item()
    assert 0.25 < fraction < 0.42, fraction
    assert ssl.quantizer.num_classes == 8192 and ssl.decoder.num_classes == 8192


class Count(pl.Callback):
    def __init__(self):
        self.batches = 0

    def on_train_batch_end(self, *args):
        self.batches += 1


class Logs(Reporter):
    def __init__(self):
        self.lines = []

    def log(self, message):
        self.lines.append(message)


def test_finetune_never_resumes_checkpoints_of_another_encoder(run):
    """Redo align with other options, then finetune with the same options: the old fine-tuning
    checkpoints belong to the old encoder and must not be resumed (they used to be, at max_steps)."""
    first = run_align(run, AlignConfig(**dict(TWO_EPOCHS, max_steps=3)))
    run.record_stage("align", {}, {})
    ft1 = run_finetune(run, FinetuneConfig(**TINY_FT))
    assert ft1.encoder_sha256 == first.encoder_sha256
    second = run_align(run, AlignConfig(**dict(TWO_EPOCHS, max_steps=3, lr=5e-4)))
    run.record_stage("align", {}, {})
    assert second.encoder_sha256 != first.encoder_sha256
    count, logs = Count(), Logs()
    ft2 = run_finetune(run, FinetuneConfig(**TINY_FT), logs, callbacks=[count])
    assert count.batches == TINY_FT["max_steps"]  # trained afresh, not "resumed" at the last step
    assert ft2.encoder_sha256 == second.encoder_sha256
    assert any("starting afresh" in line and "starting encoder" in line for line in logs.lines), logs.lines


def test_align_never_resumes_checkpoints_of_other_data(run):
    from avasr_cli.data.manifest import read_manifest
    from avasr_cli.run import write_jsonl_atomic

    cfg = AlignConfig(**dict(TWO_EPOCHS, max_steps=3))
    run_align(run, cfg)
    rows = read_manifest(run.manifest("align"))
    write_jsonl_atomic(run.manifest("align"), rows[:-4])  # prepare redone with other data
    count, logs = Count(), Logs()
    run_align(run, cfg, logs, callbacks=[count])
    assert count.batches == cfg.max_steps
    assert any("starting afresh" in line and "align manifest" in line for line in logs.lines), logs.lines


def test_align_and_finetune_write_tensorboard_curves(run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run_align(run, AlignConfig(**dict(TWO_EPOCHS, max_steps=3)))
    run.record_stage("align", {}, {})
    run_finetune(run, FinetuneConfig(**TINY_FT))
    tags = {}
    for stage in ("align", "finetune"):
        acc = EventAccumulator(str(run.root / stage / "tensorboard"))
        acc.Reload()
        tags[stage] = set(acc.Tags()["scalars"])
    assert {"train_loss", "grad_norm", "recall/heldout_a2i_r@1", "recall/train_a2i_r@1"} <= tags["align"]
    assert any(t.startswith("lr-") for t in tags["align"])
    assert {"grad_norm", "val_wer"} <= tags["finetune"] and any("lr" in t for t in tags["finetune"])


def test_ssl_l2_tokens_are_nemos():
    """The control's quantizer gives exactly the tokens of NeMo's l2 quantizer with the same codebook."""
    from nemo.collections.asr.modules import RandomProjectionVectorQuantizer

    from avasr_cli.models.ssl import build_objective

    torch.manual_seed(0)
    ours = build_objective(features=80, d_model=64, subsampling=8).quantizer
    nemo = RandomProjectionVectorQuantizer(feat_in=80, code_dim=16, num_classes=8192, num_books=1, dist_fn="l2",
                                           combine_time_steps=8, squeeze_single=True)
    nemo.load_state_dict(ours.state_dict())
    nemo.float()
    spec = torch.randn(8, 80, 800)
    _, t_ours = ours(input_signal=spec)
    _, t_nemo = nemo(input_signal=spec)
    assert t_ours.shape == t_nemo.shape == (8, 100)
    assert (t_ours == t_nemo).float().mean().item() >= 0.999  # float ties aside, identical
