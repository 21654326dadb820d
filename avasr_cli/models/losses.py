"""Audio–image contrastive losses as small modules (the open_clip pattern).

* ``clip``   — symmetric InfoNCE on pooled vectors with a learnable temperature.
* ``siglip`` — pairwise sigmoid loss with a learnable scale and bias.
* ``maxsim`` — late interaction: for each audio–image pair, the mean over valid audio frames of the
  maximum cosine similarity over the image's patch tokens; then InfoNCE over the batch.

Memory budget of ``maxsim``: the [Ba, Bi, T, P] frame×patch similarities are never held at once. They
are computed in blocks of at most :data:`MAXSIM_BLOCK` entries (16 MiB in fp32) and recomputed block by
block in the backward pass, so the loss needs about 4 blocks (64 MiB) + [Ba, Bi, T] maxima + a few
copies of the frames ([Ba, T, D]) on top of its inputs, whatever the batch. Measured with
``benchmarks/maxsim_memory.py`` (fp32, CPU, peak of live tensors over forward + backward) at batch 32 ×
20 s clips (250 frames) × 196 patches × dim 768: 117 MiB in blocks against 645 MiB in one shot (the full
similarity tensor alone is 191 MiB, and it grows with the square of the gathered batch).

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


MAXSIM_BLOCK = 1 << 22  # similarity entries per block: 4.2 M (16 MiB in fp32)


def maxsim_scores(frames: torch.Tensor, lengths: torch.Tensor, patches: torch.Tensor,
                  block: int = MAXSIM_BLOCK) -> torch.Tensor:
    """[Ba, T, D] audio frames, [Ba] lengths, [Bi, P, D] patch tokens → [Ba, Bi] late-interaction scores.

    The frame×patch similarities ([Ba, Bi, T, P] in all) are computed in blocks of whole audio items (and,
    when one item is too large, of frames) of at most ``block`` entries. Only the best patch of every
    frame ([Ba, Bi, T]) is kept; with autograd on, each block is recomputed in the backward pass
    (activation checkpointing) instead of being stored. Values and gradients are those of the one-shot
    computation; memory is bounded by a few blocks plus [Ba, Bi, T] however large the batch. Padding
    frames past the longest length (a DDP batch padded to the corpus's longest clip) are not computed.
    """
    n_t = max(1, min(frames.shape[1], int(lengths.max()))) if lengths.numel() else frames.shape[1]
    a, p = F.normalize(frames[:, :n_t], dim=-1), F.normalize(patches, dim=-1)  # frames past every length: skipped
    n_a = a.shape[0]
    per_frame = max(1, p.shape[0] * p.shape[1])  # entries one frame contributes
    items = max(1, block // (per_frame * max(1, n_t)))
    steps = max(1, block // per_frame) if items == 1 else n_t  # frames per block when one item is too big
    one_block = items >= n_a and steps >= n_t
    checkpoint = not one_block and torch.is_grad_enabled() and (a.requires_grad or p.requires_grad)
    flat_p = p.reshape(-1, p.shape[-1])  # [Bi * P, D]
    rows = [torch.cat([_best_patch(piece, flat_p, p.shape[0], checkpoint) for piece in item.split(steps, dim=1)], dim=-1)
            for item in a.split(items, dim=0)]
    sim = torch.cat(rows, dim=0)  # [Ba, Bi, T]: the best patch of every frame
    mask = (torch.arange(n_t, device=frames.device)[None, :] < lengths[:, None]).to(sim.dtype)
    return (sim * mask[:, None, :]).sum(-1) / mask.sum(-1).clamp(min=1)[:, None]


def _frame_max(a: torch.Tensor, flat_p: torch.Tensor, n_images: int) -> torch.Tensor:
    """[c, t, D] frames × [Bi * P, D] patches → [c, Bi, t]: the best patch of every image for every frame."""
    sim = a.reshape(-1, a.shape[-1]) @ flat_p.t()  # [c * t, Bi * P]
    return sim.view(a.shape[0], a.shape[1], n_images, -1).amax(dim=-1).transpose(1, 2)


def _best_patch(a: torch.Tensor, flat_p: torch.Tensor, n_images: int, checkpoint: bool) -> torch.Tensor:
    if not checkpoint:
        return _frame_max(a, flat_p, n_images)
    from torch.utils.checkpoint import checkpoint as recompute

    return recompute(_frame_max, a, flat_p, n_images, use_reentrant=False)


class MaxSimLoss(ContrastiveLoss):
    def __init__(self, init_temperature: float = 0.07, gather: bool = True, block: int = MAXSIM_BLOCK):
        super().__init__(init_temperature, gather=gather)
        self.block = block  # similarity entries per block (see maxsim_scores)

    def forward(self, frames: torch.Tensor, lengths: torch.Tensor, patches: torch.Tensor,
                image_ids: torch.Tensor) -> torch.Tensor:
        if self.gather:
            frames, lengths = gather_features(frames), gather_ids(lengths)
            patches, image_ids = gather_features(patches), gather_ids(image_ids)
        return info_nce(self.scale() * maxsim_scores(frames, lengths, patches, self.block), image_ids)


LOSSES = {"clip": ClipLoss, "siglip": SigLipLoss, "maxsim": MaxSimLoss}
