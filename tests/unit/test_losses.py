"""Contrastive losses against straightforward loop-based references (values and gradients)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from avasr_cli.models.losses import ClipLoss, MaxSimLoss, SigLipLoss, masked_mean, maxsim_scores

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "maxsim_memory.py"


def _ref_clip(a, v, ids, scale):
    a = a / a.norm(dim=-1, keepdim=True)
    v = v / v.norm(dim=-1, keepdim=True)
    n = a.shape[0]
    total = 0.0
    for direction in range(2):
        for i in range(n):
            terms = []
            for j in range(n):
                if j != i and ids[j] == ids[i]:
                    continue  # another clip of the same image is not a negative
                s = (a[i] @ v[j]) if direction == 0 else (v[i] @ a[j])
                terms.append(scale * s)
            pos = scale * (a[i] @ v[i])
            total = total - (pos - torch.logsumexp(torch.stack(terms), 0))
    return total / (2 * n)


def _ref_siglip(a, v, ids, scale, bias):
    a = a / a.norm(dim=-1, keepdim=True)
    v = v / v.norm(dim=-1, keepdim=True)
    n = a.shape[0]
    total = 0.0
    for i in range(n):
        for j in range(n):
            label = 1.0 if ids[i] == ids[j] else -1.0
            z = scale * (a[i] @ v[j]) + bias
            total = total - torch.nn.functional.logsigmoid(label * z)
    return total / n


def _ref_maxsim(frames, lengths, patches):
    out = torch.zeros(frames.shape[0], patches.shape[0])
    for i in range(frames.shape[0]):
        for j in range(patches.shape[0]):
            best = []
            for t in range(int(lengths[i])):
                f = frames[i, t] / frames[i, t].norm()
                sims = [(f @ (p / p.norm())) for p in patches[j]]
                best.append(torch.stack(sims).max())
            out[i, j] = torch.stack(best).mean()
    return out


@pytest.fixture
def batch():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(6, 8, generator=g, requires_grad=True)
    v = torch.randn(6, 8, generator=g, requires_grad=True)
    ids = torch.tensor([0, 1, 2, 2, 3, 4])  # rows 2 and 3 share an image
    return a, v, ids


def _grads(fn, a, v):
    a.grad = v.grad = None
    fn().backward()
    return a.grad.clone(), v.grad.clone()


def test_clip_matches_reference(batch):
    a, v, ids = batch
    loss = ClipLoss(init_temperature=0.1)
    ours = loss(a, v, ids)
    ref = _ref_clip(a, v, ids, loss.scale().detach())
    assert torch.allclose(ours, ref, atol=1e-5)
    ga, gv = _grads(lambda: loss(a, v, ids), a, v)
    ra, rv = _grads(lambda: _ref_clip(a, v, ids, loss.scale().detach()), a, v)
    assert torch.allclose(ga, ra, atol=1e-5) and torch.allclose(gv, rv, atol=1e-5)


def test_siglip_matches_reference(batch):
    a, v, ids = batch
    loss = SigLipLoss()
    ours = loss(a, v, ids)
    ref = _ref_siglip(a, v, ids, loss.scale().detach(), loss.logit_bias.detach())
    assert torch.allclose(ours, ref, atol=1e-4)
    ga, gv = _grads(lambda: loss(a, v, ids), a, v)
    ra, rv = _grads(lambda: _ref_siglip(a, v, ids, loss.scale().detach(), loss.logit_bias.detach()), a, v)
    assert torch.allclose(ga, ra, atol=1e-5) and torch.allclose(gv, rv, atol=1e-5)


def test_shared_image_is_not_a_negative(batch):
    a, v, ids = batch
    loss = ClipLoss()
    # moving row 3's image onto row 2's image must not change row 2's loss terms through a negative
    with torch.no_grad():
        base = loss(a, v, ids)
        v2 = v.clone()
        v2[3] = v[2] * 3.0
        assert torch.isfinite(loss(a, v2, ids)) and torch.isfinite(base)


def test_maxsim_scores_and_loss_match_reference():
    g = torch.Generator().manual_seed(1)
    frames = torch.randn(3, 5, 4, generator=g, requires_grad=True)
    lengths = torch.tensor([5, 3, 2])
    patches = torch.randn(3, 6, 4, generator=g)
    ours = maxsim_scores(frames, lengths, patches)
    assert torch.allclose(ours, _ref_maxsim(frames, lengths, patches), atol=1e-5)
    ids = torch.tensor([0, 1, 2])
    loss = MaxSimLoss()
    value = loss(frames, lengths, patches, ids)
    scale = loss.scale().detach()
    sim = scale * _ref_maxsim(frames, lengths, patches)
    target = torch.arange(3)
    ref = 0.5 * (torch.nn.functional.cross_entropy(sim, target) + torch.nn.functional.cross_entropy(sim.t(), target))
    assert torch.allclose(value, ref, atol=1e-5)
    value.backward()
    assert frames.grad is not None and frames.grad[2, 2:].abs().sum() == 0  # padding frames get no gradient


def _one_shot_maxsim(frames, lengths, patches):
    """The unchunked computation: the whole [Ba, Bi, T, P] similarity tensor at once."""
    a, p = torch.nn.functional.normalize(frames, dim=-1), torch.nn.functional.normalize(patches, dim=-1)
    sim = torch.einsum("atd,ipd->aitp", a, p).amax(dim=-1)
    mask = (torch.arange(frames.shape[1])[None, :] < lengths[:, None]).to(sim.dtype)
    return (sim * mask[:, None, :]).sum(-1) / mask.sum(-1).clamp(min=1)[:, None]


# frames [5, 9, 16] against patches [4, 6, 16]: one audio item is 4 * 6 * 7 = 168 entries (7 = longest length)
@pytest.mark.parametrize("block", [1 << 62, 2 * 168, 168, 24 * 3, 24 * 2 + 5, 1])  # items, 1 item, frames, uneven
def test_maxsim_in_blocks_equals_one_shot(block):
    g = torch.Generator().manual_seed(4)
    frames = torch.randn(5, 9, 16, generator=g, requires_grad=True)
    patches = torch.randn(4, 6, 16, generator=g, requires_grad=True)
    lengths = torch.tensor([7, 3, 5, 1, 6])  # padded, and no clip fills all 9 frames
    weights = torch.randn(5, 4, generator=g)
    ours = maxsim_scores(frames, lengths, patches, block=block)
    ref = _one_shot_maxsim(frames, lengths, patches)
    assert torch.allclose(ours, ref, atol=1e-6, rtol=0)
    (ga, gp) = torch.autograd.grad((ours * weights).sum(), (frames, patches))
    (ra, rp) = torch.autograd.grad((ref * weights).sum(), (frames, patches))
    assert torch.allclose(ga, ra, atol=1e-6, rtol=0) and torch.allclose(gp, rp, atol=1e-6, rtol=0)
    assert ga[:, 7:].abs().sum() == 0 and ga[1, 3:].abs().sum() == 0


def test_maxsim_loss_in_blocks_equals_one_shot_loss():
    g = torch.Generator().manual_seed(5)
    frames = torch.randn(6, 10, 8, generator=g, requires_grad=True)
    lengths, patches, ids = torch.tensor([10, 9, 4, 10, 2, 7]), torch.randn(6, 5, 8, generator=g), torch.tensor([0, 1, 1, 2, 3, 4])
    values, grads = [], []
    for block in (1 << 62, 7):
        loss = MaxSimLoss(block=block)(frames, lengths, patches, ids)
        values.append(loss.detach())
        grads.append(torch.autograd.grad(loss, frames)[0])
    assert torch.allclose(values[0], values[1], atol=1e-6, rtol=0)
    assert torch.allclose(grads[0], grads[1], atol=1e-6, rtol=0)


def _peak_mib(block, tmp_path):
    """Peak of live torch tensors during maxsim's forward + backward (benchmarks/maxsim_memory.py, profiler)."""
    sizes = ["--batch", "32", "--frames", "250", "--patches", "196", "--dim", "32"]
    proc = subprocess.run([sys.executable, str(BENCH), "--child", str(block), "--profile", "--out",
                           str(tmp_path / "out.pt"), *sizes], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])["live_mib"]


def test_maxsim_memory_is_bounded_by_its_blocks(tmp_path):
    """Batch 32 x 250 frames against 32 x 196 patches: the full similarity tensor is 191 MiB; with the
    default blocks (16 MiB) the loss's peak stays within 4 blocks plus a few copies of the frames."""
    full_mib = 32 * 32 * 250 * 196 * 4 / 2**20
    frames_mib = 32 * 250 * 32 * 4 / 2**20
    default = _peak_mib(0, tmp_path)  # MaxSimLoss() as align builds it
    assert default <= 4 * 16 + 8 * frames_mib, default
    assert _peak_mib(1 << 62, tmp_path) >= full_mib  # the one-shot computation holds the whole tensor


def test_masked_mean_ignores_padding():
    x = torch.tensor([[[1.0], [3.0], [100.0]]])
    assert masked_mean(x, torch.tensor([2])).item() == pytest.approx(2.0)


def test_siglip_initial_bias_is_the_prior_of_the_global_batch_unless_given():
    import math

    from avasr_cli.stages.align import AlignConfig, siglip_init_bias

    assert siglip_init_bias(AlignConfig(loss="siglip", batch_size=16), 1) == pytest.approx(-math.log(15))
    assert siglip_init_bias(AlignConfig(loss="siglip", batch_size=512), 64) == pytest.approx(-math.log(32767))  # ≈ SigLIP's -10
    assert siglip_init_bias(AlignConfig(loss="siglip", batch_size=16, siglip_bias=-10.0), 1) == -10.0
    from avasr_cli.models.align_module import AlignModule
    from avasr_cli.models.fastconformer import load_init

    module = AlignModule(load_init("tiny", seed=0), objective="image", loss="siglip", vision_dim=8,
                         loss_kwargs={"init_bias": -2.5})
    assert float(module.loss_fn.logit_bias) == pytest.approx(-2.5)


def test_siglip_bias_option_is_checked_and_older_records_read_as_minus_ten():
    from avasr_cli.cli.common import _recorded_options
    from avasr_cli.errors import ConfigError
    from avasr_cli.stages.align import AlignConfig
    from avasr_cli.stages.compare.runs import align_budget

    for bad in (AlignConfig(loss="siglip", siglip_bias=float("nan")), AlignConfig(loss="clip", siglip_bias=-3.0),
                AlignConfig(objective="audio-only", siglip_bias=-3.0)):
        with pytest.raises(ConfigError, match="--siglip-bias"):
            bad.validate()
    AlignConfig(loss="siglip", siglip_bias=-10.0).validate()
    # a run.json written before the option: siglip then meant -10, so today's auto default is another option
    old_siglip = {k: v for k, v in __import__("dataclasses").asdict(AlignConfig(loss="siglip")).items()
                  if k != "siglip_bias"}
    assert _recorded_options("align", AlignConfig(loss="siglip"), {"config": old_siglip})["siglip_bias"] == -10.0
    old_clip = {k: v for k, v in __import__("dataclasses").asdict(AlignConfig()).items() if k != "siglip_bias"}
    assert _recorded_options("align", AlignConfig(), {"config": old_clip}) == __import__("dataclasses").asdict(AlignConfig())
    # and compare reads such a run's budget with that bias, so it never shares a row with an auto-bias run
    budget = align_budget({"budget": {"objective": "image", "loss": "siglip", "init": "tiny"}}, {}, Path("/x"))
    assert budget["siglip_init_bias"] == -10.0
    assert "siglip_init_bias" not in align_budget({"budget": {"objective": "image", "loss": "clip", "init": "tiny"}},
                                                  {}, Path("/x"))
