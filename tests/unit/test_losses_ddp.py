"""Negatives gathered across 2 CPU processes (gloo): same loss and gradients as one process on the
same global batch, once DDP's gradient averaging is undone by the world-size factor."""

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from avasr_cli.models.losses import ClipLoss, MaxSimLoss, SigLipLoss


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _data():
    g = torch.Generator().manual_seed(3)
    x = torch.randn(8, 4, 5, generator=g)  # inputs of the global batch: 4 frames each
    w = torch.randn(5, 6, generator=g)  # a shared "encoder" parameter, replicated on every rank
    v = torch.randn(8, 3, 6, generator=g)  # image features: 3 patch tokens each
    lengths = torch.tensor([4, 2, 3, 4, 1, 4, 2, 3])
    return x, w, v, lengths, torch.tensor([0, 1, 2, 3, 3, 5, 6, 7])  # rows 3 and 4 share an image


def _loss(name, x, w, v, lengths, ids):
    if name == "maxsim":  # frame x patch late interaction, in blocks of 5 similarities (many blocks)
        return MaxSimLoss(block=5)(x @ w, lengths, v, ids)
    pooled = (x @ w).mean(1)
    return {"clip": ClipLoss, "siglip": SigLipLoss}[name]()(pooled, v.mean(1), ids)


def _worker(rank, port, name, out):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    x, w, v, lengths, ids = _data()
    w = w.clone().requires_grad_(True)
    sl = slice(rank * 4, rank * 4 + 4)
    loss = _loss(name, x[sl], w, v[sl], lengths[sl], ids[sl])
    (loss * 2).backward()  # AlignModule returns loss x world size to Lightning
    out[rank] = (loss.detach(), w.grad.clone())
    dist.destroy_process_group()


@pytest.mark.parametrize("name", ["clip", "siglip", "maxsim"])
def test_gathered_equals_single_process(name):
    out = mp.Manager().dict()
    mp.spawn(_worker, args=(_free_port(), name, out), nprocs=2, join=True)
    x, w, v, lengths, ids = _data()
    w = w.clone().requires_grad_(True)
    loss = _loss(name, x, w, v, lengths, ids)
    loss.backward()
    ddp_grad = (out[0][1] + out[1][1]) / 2  # DDP averages gradients over ranks
    for rank in range(2):
        assert torch.allclose(out[rank][0], loss.detach(), atol=1e-6)
    assert torch.allclose(ddp_grad, w.grad, atol=1e-6)
