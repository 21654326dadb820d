"""What every vision encoder family shares: the spec a name resolves to, the identity of its features,
small helpers. Imports nothing else from :mod:`avasr_cli.vision` (the bottom of the import arrows);
torch and transformers are imported inside functions only.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from typing import Any, Iterator

from avasr_cli.errors import ResourceError


@dataclasses.dataclass(frozen=True)
class VisionSpec:
    """What to load: a hub id, a local directory or a packaged model, an optional revision, and a human label."""

    model: str  # hub id (owner/name), absolute path of a local directory, or a packaged model's name
    revision: str | None = None
    label: str = ""
    untrained: bool = False
    family: str = "hf"  # the adapter that loads it: "hf" (transformers towers) or "efficientnet"
    source: str = ""  # where the weights come from, when the registry knows better than the adapter

    @property
    def is_local(self) -> bool:
        return self.family == "hf" and os.path.isdir(self.model)


@dataclasses.dataclass(frozen=True)
class EncoderInfo:
    """What identifies an encoder's features and what they are; known before loading weights."""

    model_id: str  # hub id, absolute local path, or a packaged model's name
    revision: str | None  # hub commit, "local-<sha256[:16]>" of a local dir, or package version + weights sha256
    label: str
    arch: str
    layer: int
    pooling: str  # "model" (the model's own pooled output), "masked-mean" (mean of patch tokens), "global-avg" (CNN)
    untrained: bool = False
    family: str = "hf"
    pretrained: bool | None = None  # None: not known (a generic backbone)
    text_aligned: bool | None = None  # trained against text (CLIP/SigLIP) or a language model (Qwen3-VL)
    kind: str = ""  # one line for records and tables, e.g. "ImageNet-pretrained CNN, not text-aligned"
    weights_source: str = ""  # where the weights came from: hub cache, local directory, pip package, built here
    available_offline: bool | None = None  # the weights were found without the network


def one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".strip().rstrip(":")


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Silence transformers' info logs and progress bars while loading (results are ours to report)."""
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)
        if bars:
            hf_logging.enable_progress_bar()


def resolve_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ResourceError(f"device {device} requested but no CUDA GPU is visible", "use --device cpu (or auto)")
    return device


def pool_patches(patches: Any, grid: tuple[int, int], k: int) -> Any:
    """Average-pool patch tokens ``[B, h*w, D]`` on their ``grid`` to a ``k×k`` grid ``[B, k*k, D]``."""
    import torch.nn.functional as F

    b, p, d = patches.shape
    h, w = grid
    x = patches.transpose(1, 2).reshape(b, d, h, w)
    return F.adaptive_avg_pool2d(x, (k, k)).flatten(2).transpose(1, 2).contiguous()
