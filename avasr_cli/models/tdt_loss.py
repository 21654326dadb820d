"""Token-and-Duration Transducer (TDT) loss in plain PyTorch, so TDT models train on a CPU.

NeMo 3.0's TDT losses are CUDA-only (``tdt`` raises on CPU tensors, ``tdt_pytorch`` calls ``.cuda()``).
This module computes the same negative log-likelihood (Xu et al. 2023, https://arxiv.org/abs/2304.06795)
on any device, with autograd for the gradients, and is plugged into a NeMo model by
``avasr_cli.models.asr.use_cpu_tdt_loss``.

Conventions follow NeMo's ``TDTLossNumba``:

* ``acts``: joint output logits ``[B, T, U+1, V+1+D]`` -- token logits (blank last, at index ``blank = V``)
  then ``D`` duration logits; both parts are log-softmaxed here (a log-softmax the joint applied over the
  whole vector on the CPU changes neither part).
* ``sigma``: logit under-normalisation, subtracted from every token log-probability in the TDT lattice.
* ``omega``: weight of the plain RNN-T loss (token logits only, no ``sigma``). NeMo *samples* it: with
  probability ``omega`` a whole batch uses the RNN-T loss instead of TDT. Here the default is the expectation
  of that, ``(1 - omega) * TDT + omega * RNN-T`` (same expected gradient, no sampling noise, reproducible);
  ``sample_omega=True`` reproduces NeMo's sampling.

The forward recursion runs over the anti-diagonals ``n = t + u`` of the ``T x (U+1)`` lattice: every arc,
blank or token, of any duration ``d >= 0``, leaves a cell on an earlier diagonal (``n - d`` for a blank,
``n - d - 1`` for a token), so each diagonal is one vectorised log-sum-exp over the batch and ``u``; the
Python loop runs ``T + U`` times. The RNN-T loss is the same lattice with blank durations ``{1}`` and token
durations ``{0}``, so with ``omega > 0`` both run in one pass, stacked along the batch.
"""

from __future__ import annotations

import random
from typing import Sequence

import torch

NEG = -1e30  # "log 0" that stays finite, so log-sum-exp gradients never become 0/0
REDUCTIONS = (None, "none", "mean_batch", "mean", "sum", "mean_volume")


def _skew(x: torch.Tensor, shift: int) -> tuple[torch.Tensor, ...]:
    """[B, T, U1, K] -> per anti-diagonal n, [K, B, U1] with entry u = x[:, n - (u - shift), u - shift]
    (NEG off the lattice): the arcs leaving diagonal n, indexed by the u they land on."""
    _, T, U1, _ = x.shape
    n = torch.arange(T + U1 - 1, device=x.device).unsqueeze(1)
    u = torch.arange(U1, device=x.device).unsqueeze(0) - shift
    t = n - u
    valid = (t >= 0) & (t < T) & (u >= 0)
    skewed = x[:, t.clamp(0, T - 1), u.clamp(min=0).expand_as(t)]  # [B, N, U1, K]
    skewed = skewed.masked_fill(~valid[None, :, :, None], NEG)
    return skewed.permute(1, 3, 0, 2).unbind(0)  # unbind: one cheap backward (a stack), unlike N selects


def transducer_log_likelihood(blank_arcs: torch.Tensor, token_arcs: torch.Tensor, blank_durations: Sequence[int],
                              token_durations: Sequence[int], act_lens: torch.Tensor,
                              label_lens: torch.Tensor) -> torch.Tensor:
    """log P(labels | acts) of a transducer lattice whose arcs may skip frames.

    ``blank_arcs[b, t, u, j]``: log-weight of a blank that leaves cell (t, u) for (t + blank_durations[j], u);
    ``token_arcs[b, t, u, j]``: log-weight of emitting label u from (t, u) to (t + token_durations[j], u + 1).
    A path starts at (0, 0) and ends with a blank landing exactly on (act_lens[b], label_lens[b]).
    Returns [B]; -inf (with a zero gradient) where no path exists. Blank durations must be >= 1, token durations >= 0.
    """
    B, T, U1, _ = blank_arcs.shape
    if min(blank_durations) < 1 or min(token_durations) < 0:
        raise ValueError("blank durations must be >= 1 and token durations >= 0")
    # a blank of duration d leaves diagonal n - d and stays at u; a token leaves n - d - 1 at u - 1
    blank_diag, token_diag = _skew(blank_arcs, 0), _skew(token_arcs, 1)
    N = T + U1 - 1
    alpha = torch.full((B, U1), NEG, dtype=blank_arcs.dtype, device=blank_arcs.device)
    alpha[:, 0] = 0.0  # diagonal 0 holds only the start cell (0, 0)
    alphas = [alpha]
    out_blank: list[tuple] = []  # out_blank[m][j][:, u]: mass leaving diagonal m by blank arc j, landing at u
    out_token: list[tuple] = []  # out_token[m][j][:, u]: the same for token arc j
    for n in range(N):
        if n > 0:
            terms = [out_blank[n - d][j] for j, d in enumerate(blank_durations) if n - d >= 0]
            terms += [out_token[n - 1 - d][j] for j, d in enumerate(token_durations) if n - 1 - d >= 0]
            alphas.append(torch.logsumexp(torch.stack(terms), 0))
        a = alphas[n]
        out_blank.append((a + blank_diag[n]).unbind(0))
        out_token.append((torch.nn.functional.pad(a[:, :-1], (1, 0), value=NEG) + token_diag[n]).unbind(0))
    alpha_all = torch.stack(alphas, 1)  # [B, N, U1]
    # termination: a blank of duration d from (T_b - d, U_b) lands on (T_b, U_b)
    b = torch.arange(B, device=blank_arcs.device).unsqueeze(1)
    d = torch.as_tensor(list(blank_durations), device=blank_arcs.device).unsqueeze(0)
    t_src = act_lens.unsqueeze(1) - d  # [B, nb]
    ok = t_src >= 0
    t_src = t_src.clamp(min=0)
    u_end = label_lens.unsqueeze(1).expand_as(t_src)
    j = torch.arange(len(blank_durations), device=blank_arcs.device).unsqueeze(0).expand_as(t_src)
    last = alpha_all[b, t_src + u_end, u_end] + blank_arcs[b, t_src, u_end, j]
    logp = torch.logsumexp(last.masked_fill(~ok, NEG), 1)
    # no path at all (e.g. more labels than frames allow): log 0, with a zero gradient rather than NaNs
    return torch.where(logp > NEG / 2, logp, torch.full_like(logp, float("-inf")))


def _arcs(lp: torch.Tensor, weights: list) -> torch.Tensor:
    """[..., K] arc log-weights: lp + weights[k], or NEG where weights[k] is None (no such arc)."""
    return torch.stack([torch.full_like(lp, NEG) if w is None else lp + w for w in weights], -1)


def tdt_loss(acts: torch.Tensor, labels: torch.Tensor, act_lens: torch.Tensor, label_lens: torch.Tensor, *,
             blank: int, durations: Sequence[int], sigma: float = 0.0, omega: float = 0.0,
             use_rnnt: bool | None = None) -> torch.Tensor:
    """Per-utterance TDT negative log-likelihood [B] (see the module docstring).

    ``use_rnnt=None`` mixes ``(1 - omega) * TDT + omega * RNN-T``; ``True``/``False`` computes only the
    RNN-T/TDT loss (NeMo's sampled ``omega``)."""
    durations = [int(x) for x in durations]
    nd = len(durations)
    if nd == 0 or acts.shape[-1] <= nd:
        raise ValueError(f"acts has {acts.shape[-1]} outputs, too few for {nd} durations")
    if not (0 <= blank < acts.shape[-1] - nd):
        raise ValueError(f"blank index {blank} is outside the {acts.shape[-1] - nd} token outputs")
    B, T, U1, _ = acts.shape
    acts = acts if acts.dtype == torch.float64 else acts.float()  # float32 (or float64, e.g. for gradcheck)
    act_lens, label_lens = act_lens.long().to(acts.device), label_lens.long().to(acts.device)
    token_logits, duration_logits = acts[..., :-nd], acts[..., -nd:]
    # token log-probabilities without materialising the full log-softmax
    denom = torch.logsumexp(token_logits, -1)
    lp_blank = token_logits[..., blank] - denom  # [B, T, U1]
    lab = torch.zeros(B, U1, dtype=torch.long, device=acts.device)
    width = min(labels.shape[1], U1 - 1)
    lab[:, :width] = labels[:, :width].long().clamp(0, token_logits.shape[-1] - 1)
    lp_label = token_logits.gather(-1, lab[:, None, :, None].expand(B, T, U1, 1)).squeeze(-1) - denom
    lp_dur = torch.log_softmax(duration_logits, -1)

    want_tdt = use_rnnt is not True and (use_rnnt is False or omega < 1.0)
    want_rnnt = use_rnnt is True or (use_rnnt is None and omega > 0.0)
    blank_d = sorted({x for x in durations if x > 0} | ({1} if want_rnnt else set()))
    token_d = sorted(set(durations) | ({0} if want_rnnt else set()))
    blank_parts, token_parts = [], []
    if want_tdt:
        col = {x: i for i, x in enumerate(durations)}
        blank_parts.append(_arcs(lp_blank - sigma, [lp_dur[..., col[x]] if x in col else None for x in blank_d]))
        token_parts.append(_arcs(lp_label - sigma, [lp_dur[..., col[x]] if x in col else None for x in token_d]))
    if want_rnnt:
        blank_parts.append(_arcs(lp_blank, [0.0 if x == 1 else None for x in blank_d]))
        token_parts.append(_arcs(lp_label, [0.0 if x == 0 else None for x in token_d]))
    k = len(blank_parts)
    logp = transducer_log_likelihood(torch.cat(blank_parts), torch.cat(token_parts), blank_d, token_d,
                                     act_lens.repeat(k), label_lens.repeat(k)).view(k, B)
    if want_tdt and want_rnnt:
        return -((1.0 - omega) * logp[0] + omega * logp[1])
    return -logp[0]


def reduce_losses(losses: torch.Tensor, label_lens: torch.Tensor, reduction: str | None) -> torch.Tensor:
    """NeMo's ``RNNTLoss.reduce``."""
    if reduction in (None, "none"):
        return losses
    if reduction == "mean_batch":
        return losses.mean()
    if reduction == "mean":
        return (losses / label_lens.to(losses)).mean()
    if reduction == "sum":
        return losses.sum()
    if reduction == "mean_volume":
        return losses.sum() / label_lens.to(losses).sum()
    raise ValueError(f"reduction {reduction!r} is not one of {REDUCTIONS}")


class TDTLoss(torch.nn.Module):
    """Drop-in for NeMo's ``TDTLossNumba`` (``RNNTLoss._loss``): ``forward(acts, labels, act_lens, label_lens)``.

    NeMo's ``RNNTLoss`` wrapper sets ``reduction`` to None around the call and reduces itself, so the
    per-utterance losses come back then. ``fallback`` (e.g. the replaced NeMo loss) is used for CUDA tensors
    when ``cuda_fallback`` is true, keeping NeMo's fused kernel on GPUs.
    """

    def __init__(self, blank: int, durations: Sequence[int], reduction: str | None = "mean_batch",
                 sigma: float = 0.0, omega: float = 0.0, sample_omega: bool = False,
                 fastemit_lambda: float = 0.0, clamp: float = -1.0, fallback: torch.nn.Module | None = None,
                 cuda_fallback: bool = True):
        super().__init__()
        if reduction not in REDUCTIONS:
            raise ValueError(f"reduction {reduction!r} is not one of {REDUCTIONS}")
        if not durations or min(durations) < 0 or len(set(durations)) != len(durations):
            raise ValueError(f"TDT durations must be distinct non-negative integers, got {list(durations)}")
        if not any(d > 0 for d in durations):
            raise ValueError("TDT durations need at least one positive duration (blanks must advance)")
        if not 0.0 <= omega <= 1.0:
            raise ValueError(f"omega must be in [0, 1], got {omega}")
        if fastemit_lambda or (clamp is not None and clamp > 0):
            raise ValueError("the PyTorch TDT loss supports neither FastEmit nor gradient clamping "
                             "(set fastemit_lambda=0 and clamp<=0)")
        self.blank, self.durations = int(blank), [int(d) for d in durations]
        self.reduction, self.sigma, self.omega, self.sample_omega = reduction, float(sigma), float(omega), sample_omega
        self.fallback = fallback  # registered as a submodule: it has no parameters or buffers
        self.cuda_fallback = cuda_fallback

    def forward(self, acts, labels, act_lens, label_lens):
        if self.fallback is not None and self.cuda_fallback and acts.is_cuda:
            saved, self.fallback.reduction = self.fallback.reduction, None
            try:
                losses = self.fallback(acts=acts, labels=labels, act_lens=act_lens, label_lens=label_lens)
            finally:
                self.fallback.reduction = saved
            return reduce_losses(losses, label_lens, self.reduction)
        use_rnnt = (random.random() < self.omega) if self.sample_omega else None
        losses = tdt_loss(acts, labels, act_lens, label_lens, blank=self.blank, durations=self.durations,
                          sigma=self.sigma, omega=self.omega, use_rnnt=use_rnnt)
        return reduce_losses(losses, label_lens, self.reduction)

    def extra_repr(self) -> str:
        return (f"blank={self.blank}, durations={self.durations}, sigma={self.sigma}, omega={self.omega}, "
                f"sample_omega={self.sample_omega}, reduction={self.reduction}")
