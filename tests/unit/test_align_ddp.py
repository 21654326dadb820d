"""The alignment module in 2 CPU processes (gloo), each with half of a global batch: the gathered loss
equals the single-process loss on the whole batch, and the DDP-averaged encoder gradients equal the
single-process gradients."""

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from avasr_cli.models.align_module import AlignModule
from avasr_cli.models.fastconformer import load_init

pytestmark = pytest.mark.slow
B, DIM = 8, 16


def _batch():
    g = torch.Generator().manual_seed(5)
    lengths = torch.tensor([16000, 12000, 15000, 9000, 16000, 11000, 14000, 10000])
    audio = torch.randn(B, 16000, generator=g) * 0.1
    for i, n in enumerate(lengths):
        audio[i, n:] = 0
    pooled = torch.randn(B, DIM, generator=g)
    ids = torch.tensor([0, 1, 2, 3, 3, 4, 5, 6])  # two clips of image 3
    return audio, lengths, ids, pooled


def _module(loss):
    torch.manual_seed(0)
    module = AlignModule(load_init("tiny", seed=0), objective="image", loss=loss, vision_dim=DIM)
    return module.eval()  # no dropout/dither: the two computations must be deterministic


def _grads(module):
    return {n: p.grad.detach().clone() for n, p in module.named_parameters() if p.grad is not None}


def _worker(rank, port, loss_name, out):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    audio, lengths, ids, pooled = _batch()
    sl = slice(rank * B // 2, (rank + 1) * B // 2)
    module = _module(loss_name)
    loss = module.compute_loss(audio[sl], lengths[sl], ids[sl], pooled[sl])
    module.ddp_scaled(loss).backward()
    grads = _grads(module)
    for g in grads.values():  # what DDP does: average gradients over ranks
        dist.all_reduce(g)
        g /= 2
    out[rank] = (loss.item(), grads)
    dist.destroy_process_group()


@pytest.mark.parametrize("loss_name", ["clip", "siglip"])
def test_two_process_align_equals_single_process(loss_name):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = mp.Manager().dict()
    mp.spawn(_worker, args=(port, loss_name, out), nprocs=2, join=True)
    audio, lengths, ids, pooled = _batch()
    module = _module(loss_name)
    loss = module.compute_loss(audio, lengths, ids, pooled)
    loss.backward()
    single = _grads(module)
    for rank in range(2):
        assert out[rank][0] == pytest.approx(loss.item(), abs=1e-5)
    ddp = out[0][1]
    assert set(ddp) == set(single) and any(k.startswith("encoder.layers.") for k in single)
    for name, g in single.items():
        assert torch.allclose(ddp[name], g, atol=1e-5, rtol=1e-4), name
