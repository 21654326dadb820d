"""Audio–image contrastive losses as small modules (the open_clip pattern).

* ``clip``   — symmetric InfoNCE on pooled vectors with a learnable temperature.
* ``siglip`` — pairwise sigmoid loss with a learnable scale and bias.
* ``maxsim`` — late interaction: for each audio–image pair, the mean over valid audio frames of the
  maximum cosine similarity over the image's patch tokens; then InfoNCE over the batch.

Pairs in a batch that share an image (same content hash) are positives, never negatives: for InfoNCE
they are removed from the denominators, for the sigmoid loss they get the label +1.

Across ranks, :func:`gather_features` concatenates every rank's features while keeping the gradient of
the local slice (no collective at world size 1). Each rank then computes the loss over the global batch;
since DDP averages gradients over ranks, :meth:`ContrastiveLoss.forward` also returns the factor that
makes the averaged gradient equal the single-process gradient of the same global batch.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def world() -> tuple[int, int]:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _all_gather(x: torch.Tensor) -> list[torch.Tensor]:
    import torch.distributed as dist

    parts = [torch.zeros_like(x) for _ in range(world()[1])]
    dist.all_gather(parts, x.contiguous())
    return parts


def gather_features(x: torch.Tensor) -> torch.Tensor:
    """All-gather ``x`` (same shape on every rank) along dim 0; the local slice keeps its gradient."""
    rank, size = world()
    if size == 1:
        return x
    parts = _all_gather(x)
    parts[rank] = x
    return torch.cat(parts, dim=0)


def gather_ids(ids: torch.Tensor) -> torch.Tensor:
    """All-gather integer keys (no gradient)."""
    return ids if world()[1] == 1 else torch.cat(_all_gather(ids), dim=0)


def masked_mean(frames: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Mean over the valid frames of ``frames`` [B, T, D]."""
    mask = (torch.arange(frames.shape[1], device=frames.device)[None, :] < lengths[:, None]).to(frames.dtype)
    return (frames * mask[..., None]).sum(1) / mask.sum(1).clamp(min=1)[:, None]


def _same_image(image_ids: torch.Tensor) -> torch.Tensor:
    return image_ids[:, None] == image_ids[None, :]


class ContrastiveLoss(nn.Module):
    """Base: learnable logit scale (and bias for sigmoid); subclasses define the similarity and loss."""

    def __init__(self, init_temperature: float = 0.07, init_bias: float | None = None, gather: bool = True):
        super().__init__()
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1.0 / init_temperature)))
        if init_bias is not None:  # only losses that use it own it (DDP rejects unused parameters)
            self.logit_bias = nn.Parameter(torch.tensor(float(init_bias)))
        self.gather = gather

    def scale(self) -> torch.Tensor:
        return _replicated(self.logit_scale.clamp(max=math.log(100.0)).exp(), self.gather)

    def bias(self) -> torch.Tensor:
        return _replicated(self.logit_bias, self.gather)


def _replicated(p: torch.Tensor, gather: bool) -> torch.Tensor:
    """A parameter every rank applies to the whole gathered batch gets the full gradient on every rank;
    with the loss scaled by the world size for the per-sample features, its gradient is divided back."""
    size = world()[1]
    if not gather or size == 1:
        return p
    return p / size + (p - p / size).detach()


def info_nce(sim: torch.Tensor, image_ids: torch.Tensor) -> torch.Tensor:
    """Symmetric InfoNCE on a square similarity matrix with shared-image pairs masked out of the negatives."""
    same = _same_image(image_ids)
    eye = torch.eye(sim.shape[0], dtype=torch.bool, device=sim.device)
    logits = sim.masked_fill(same & ~eye, float("-inf"))
    target = torch.arange(sim.shape[0], device=sim.device)
    return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target))


class ClipLoss(ContrastiveLoss):
    def forward(self, audio: torch.Tensor, image: torch.Tensor, image_ids: torch.Tensor) -> torch.Tensor:
        """audio [B, D] and image [B, D] pooled vectors (normalised here); image_ids [B] integer keys."""
        if self.gather:
            audio, image, image_ids = gather_features(audio), gather_features(image), gather_ids(image_ids)
        a, v = F.normalize(audio, dim=-1), F.normalize(image, dim=-1)
        return info_nce(self.scale() * a @ v.t(), image_ids)


class SigLipLoss(ContrastiveLoss):
    def __init__(self, init_temperature: float = 0.1, init_bias: float = -10.0, gather: bool = True):
        super().__init__(init_temperature, init_bias, gather)

    def forward(self, audio: torch.Tensor, image: torch.Tensor, image_ids: torch.Tensor) -> torch.Tensor:
        if self.gather:
            audio, image, image_ids = gather_features(audio), gather_features(image), gather_ids(image_ids)
        a, v = F.normalize(audio, dim=-1), F.normalize(image, dim=-1)
        logits = self.scale() * a @ v.t() + self.bias()
        labels = 2.0 * _same_image(image_ids).to(logits.dtype) - 1.0
        return -F.logsigmoid(labels * logits).sum() / logits.shape[0]


def maxsim_scores(frames: torch.Tensor, lengths: torch.Tensor, patches: torch.Tensor) -> torch.Tensor:
    """[Ba, T, D] audio frames, [Ba] lengths, [Bi, P, D] patch tokens → [Ba, Bi] late-interaction scores."""
    a, p = F.normalize(frames, dim=-1), F.normalize(patches, dim=-1)
    sim = torch.einsum("atd,ipd->aitp", a, p).amax(dim=-1)  # best patch for every frame
    mask = (torch.arange(frames.shape[1], device=frames.device)[None, :] < lengths[:, None]).to(sim.dtype)
    return (sim * mask[:, None, :]).sum(-1) / mask.sum(-1).clamp(min=1)[:, None]


class MaxSimLoss(ContrastiveLoss):
    def forward(self, frames: torch.Tensor, lengths: torch.Tensor, patches: torch.Tensor,
                image_ids: torch.Tensor) -> torch.Tensor:
        if self.gather:
            frames, lengths = gather_features(frames), gather_ids(lengths)
            patches, image_ids = gather_features(patches), gather_ids(image_ids)
        return info_nce(self.scale() * maxsim_scores(frames, lengths, patches), image_ids)


LOSSES = {"clip": ClipLoss, "siglip": SigLipLoss, "maxsim": MaxSimLoss}
