"""Which parameters get which learning rate and weight decay, read off the optimiser that Lightning's
``trainer.fit`` really built inside ``run_align`` and ``run_finetune`` (a callback captures
``trainer.optimizers``), and what run.json's budget records of it; ``--align-layer`` through the stage."""

import json

import lightning.pytorch as pl
import pytest
import torch
from torch import nn

from avasr_cli.errors import ConfigError
from avasr_cli.models.fastconformer import EncoderBundle, load_init
from avasr_cli.stages.align import AlignConfig, run_align
from avasr_cli.stages.finetune import FinetuneConfig, run_finetune

TINY_ALIGN = dict(max_steps=2, batch_size=6, workers=0, checkpoint_every=2, warmup_steps=1, lr=1e-3,
                  weight_decay=0.01)
TINY_FT = dict(decoder="ctc", max_steps=2, batch_size=6, val_every=2, workers=0, warmup_steps=1, lr=1e-3,
               weight_decay=0.01)


class Groups(pl.Callback):
    """At the start of training: for every trainable parameter of the module, by name, the peak
    learning rate and weight decay of the optimiser group holding it (and how many groups hold it)."""

    def on_train_start(self, trainer, pl_module):
        (opt,) = trainer.optimizers
        self.names = [g.get("name") for g in opt.param_groups]
        where = {}
        for g in opt.param_groups:
            for p in g["params"]:
                where.setdefault(id(p), []).append((g["initial_lr"], g["weight_decay"], g.get("name")))
        self.by_name = {n: where.get(id(p), []) for n, p in pl_module.named_parameters()}
        self.trainable = {n for n, p in pl_module.named_parameters() if p.requires_grad}
        self.norms = {f"{m}.{n}" if m else n for m, mod in pl_module.named_modules()
                      for n, _ in mod.named_parameters(recurse=False)
                      if isinstance(mod, (nn.LayerNorm, nn.modules.batchnorm._BatchNorm))}
        self.shapes = {n: p.ndim for n, p in pl_module.named_parameters()}


def _no_decay(name: str, watch: Groups) -> bool:
    return name in watch.norms or "bias" in name.rsplit(".", 1)[-1] or watch.shapes[name] < 2


def _expected_encoder_lr(name: str, lr: float, decay: float, n_layers: int) -> float:
    if name.startswith("encoder.pre_encode."):
        return lr * decay ** n_layers
    if name.startswith("encoder.layers."):
        return lr * decay ** (n_layers - 1 - int(name.split(".")[2]))
    return lr


def _check_rules(watch: Groups, *, lr, head_lr, decay, n_layers, wd=0.01):
    assert watch.trainable, "nothing trainable"
    for name in watch.trainable:
        assert len(watch.by_name[name]) == 1, f"{name} is in {len(watch.by_name[name])} groups"
        rate, weight_decay, _ = watch.by_name[name][0]
        want = _expected_encoder_lr(name, lr, decay, n_layers) if name.startswith("encoder.") else head_lr
        assert rate == pytest.approx(want), name
        assert weight_decay == (0.0 if _no_decay(name, watch) else wd), name
    for name in set(watch.by_name) - watch.trainable:
        assert not watch.by_name[name], f"frozen {name} is in the optimiser"


def _check_recorded(budget: dict, watch: Groups) -> None:
    """The budget's groups are the optimiser's: the same names, in order, covering every trainable tensor."""
    assert [g["name"] for g in budget["param_groups"]] == watch.names
    assert sum(g["tensors"] for g in budget["param_groups"]) == len(watch.trainable)


@pytest.mark.parametrize("loss", ["clip", "siglip"])
def test_align_groups_encoder_head_layer_decay_and_no_decay(run, loss):
    watch = Groups()
    result = run_align(run, AlignConfig(**dict(TINY_ALIGN, loss=loss, head_lr_ratio=4.0, layer_decay=0.5)),
                       callbacks=[watch])
    _check_rules(watch, lr=1e-3, head_lr=4e-3, decay=0.5, n_layers=2)
    # the contrastive temperature (and SigLIP's bias): the head's rate, never weight decay
    assert watch.by_name["loss_fn.logit_scale"][0][:2] == (pytest.approx(4e-3), 0.0)
    if loss == "siglip":
        assert watch.by_name["loss_fn.logit_bias"][0][:2] == (pytest.approx(4e-3), 0.0)
    # biases, LayerNorm and BatchNorm parameters and the attention's positional biases: no decay
    for name in ("encoder.layers.0.norm_out.weight", "encoder.layers.1.conv.batch_norm.weight",
                 "encoder.layers.0.self_attn.pos_bias_u", "encoder.pre_encode.out.bias", "head.0.bias"):
        assert watch.by_name[name][0][1] == 0.0, name
    assert watch.by_name["head.0.weight"][0][1] == 0.01
    assert watch.by_name["encoder.pre_encode.out.weight"][0][:2] == (pytest.approx(2.5e-4), 0.01)  # lr × 0.5²
    b = result.budget
    assert (b["head_lr"], b["layer_decay"], b["align_layer"], b["encoder_layers"]) == (pytest.approx(4e-3), 0.5, 1, 2)
    _check_recorded(b, watch)
    assert {g["name"]: (g["lr"], g["weight_decay"]) for g in b["param_groups"]}["encoder.layers.0"] == (
        pytest.approx(5e-4), 0.01)


def test_align_defaults_one_encoder_rate_and_head_rate_equal(run):
    watch = Groups()
    result = run_align(run, AlignConfig(**TINY_ALIGN), callbacks=[watch])
    _check_rules(watch, lr=1e-3, head_lr=1e-3, decay=1.0, n_layers=2)
    assert watch.names == ["encoder", "encoder.no_decay", "head", "head.no_decay"]
    assert result.budget["align_layer"] == 1 and result.budget["layer_decay"] == 1.0


def test_align_frozen_layers_are_in_no_group(run):
    watch = Groups()
    run_align(run, AlignConfig(**dict(TINY_ALIGN, freeze_layers=1)), callbacks=[watch])
    frozen = [n for n in watch.by_name if n.startswith(("encoder.layers.0.", "encoder.pre_encode."))]
    assert frozen and all(not watch.by_name[n] for n in frozen)
    _check_rules(watch, lr=1e-3, head_lr=1e-3, decay=1.0, n_layers=2)


@pytest.mark.parametrize("objective", ["image", "audio-only"])
def test_align_layer_trains_only_up_to_it(run, objective):
    """Aligning layer 0 of the 2-layer tiny encoder: layer 1 is not in the module, not in the optimiser,
    and comes back unchanged in the aligned encoder; layer 0 and the subsampling are trained."""
    watch = Groups()
    result = run_align(run, AlignConfig(**dict(TINY_ALIGN, objective=objective, align_layer=-2, layer_decay=0.5)),
                       callbacks=[watch])
    assert not any(n.startswith("encoder.layers.1.") for n in watch.by_name)
    _check_rules(watch, lr=1e-3, head_lr=1e-3, decay=0.5, n_layers=1)  # decay counted from the aligned layer
    base, aligned = load_init("tiny", seed=0), EncoderBundle.load(run.align_dir / "encoder")
    assert aligned.encoder == base.encoder and aligned.state_dict.keys() == base.state_dict.keys()
    for k, v in base.state_dict.items():
        if k.startswith("layers.1."):
            assert torch.equal(v, aligned.state_dict[k]), k
    assert not torch.equal(base.state_dict["layers.0.feed_forward1.linear1.weight"],
                           aligned.state_dict["layers.0.feed_forward1.linear1.weight"])
    assert result.budget["align_layer"] == 0 and result.budget["encoder_layers"] == 2
    assert aligned.history[-1]["budget"]["align_layer"] == 0
    aligned.build_encoder()  # the whole encoder loads strictly, ready for finetune


def test_align_layer_out_of_range_is_a_config_error_and_writes_nothing(run):
    before = sorted(p.relative_to(run.root) for p in run.root.rglob("*"))
    with pytest.raises(ConfigError) as exc:
        run_align(run, AlignConfig(**dict(TINY_ALIGN, align_layer=2)))
    assert "--align-layer 2" in exc.value.message and "2 conformer layers" in exc.value.message
    assert "0..1" in exc.value.hint
    with pytest.raises(ConfigError) as exc:
        run_align(run, AlignConfig(**dict(TINY_ALIGN, align_layer=0, freeze_layers=2)))
    assert "--freeze-layers 2" in exc.value.message
    assert sorted(p.relative_to(run.root) for p in run.root.rglob("*")) == before


@pytest.mark.parametrize("bad", [dict(head_lr_ratio=0.0), dict(layer_decay=0.0), dict(layer_decay=1.5)])
def test_group_options_are_validated(bad):
    with pytest.raises(ConfigError):
        AlignConfig(**bad).validate()
    with pytest.raises(ConfigError):
        FinetuneConfig(**bad).validate()


@pytest.mark.parametrize("decoder", ["ctc", "hybrid-rnnt-ctc"])
def test_finetune_groups_encoder_decoder_layer_decay_and_no_decay(run, decoder):
    watch = Groups()
    result = run_finetune(run, FinetuneConfig(**dict(TINY_FT, decoder=decoder, head_lr_ratio=3.0, layer_decay=0.8)),
                          callbacks=[watch])
    _check_rules(watch, lr=1e-3, head_lr=3e-3, decay=0.8, n_layers=2)
    heads = [n for n in watch.trainable if not n.startswith("encoder.")]
    assert any(n.startswith("decoder.") for n in heads)
    if decoder.startswith("hybrid"):
        assert any(n.startswith("joint.") for n in heads) and any(n.startswith("ctc_decoder.") for n in heads)
    budget = json.loads((run.finetune_dir / "budget.json").read_text())
    assert budget == result.budget
    assert (budget["head_lr"], budget["layer_decay"], budget["weight_decay"]) == (pytest.approx(3e-3), 0.8, 0.01)
    _check_recorded(budget, watch)
    assert isinstance(budget["step_seconds"], float) and 0 < budget["step_seconds"] < 60  # the measured rate


def test_finetune_layer_decay_below_the_schedule_floor_still_trains(run):
    """NeMo's cosine schedule refuses a group whose peak is below its floor: the floor follows the
    smallest group rate (here the subsampling's 1e-5 × 0.05² = 2.5e-8, below the 1e-7 floor of a 1e-5 peak)."""
    result = run_finetune(run, FinetuneConfig(**dict(TINY_FT, lr=1e-5, layer_decay=0.05)))
    assert result.steps == 2
    assert min(g["lr"] for g in result.budget["param_groups"]) == pytest.approx(2.5e-8)
