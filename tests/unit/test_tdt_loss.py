"""The PyTorch TDT loss against NeMo's reference implementation (``TDTLossPytorch``, run on the CPU by
making its ``.cuda()`` calls no-ops) and against a loop-based backward (beta) recursion written from the
paper; then TDT models built the way avasr builds them, trained and decoded on the CPU."""

import json
from types import SimpleNamespace

import pytest
import torch

from avasr_cli.models.tdt_loss import TDTLoss, tdt_loss

V = 5  # tokens; blank = V


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models step faster on one thread; on a busy 2-core machine two threads can wait on each other
    for milliseconds per op (a 64-unit LSTM step: 0.1 ms on one thread, 30 ms on two)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _batch(durations, seed=0, act_lens=(6, 4, 2), label_lens=(3, 1, 0), pad=0):
    g = torch.Generator().manual_seed(seed)
    B, T, U = len(act_lens), max(act_lens), max(label_lens)
    acts = (2 * torch.randn(B, T, U + 1, V + 1 + len(durations), generator=g)).requires_grad_()
    labels = torch.randint(0, V, (B, U), generator=g)
    for b, n in enumerate(label_lens):
        labels[b, n:] = pad
    return acts, labels, torch.tensor(act_lens), torch.tensor(label_lens)


def _grad(loss, acts):
    return torch.autograd.grad(loss.sum(), acts)[0]


@pytest.fixture
def nemo_tdt(monkeypatch):
    """NeMo's loop-based TDT loss, per utterance; it calls .cuda(), made a no-op here."""
    from nemo.collections.asr.losses.rnnt_pytorch import TDTLossPytorch

    monkeypatch.setattr(torch.Tensor, "cuda", lambda self, *args, **kwargs: self)

    def loss(acts, labels, act_lens, label_lens, durations, sigma=0.0):
        ref = TDTLossPytorch(blank=V, durations=durations, reduction=None, sigma=sigma)
        return ref(acts=acts, labels=labels, act_lens=act_lens, label_lens=label_lens)

    return loss


def _nemo_rnnt(acts, labels, act_lens, label_lens, n_durations):
    from nemo.collections.asr.losses.rnnt_pytorch import RNNTLossPytorch

    ref = RNNTLossPytorch(blank=V, reduction=None)
    return ref(acts=acts[..., :-n_durations], labels=labels, act_lens=act_lens, label_lens=label_lens)


def _paper_tdt(acts, labels, act_lens, label_lens, durations, sigma=0.0):
    """-log P by the backward variables of Xu et al. (2023), float64, one cell at a time:
    beta(t, u) = log-prob of finishing from (t, u); the last arc is a blank landing exactly on (T, U)."""
    nd = len(durations)
    x = acts.double()
    tok = torch.log_softmax(x[..., :-nd], -1) - sigma
    dur = torch.log_softmax(x[..., -nd:], -1)
    out = []
    for b in range(acts.shape[0]):
        T, U = int(act_lens[b]), int(label_lens[b])
        beta = {}
        for t in reversed(range(T)):
            for u in reversed(range(U + 1)):
                terms = []
                for i, d in enumerate(durations):
                    blank = tok[b, t, u, V] + dur[b, t, u, i]
                    if d > 0 and u == U and t + d == T:
                        terms.append(blank)
                    if d > 0 and t + d < T:
                        terms.append(blank + beta[t + d, u])
                    if u < U and t + d < T:
                        terms.append(tok[b, t, u, labels[b, u]] + dur[b, t, u, i] + beta[t + d, u + 1])
                terms = [term for term in terms if torch.isfinite(term)]  # no path: log 0, no NaN gradients
                beta[t, u] = torch.logsumexp(torch.stack(terms), 0) if terms else x.new_tensor(float("-inf"))
        out.append(-beta[0, 0])
    return torch.stack(out)


CASES = [([0, 1, 2, 3, 4], 0.0), ([0, 1, 2, 3, 4], 0.05), ([0, 1, 2], 0.02), ([0, 1], 0.0)]


@pytest.mark.parametrize("durations,sigma", CASES)
def test_matches_nemo_reference_values_and_gradients(nemo_tdt, durations, sigma):
    acts, labels, act_lens, label_lens = _batch(durations)  # variable lengths, the last utterance has U = 0
    ref = nemo_tdt(acts, labels, act_lens, label_lens, durations, sigma)
    mine = tdt_loss(acts, labels, act_lens, label_lens, blank=V, durations=durations, sigma=sigma)
    torch.testing.assert_close(mine, ref, atol=1e-4, rtol=1e-5)
    torch.testing.assert_close(_grad(mine, acts), _grad(ref, acts), atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("durations,sigma", CASES + [([1, 2, 4], 0.1), ([0, 2, 3], 0.0)])
def test_matches_loop_reference_from_the_paper(durations, sigma):
    # padding labels with -1 must not matter; without duration 0 or 1 some utterances have no path (loss inf)
    acts, labels, act_lens, label_lens = _batch(durations, seed=1, act_lens=(9, 5, 1, 3), label_lens=(4, 2, 0, 4),
                                                pad=-1)
    ref = _paper_tdt(acts, labels, act_lens, label_lens, durations, sigma)
    mine = tdt_loss(acts, labels, act_lens, label_lens, blank=V, durations=durations, sigma=sigma)
    torch.testing.assert_close(mine.double(), ref, atol=1e-4, rtol=1e-5)
    torch.testing.assert_close(_grad(mine, acts), _grad(ref, acts).float(), atol=1e-5, rtol=1e-4)
    assert torch.isinf(mine).any() == (0 not in durations or 1 not in durations)


@pytest.mark.parametrize("durations", [[0, 1, 2, 3, 4], [0, 2, 4]])
def test_omega_mixes_in_the_rnnt_loss(nemo_tdt, durations):
    acts, labels, act_lens, label_lens = _batch(durations, seed=2)
    tdt = (_paper_tdt if 1 not in durations else nemo_tdt)(acts, labels, act_lens, label_lens, durations, 0.05)
    rnnt = _nemo_rnnt(acts, labels, act_lens, label_lens, len(durations))
    ref = 0.7 * tdt.float() + 0.3 * rnnt
    mine = tdt_loss(acts, labels, act_lens, label_lens, blank=V, durations=durations, sigma=0.05, omega=0.3)
    torch.testing.assert_close(mine, ref, atol=1e-4, rtol=1e-5)
    torch.testing.assert_close(_grad(mine, acts), _grad(ref, acts), atol=1e-5, rtol=1e-4)


def test_sampled_omega_picks_one_loss_per_batch_like_nemo(nemo_tdt):
    durations = [0, 1, 2]
    acts, labels, act_lens, label_lens = _batch(durations, seed=3)
    args = (acts, labels, act_lens, label_lens)
    always_rnnt = TDTLoss(V, durations, reduction=None, sigma=0.1, omega=1.0, sample_omega=True)(*args)
    never_rnnt = TDTLoss(V, durations, reduction=None, sigma=0.1, omega=0.0, sample_omega=True)(*args)
    torch.testing.assert_close(always_rnnt, _nemo_rnnt(*args, len(durations)), atol=1e-4, rtol=1e-5)
    torch.testing.assert_close(never_rnnt, nemo_tdt(*args, durations, 0.1), atol=1e-4, rtol=1e-5)


def test_float64_gradcheck():
    durations = [0, 1, 2]
    acts, labels, act_lens, label_lens = _batch(durations, seed=4, act_lens=(4, 3), label_lens=(2, 1))
    acts = acts.detach().double().requires_grad_()
    assert torch.autograd.gradcheck(
        lambda a: tdt_loss(a, labels, act_lens, label_lens, blank=V, durations=durations, sigma=0.05, omega=0.2),
        (acts,))


def test_long_sequences_stay_finite_and_precise():
    durations = [0, 1, 2, 3, 4]
    acts, labels, act_lens, label_lens = _batch(durations, seed=5, act_lens=(160, 97), label_lens=(70, 40))
    acts = (acts * 4).detach().requires_grad_()  # peaky logits: log-probabilities far below zero
    mine = tdt_loss(acts, labels, act_lens, label_lens, blank=V, durations=durations, sigma=0.05, omega=0.1)
    exact = tdt_loss(acts.double(), labels, act_lens, label_lens, blank=V, durations=durations, sigma=0.05, omega=0.1)
    assert torch.isfinite(mine).all() and (mine > 100).all()
    torch.testing.assert_close(mine.double(), exact, rtol=1e-5, atol=0)
    grad = _grad(mine, acts)
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0


def test_plugs_into_nemo_rnnt_loss_wrapper_with_its_reductions():
    from nemo.collections.asr.losses.rnnt import RNNTLoss

    from avasr_cli.models.asr import use_cpu_tdt_loss

    durations = [0, 1, 2, 3, 4]
    acts, labels, act_lens, label_lens = _batch(durations, seed=6)
    per_utt = tdt_loss(acts, labels, act_lens, label_lens, blank=V, durations=durations, sigma=0.02, omega=0.1)
    expected = {"mean_batch": per_utt.mean(), "sum": per_utt.sum(), "mean": (per_utt / label_lens).mean(),
                "mean_volume": per_utt.sum() / label_lens.sum()}
    for reduction, value in expected.items():
        wrapper = RNNTLoss(num_classes=V, reduction=reduction, loss_name="tdt",
                           loss_kwargs={"durations": durations, "sigma": 0.02, "omega": 0.1})
        call = dict(log_probs=acts, targets=labels, input_lengths=act_lens, target_lengths=label_lens)
        if reduction == "mean_batch":
            with pytest.raises(ValueError, match="non CUDA"):  # what this replaces: NeMo's TDT loss is CUDA-only
                wrapper(**call)
        assert use_cpu_tdt_loss(SimpleNamespace(loss=wrapper)) is True
        assert isinstance(wrapper._loss, TDTLoss) and wrapper._loss.durations == durations
        assert use_cpu_tdt_loss(SimpleNamespace(loss=wrapper)) is True  # idempotent
        torch.testing.assert_close(wrapper(**call), value)


# ------------------------------------------------------------------------------------------------
# TDT models as avasr builds them, on the CPU


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    import numpy as np
    import soundfile as sf

    from avasr_cli.models.asr import train_tokenizer
    from avasr_cli.models.fastconformer import load_init

    root = tmp_path_factory.mktemp("tdt_data")
    texts = ["ನಮ್ಮ ಊರಿನ ಮನೆ", "ಶಾಲೆ ದೊಡ್ಡ ಮರ", "ಆಪಿಸ್ ಹತ್ತಿರ ಇದೆ", "ನಾನು ಹೋಗಿದ್ದೆ"]
    rng = np.random.default_rng(0)
    rows = []
    for i, text in enumerate(texts):
        n = 16000 + 4000 * i
        path = root / f"utt{i}.wav"
        sf.write(path, (0.1 * rng.standard_normal(n)).astype("float32"), 16000)
        rows.append({"audio_filepath": str(path), "duration": n / 16000, "text": text})
    manifest = root / "train.jsonl"
    manifest.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    train_tokenizer(texts, root / "tokenizer", vocab_size=16)
    return SimpleNamespace(root=root, manifest=manifest, audio=[r["audio_filepath"] for r in rows],
                           bundle=load_init("tiny", seed=0))


@pytest.mark.parametrize("decoder", ["hybrid-tdt-ctc", "tdt"])
def test_tdt_model_trains_and_transcribes_on_cpu(tiny_data, decoder):
    import lightning.pytorch as pl
    from omegaconf import OmegaConf

    from avasr_cli.models.asr import build_config, model_class, use_cpu_tdt_loss

    d = tiny_data
    cfg = build_config(decoder, d.bundle.preprocessor, d.bundle.encoder, d.root / "tokenizer", d.manifest, d.manifest,
                       batch_size=4, lr=1e-3, weight_decay=0.0, warmup_steps=1, max_steps=3, schedule="cosine",
                       workers=0, spec_augment=False, max_duration=20.0)
    pl.seed_everything(0, verbose=False)
    seen = {"losses": [], "grads": []}
    n_durations = len(cfg["model_defaults"]["tdt_durations"])

    class Probe(pl.Callback):
        def on_after_backward(self, trainer, module):
            out = module.joint.joint_net[-1].weight.grad  # rows: tokens, blank, then the durations
            seen["grads"].append((torch.isfinite(out).all().item(), out[:-n_durations].abs().sum().item(),
                                  out[-n_durations:].abs().sum().item()))

        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
            seen["losses"].append(float(outputs["loss"]))

    trainer = pl.Trainer(accelerator="cpu", max_steps=3, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
                         callbacks=[Probe()])
    model = model_class(decoder)(cfg=OmegaConf.create(cfg), trainer=trainer)
    keys = set(model.state_dict())
    assert use_cpu_tdt_loss(model) is True
    assert set(model.state_dict()) == keys  # checkpoints and best_weights.pt load as before
    assert model.joint._loss is model.loss and isinstance(model.loss._loss, TDTLoss)  # the fused joint's loss too
    assert model.loss._loss.durations == cfg["loss"]["tdt_kwargs"]["durations"]
    trainer.fit(model)
    losses, grads = seen["losses"], seen["grads"]
    assert len(losses) == 3 and all(torch.isfinite(torch.tensor(losses))) and losses[-1] < losses[0]
    assert all(ok and tokens > 0 and durations > 0 for ok, tokens, durations in grads)

    model.eval()
    hyps = model.transcribe(d.audio, batch_size=2, verbose=False)
    hyps = hyps[0] if isinstance(hyps, tuple) else hyps
    assert len(hyps) == len(d.audio) and all(isinstance(getattr(h, "text", h), str) for h in hyps)


def test_non_tdt_models_are_left_alone(tiny_data):
    from omegaconf import OmegaConf

    from avasr_cli.models.asr import build_config, model_class, use_cpu_tdt_loss

    d = tiny_data
    cfg = build_config("rnnt", d.bundle.preprocessor, d.bundle.encoder, d.root / "tokenizer", d.manifest, d.manifest,
                       batch_size=4, lr=1e-3, weight_decay=0.0, warmup_steps=1, max_steps=3, schedule="cosine",
                       workers=0, spec_augment=False, max_duration=20.0)
    model = model_class("rnnt")(cfg=OmegaConf.create(cfg))
    inner = model.loss._loss
    assert use_cpu_tdt_loss(model) is False and model.loss._loss is inner
