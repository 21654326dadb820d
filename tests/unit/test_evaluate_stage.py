"""evaluate as a library call on a tiny fine-tuned model (real NeMo, CPU): one transcribe pass (one
DataLoader) per split, a progress bar that moves per batch, hypotheses equal to stock NeMo's."""

import contextlib
import json
import math

import pytest

from avasr_cli.progress import Reporter
from avasr_cli.run import RunDir
from avasr_cli.stages.evaluate import EvaluateConfig, run_evaluate

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module", params=["ctc", "hybrid-tdt-ctc"])
def finetuned(request, tmp_path_factory):
    """A prepared run with a 2-step fine-tuned model; dev has 6 utterances, test 13 (more than 8 batches of 1)."""
    from avasr_cli.stages.finetune import FinetuneConfig, run_finetune
    from avasr_cli.stages.prepare import PrepareConfig, run_prepare

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AVASR_HOME", str(tmp_path_factory.mktemp("home")))
        run = RunDir(tmp_path_factory.mktemp("run"))
        cfg = PrepareConfig(num_align=10, num_train=12, num_dev=6, num_test=13)
        run.record_stage("prepare", cfg, run_prepare(run, cfg, None))
        ft = FinetuneConfig(decoder=request.param, max_steps=2, batch_size=6, val_every=2, workers=0, warmup_steps=1)
        run.record_stage("finetune", ft, run_finetune(run, ft))
    return run


class Recording(Reporter):
    """Keeps every advance of every task."""

    def __init__(self):
        self.advances: dict[str, list[float]] = {}

    @contextlib.contextmanager
    def _open(self, description, total, unit):
        steps = self.advances.setdefault(description, [])

        class _Task:
            def advance(self, n=1):
                steps.append(n)

            def update(self, **fields):
                pass

        yield _Task()


def _model_class(run):
    from avasr_cli.models.asr import model_class

    return model_class(run.stage("finetune")["result"]["decoder"])  # the class the .nemo restores as


def _spy(monkeypatch, cls, name, counts):
    original = getattr(cls, name)

    def counted(self, *args, **kwargs):
        counts[name] = counts.get(name, 0) + 1
        return original(self, *args, **kwargs)

    monkeypatch.setattr(cls, name, counted)


def test_one_transcribe_pass_per_split_with_per_batch_progress(finetuned, monkeypatch):
    counts: dict[str, int] = {}
    cls = _model_class(finetuned)
    _spy(monkeypatch, cls, "transcribe", counts)
    _spy(monkeypatch, cls, "_setup_transcribe_dataloader", counts)
    rep = Recording()
    result = run_evaluate(finetuned, EvaluateConfig(batch_size=1), rep)
    assert counts == {"transcribe": 2, "_setup_transcribe_dataloader": 2}  # dev and test, once each
    assert rep.advances["transcribing dev"] == [1] * 6  # one tick per batch
    assert rep.advances["transcribing test"] == [1] * 13
    assert result.splits["test"]["num_utterances"] == 13

    counts.clear()
    rep = Recording()
    run_evaluate(finetuned, EvaluateConfig(splits=("test",), batch_size=4), rep)
    assert counts == {"transcribe": 1, "_setup_transcribe_dataloader": 1}
    assert rep.advances["transcribing test"] == [4, 4, 4, 1]
    assert sum(rep.advances["transcribing test"]) == 13 and len(rep.advances["transcribing test"]) == math.ceil(13 / 4)


def test_hypotheses_equal_stock_nemo_transcribe(finetuned):
    from nemo.collections.asr.models import ASRModel

    batch_size = 4
    run_evaluate(finetuned, EvaluateConfig(batch_size=batch_size))
    model = ASRModel.restore_from(str(finetuned.finetune_dir / "model.nemo"), map_location="cpu")
    model.eval()
    for split in ("dev", "test"):
        rows = [json.loads(line) for line in (finetuned.reports / f"hyps-{split}.jsonl").read_text().splitlines()]
        out = model.transcribe([r["audio_filepath"] for r in rows], batch_size=batch_size, verbose=False)
        out = out[0] if isinstance(out, tuple) else out
        assert [o.text if hasattr(o, "text") else o for o in out] == [r["hyp"] for r in rows]
        report = json.loads((finetuned.reports / f"wer-{split}.json").read_text())
        assert report["num_utterances"] == len(rows)


@pytest.mark.parametrize("n,world", [(1, 2), (5, 2), (7, 3), (2, 5), (0, 4), (20, 7)])
def test_round_robin_parts_come_back_in_manifest_order(n, world):
    from avasr_cli.stages.evaluate import interleave

    items = [f"utt{i}" for i in range(n)]
    parts = [items[r::world] for r in range(world)]  # what each rank transcribes (empty past the end)
    assert interleave(parts, n) == items
    with pytest.raises(RuntimeError):
        interleave([items[0::world][:-1] or ["x", "y"], *parts[1:]], n)


def test_evaluate_options_that_contradict_each_other(monkeypatch):
    from avasr_cli.errors import ConfigError
    from avasr_cli.stages.evaluate import EvaluateConfig, _launch

    with pytest.raises(ConfigError, match="--device cpu contradicts --gpus"):
        EvaluateConfig(gpus=2, device="cpu").validate()
    monkeypatch.setenv("LOCAL_RANK", "1")  # a second process of torchrun, while the options say one
    with pytest.raises(ConfigError, match="one of several"):
        _launch(EvaluateConfig())
