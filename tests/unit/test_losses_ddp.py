"""Negatives gathered across 2 CPU processes (gloo): same loss and gradients as one process on the
same global batch, once DDP's gradient averaging is undone by the world-size factor."""

import os
import socket

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from avasr_cli.models.losses import ClipLoss, SigLipLoss


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _data():
    g = torch.Generator().manual_seed(3)
    x = torch.randn(8, 5, generator=g)  # inputs of the global batch
    w = torch.randn(5, 6, generator=g)  # a shared "encoder" parameter, replicated on every rank
    v = torch.randn(8, 6, generator=g)  # image features
    return x, w, v, torch.tensor([0, 1, 2, 3, 3, 5, 6, 7])  # rows 3 and 4 share an image


def _worker(rank, port, name, out):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    x, w, v, ids = _data()
    w = w.clone().requires_grad_(True)
    sl = slice(rank * 4, rank * 4 + 4)
    loss = {"clip": ClipLoss, "siglip": SigLipLoss}[name]()(x[sl] @ w, v[sl], ids[sl])
    (loss * 2).backward()  # AlignModule returns loss x world size to Lightning
    out[rank] = (loss.detach(), w.grad.clone())
    dist.destroy_process_group()


def _check(name):
    out = mp.Manager().dict()
    mp.spawn(_worker, args=(_free_port(), name, out), nprocs=2, join=True)
    x, w, v, ids = _data()
    w = w.clone().requires_grad_(True)
    loss = {"clip": ClipLoss, "siglip": SigLipLoss}[name]()(x @ w, v, ids)
    loss.backward()
    ddp_grad = (out[0][1] + out[1][1]) / 2  # DDP averages gradients over ranks
    for rank in range(2):
        assert torch.allclose(out[rank][0], loss.detach(), atol=1e-6)
    assert torch.allclose(ddp_grad, w.grad, atol=1e-6)


def test_clip_gathered_equals_single_process():
    _check("clip")


def test_siglip_gathered_equals_single_process():
    _check("siglip")
