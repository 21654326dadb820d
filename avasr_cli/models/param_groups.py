"""Optimiser parameter groups for align and finetune: the pretrained encoder and the new parts trained
on top of it (align's projection head, contrastive temperature and SigLIP bias, the audio-only control's
decoder; finetune's decoder, joint and CTC head) get their own learning rates, and weight decay falls
only on weight matrices and kernels.

Rules (one function, so both stages and both align objectives group their encoder the same way):

* **Encoder vs head.** Encoder parameters get ``lr``; every other trainable parameter gets ``head_lr``.
* **Layer-wise decay** (``layer_decay`` < 1): the top conformer layer in use gets ``lr``, each layer
  below it ``layer_decay`` times the one above, and the convolutional subsampling (``pre_encode``)
  ``lr * layer_decay ** n_layers``. Encoder parameters outside ``pre_encode`` and the layers (a shared
  ``pos_bias``, ``out_proj``) get ``lr``. ``layer_decay`` 1.0 turns this off.
* **No weight decay** on biases (any parameter whose name contains ``bias``, so the attention's
  ``pos_bias_u``/``pos_bias_v`` too), on the parameters of normalisation layers (LayerNorm, BatchNorm,
  GroupNorm) and on every parameter of fewer than two dimensions (the contrastive ``logit_scale`` and
  ``logit_bias`` among them).
* Frozen parameters (``requires_grad`` False) are in no group.

Groups are named (``encoder``, ``encoder.no_decay``, ``head``, ``head.no_decay``; with layer decay
``encoder.pre_encode``, ``encoder.layers.3``, ...), so Lightning's learning-rate monitor and run.json
show them by name.
"""

from __future__ import annotations

from typing import Any


def group_problems(head_lr_ratio: float, layer_decay: float) -> list[str]:
    """What is wrong with the group options (for a config's ``validate``)."""
    problems = []
    if not head_lr_ratio > 0:
        problems.append("--head-lr-ratio must be positive")
    if not 0.0 < layer_decay <= 1.0:
        problems.append("--layer-decay must be in (0, 1] (1 = off)")
    return problems


def lowest_lr(lr: float, head_lr: float, layer_decay: float, n_layers: int) -> float:
    """The smallest peak rate of any group (a schedule's floor must stay below it)."""
    return min(head_lr, lr * layer_decay ** n_layers)


def _no_decay(model) -> set[int]:
    from torch import nn

    norms = (nn.LayerNorm, nn.GroupNorm, nn.modules.batchnorm._BatchNorm)
    out = set()
    for module in model.modules():
        for name, p in module.named_parameters(recurse=False):
            if isinstance(module, norms) or p.ndim < 2 or "bias" in name:
                out.add(id(p))
    return out


def _encoder_slot(name: str, n_layers: int) -> tuple[str, int]:
    """(group part, depth) of an encoder parameter: depth 0 = pre_encode, i + 1 = layer i, n_layers = top."""
    if name.startswith("pre_encode."):
        return "encoder.pre_encode", 0
    if name.startswith("layers."):
        i = int(name.split(".")[1])
        return f"encoder.layers.{i}", i + 1
    return "encoder.other", n_layers


def build_param_groups(model, encoder, *, lr: float, head_lr: float, weight_decay: float,
                       layer_decay: float = 1.0) -> list[dict[str, Any]]:
    """Parameter groups of ``model`` (which contains ``encoder``) by the rules of this module, in the
    order of ``model.named_parameters()``."""
    encoder_names = {id(p): n for n, p in encoder.named_parameters()}
    n_layers = len(encoder.layers)
    plain = _no_decay(model)
    groups: dict[tuple[str, bool], dict[str, Any]] = {}
    for _, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if id(p) in encoder_names:
            part, depth = _encoder_slot(encoder_names[id(p)], n_layers)
            rate = lr * layer_decay ** (n_layers - depth)
            if layer_decay == 1.0:
                part = "encoder"
        else:
            part, rate = "head", head_lr
        decay = id(p) not in plain
        group = groups.setdefault((part, decay), {
            "name": part if decay else f"{part}.no_decay", "params": [], "lr": rate,
            "weight_decay": weight_decay if decay else 0.0})
        group["params"].append(p)
    return list(groups.values())


def summarise(groups: list[dict]) -> list[dict]:
    """What run.json records of each group: name, peak learning rate, weight decay, tensors, parameters."""
    return [{"name": g.get("name", f"group{i}"), "lr": g["lr"], "weight_decay": g["weight_decay"],
             "tensors": len(g["params"]), "params": int(sum(p.numel() for p in g["params"]))}
            for i, g in enumerate(groups)]


def use_param_groups(model, make_groups) -> None:
    """Make a NeMo model build its optimiser over ``make_groups()``.

    NeMo's ``ModelPT.setup_optimization`` (called from ``configure_optimizers`` when Lightning's fit
    starts) first calls the documented hook ``setup_optimizer_param_groups``, which fills
    ``self._optimizer_param_groups``, and builds the optimiser over those groups (the optim config's
    ``lr``/``weight_decay`` only fill in what a group leaves unset). This overrides the hook on this
    one instance: the class, and so the ``target`` that a saved ``.nemo`` restores, stays NeMo's.
    """

    def setup_optimizer_param_groups():
        model._optimizer_param_groups = make_groups()

    model.setup_optimizer_param_groups = setup_optimizer_param_groups
