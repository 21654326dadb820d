"""``avasr compare`` over run directories built on the fly (run.json + reports/wer-<split>.json)."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import subprocess
import sys
import textwrap
import types
from pathlib import Path

import numpy as np
import pytest

from avasr_cli.errors import ConfigError, FairnessError, InputError
from avasr_cli.report.bootstrap import paired_bootstrap
from avasr_cli.stages.compare import CompareConfig, run_compare

ROOT = Path(__file__).resolve().parents[2]
N_UTTS = 40
SPEAKERS = [f"spk{i % 8}" for i in range(N_UTTS)]
REF_WORDS = [4 + i % 5 for i in range(N_UTTS)]


def make_run(root: Path, name: str, *, arm: str = "direct", seed: int = 0, p_err: float = 0.3,
             manifest_sha: str | None = "a" * 64, splits=("test",), max_steps: int = 1000, hours: float = 2.0,
             tokenizer: str = "t" * 64, utterances: bool = True, vision: str = "siglip2", loss: str = "infonce",
             hours_asked: float | None = None) -> Path:
    """A finished run directory with synthetic per-utterance errors (deterministic in name and seed)."""
    run = root / name
    (run / "reports").mkdir(parents=True)
    stages: dict = {"prepare": {"config": {"lang": "kannada", "source": "builtin", "seed": 0}, "result": {}}}
    if arm != "direct":
        objective = "audio-only" if arm == "audio-only" else "image"
        stages["align"] = {"config": {"objective": objective, "vision": "auto", "loss": loss, "max_steps": 500,
                                      "batch_size": 16, "init": "auto", "seed": seed},
                           "result": {"objective": objective, "vision": None if arm == "audio-only" else vision,
                                      "loss": None if arm == "audio-only" else loss, "init": "tiny", "effective_batch": 16}}
    budget = {"max_steps": max_steps, "batch_size": 8, "effective_batch": 8, "lr": 0.001, "schedule": "cosine",
              "seed": seed, "train_hours": hours, "decoder": "ctc"}
    stages["finetune"] = {"config": {"decoder": "ctc", "seed": seed, "init": "auto", "max_steps": max_steps,
                                     "batch_size": 8, "lr": 0.001,
                                     "train_hours": hours if hours_asked is None else hours_asked},
                          "result": {"budget": budget, "tokenizer_sha256": tokenizer,
                                     # as finetune records it: the encoder's source, seed and run dir included
                                     "init": f"tiny (seed {seed}, random init)" if arm == "direct"
                                     else f"{run.resolve()}/align/encoder (tiny, seed {seed})"}}
    (run / "run.json").write_text(json.dumps({"schema_version": 1, "stages": stages}))
    rng = np.random.default_rng(abs(hash((name, seed))) % 2**32)
    for split in splits:
        errs = rng.binomial(REF_WORDS, p_err)
        utts = [{"utt_id": f"utt{i:03d}", "speaker": SPEAKERS[i], "ref": "x", "hyp": "y", "ref_words": REF_WORDS[i],
                 "word_errors": int(errs[i]), "sub": int(errs[i]), "ins": 0, "del": 0, "ref_chars": 20,
                 "char_errors": int(errs[i])} for i in range(N_UTTS)]
        report = {"normalization": "avasr-indic-v1", "num_utterances": N_UTTS,
                  "wer": float(errs.sum() / sum(REF_WORDS)), "cer": float(errs.sum() / (20 * N_UTTS)),
                  "split": split, "manifest": f"data/{split}.jsonl", "checkpoint": "finetune/model.nemo",
                  "checkpoint_sha256": "c" * 64}
        if utterances:
            report["utterances"] = utts
        if manifest_sha:
            report["manifest_sha256"] = manifest_sha if split == "test" else manifest_sha[::-1] + "d"
        (run / "reports" / f"wer-{split}.json").write_text(json.dumps(report))
    return run


@pytest.fixture
def runs(tmp_path):
    paths = [make_run(tmp_path, f"direct-s{s}", seed=s, p_err=0.35, splits=("test", "dev")) for s in (1, 2, 3)]
    paths += [make_run(tmp_path, f"img-s{s}", arm="image", seed=s, p_err=0.25, splits=("test", "dev")) for s in (1, 2, 3)]
    paths.append(make_run(tmp_path, "ao-s1", arm="audio-only", seed=1, p_err=0.3))
    return [str(p) for p in paths]


def _report(path) -> dict:
    return json.loads((Path(path) / "reports" / "wer-test.json").read_text())


def test_rows_arms_and_seed_groups(runs):
    res = run_compare(CompareConfig(runs=tuple(runs), n_resamples=200))
    assert [r["arm"] for r in res.rows] == ["direct", "align:siglip2/infonce", "audio-only"]
    assert res.baseline == "direct" and res.rows[0]["baseline"] and not res.rows[1]["baseline"]
    assert res.splits == ["test", "dev"]
    direct = res.rows[0]
    assert direct["seeds"] == [1, 2, 3] and len(direct["runs"]) == 3
    wers = [_report(p)["wer"] for p in runs[:3]]
    assert direct["wer_test"] == pytest.approx(np.mean(wers))
    assert direct["wer_test_std"] == pytest.approx(np.std(wers, ddof=1))
    ao = res.rows[2]
    assert ao["wer_test_std"] is None and ao["wer_dev"] is None and ao["objective"] == "audio-only"
    assert ao["vision"] is None
    img = res.rows[1]
    assert img["objective"] == "image" and img["vision"] == "siglip2" and img["loss"] == "infonce"
    assert img["budget"] == "1000 × 8" and img["train_hours"] == 2.0
    assert img["init"] == "<run>/align/encoder (tiny, seed *)" and direct["init"] == "tiny (seed *, random init)"
    assert ao["init"].endswith("ao-s1/align/encoder (tiny, seed 1)")  # a single run shows its own
    assert img["delta_wer"] == pytest.approx(img["wer_test"] - direct["wer_test"])
    assert img["ci_low"] <= img["delta_wer"] <= img["ci_high"] and 0 <= img["p_value"] <= 1
    assert img["delta_wer"] < 0  # 25% vs 35% error rate
    assert not any(r["flags"] for r in res.rows) and res.flags == []


def test_paired_test_equals_pooling_seeds_with_matching_seeds(runs):
    """Documented equivalence: averaging per utterance over seeds == concatenating seed i with seed i."""
    res = run_compare(CompareConfig(runs=tuple(runs[:6]), n_resamples=300, seed=3))
    ea, eb, na, groups = [], [], [], []
    for d, i in zip(runs[:3], runs[3:6]):
        for ud, ui in zip(_report(d)["utterances"], _report(i)["utterances"]):
            ea.append(ud["word_errors"])
            eb.append(ui["word_errors"])
            na.append(ud["ref_words"])
            groups.append(ud["speaker"])
    pooled = paired_bootstrap(ea, na, eb, na, groups, n_resamples=300, seed=3)
    row = res.rows[1]
    assert row["delta_wer"] == pytest.approx(pooled["delta"])
    assert row["ci_low"] == pytest.approx(pooled["ci_low"]) and row["ci_high"] == pytest.approx(pooled["ci_high"])
    assert row["p_value"] == pytest.approx(pooled["p_value"])


def test_mismatched_seed_sets_still_pair_by_utterance(tmp_path):
    a = make_run(tmp_path, "direct-s0", seed=0, p_err=0.4)
    bs = [make_run(tmp_path, f"img-s{s}", arm="image", seed=s, p_err=0.2) for s in (5, 6)]
    res = run_compare(CompareConfig(runs=(str(a), *map(str, bs)), n_resamples=100))
    row = res.rows[1]
    assert row["seeds"] == [5, 6] and row["p_value"] is not None
    assert row["delta_wer"] == pytest.approx(np.mean([_report(b)["wer"] for b in bs]) - _report(a)["wer"])


def test_seeds_with_slightly_different_subsampled_hours_share_a_row(tmp_path):
    runs = [make_run(tmp_path, f"direct-s{s}", seed=s, hours=h, hours_asked=1.0) for s, h in ((1, 0.998), (2, 1.003))]
    runs.append(make_run(tmp_path, "img", arm="image", hours=1.01, hours_asked=1.0))
    runs.append(make_run(tmp_path, "img-half", arm="image", hours=0.5))
    res = run_compare(CompareConfig(runs=tuple(map(str, runs)), n_resamples=20))
    assert [len(r["runs"]) for r in res.rows] == [2, 1, 1]
    assert res.rows[0]["train_hours"] == pytest.approx(1.0005)
    assert [r["flags"] for r in res.rows] == [[], [], ["hours"]]


def test_different_test_manifests_raise_fairness_error(tmp_path):
    a = make_run(tmp_path, "direct", manifest_sha="a" * 64)
    b = make_run(tmp_path, "img", arm="image", manifest_sha="b" * 64)
    with pytest.raises(FairnessError) as exc:
        run_compare(CompareConfig(runs=(str(a), str(b))))
    assert str(a) in exc.value.message and str(b) in exc.value.message and exc.value.hint


def test_different_utterances_raise_fairness_error(tmp_path):
    a = make_run(tmp_path, "direct", manifest_sha=None)
    b = make_run(tmp_path, "img", arm="image", manifest_sha=None)
    rep = _report(b)
    rep["utterances"][0]["utt_id"] = "other"
    (b / "reports" / "wer-test.json").write_text(json.dumps(rep))
    with pytest.raises(FairnessError):
        run_compare(CompareConfig(runs=(str(a), str(b))))


def test_budget_tokenizer_and_hours_are_flagged(tmp_path):
    base = make_run(tmp_path, "direct")
    budget = make_run(tmp_path, "img-long", arm="image", max_steps=4000)
    tok = make_run(tmp_path, "ao", arm="audio-only", tokenizer="u" * 64)
    hours = make_run(tmp_path, "img-vit", arm="image", vision="clip", hours=1.0)
    res = run_compare(CompareConfig(runs=tuple(map(str, (base, budget, tok, hours))), n_resamples=50))
    flags = {r["names"][0]: r["flags"] for r in res.rows}
    assert flags == {"direct": [], "img-long": ["budget"], "ao": ["tokenizer"], "img-vit": ["hours"]}
    text = " ".join(res.flags)
    assert "max_steps 4000 vs 1000" in text and "[tokenizer]" in text and "1 h vs the baseline's 2 h" in text


def test_baseline_by_path_by_arm_and_unknown(runs):
    res = run_compare(CompareConfig(runs=tuple(runs), baseline=runs[-1], n_resamples=50))
    assert res.baseline == "audio-only" and res.rows[0]["arm"] == "audio-only" and res.rows[0]["delta_wer"] == 0
    res = run_compare(CompareConfig(runs=tuple(runs), baseline="align:siglip2/infonce", n_resamples=0))
    assert res.rows[0]["arm"] == "align:siglip2/infonce" and res.rows[1]["p_value"] is None
    assert res.rows[1]["delta_wer"] is not None  # ΔWER without a test
    with pytest.raises(ConfigError):
        run_compare(CompareConfig(runs=tuple(runs), baseline="nope"))


def test_no_direct_run_means_no_delta(tmp_path):
    a = make_run(tmp_path, "img", arm="image")
    res = run_compare(CompareConfig(runs=(str(a),), n_resamples=50))
    assert res.baseline is None and res.rows[0]["delta_wer"] is None and res.rows[0]["wer_ci_low"] is not None
    assert any("--baseline" in f for f in res.flags)


def test_missing_reports_and_bad_paths(tmp_path):
    empty = tmp_path / "fresh"
    empty.mkdir()
    (empty / "run.json").write_text(json.dumps({"schema_version": 1, "stages": {}}))
    with pytest.raises(InputError) as exc:
        run_compare(CompareConfig(runs=(str(empty),)))
    assert str(empty) in exc.value.message and exc.value.hint == f"avasr evaluate -r {empty}"
    stray = tmp_path / "notes.txt"  # `runs/*` also matches files kept beside the runs: skipped with a note
    stray.write_text("hi")
    with pytest.raises(InputError) as exc:
        run_compare(CompareConfig(runs=(str(stray),)))
    assert "no run directories" in exc.value.message
    missing = tmp_path / "nope"
    with pytest.raises(InputError) as exc:
        run_compare(CompareConfig(runs=(str(missing),)))
    assert str(missing) in exc.value.message and "does not exist" in exc.value.message
    dev_only = make_run(tmp_path, "dev-only", splits=("dev",))
    with pytest.raises(InputError) as exc:
        run_compare(CompareConfig(runs=(str(dev_only),)))
    assert "'test'" in exc.value.message
    with pytest.raises(ConfigError) as exc:
        run_compare(CompareConfig(runs=(str(dev_only),), format="xml", n_resamples=-1))
    assert "--format" in exc.value.message and "--resamples" in exc.value.message


def test_missing_keys_show_dashes(tmp_path):
    run = tmp_path / "bare"
    (run / "reports").mkdir(parents=True)
    (run / "run.json").write_text(json.dumps({"schema_version": 1, "stages": {}}))
    (run / "reports" / "wer-test.json").write_text(json.dumps({"wer": 0.5, "cer": 0.2}))
    res = run_compare(CompareConfig(runs=(str(run),)))
    from avasr_cli.report.table import cells, to_markdown

    row = cells(res, res.rows[0])
    assert row[1] == "direct" and row[4] == "—" and "50.00" in row
    assert "no per-utterance results" in to_markdown(res)


def test_formats_and_plot(runs, tmp_path):
    from avasr_cli.report.table import render_text, to_rich

    plot = tmp_path / "wer.png"
    res = run_compare(CompareConfig(runs=tuple(runs), n_resamples=100, plot=str(plot)))
    assert plot.stat().st_size > 10_000 and plot.read_bytes()[:4] == b"\x89PNG"
    md = render_text(res, "markdown")
    assert md.startswith("| Run(s) | Arm |") and "| baseline |" in md and "± " in md
    rows = list(csv.DictReader(io.StringIO(render_text(res, "csv"))))
    assert [r["arm"] for r in rows] == ["direct", "align:siglip2/infonce", "audio-only"]
    assert float(rows[1]["wer_test"]) == pytest.approx(res.rows[1]["wer_test"])
    data = json.loads(render_text(res, "json"))
    assert set(data) >= {"rows", "flags", "split", "baseline"} and data["rows"][0]["runs"] == runs[:3]
    from rich.console import Console

    console = Console(file=io.StringIO(), width=250)
    console.print(to_rich(res))
    assert "align:siglip2/infonce" in console.file.getvalue()


def test_hours_plot_when_runs_differ_in_hours(tmp_path):
    runs = [make_run(tmp_path, f"direct-{h}h", hours=h) for h in (1.0, 10.0)]
    runs += [make_run(tmp_path, f"img-{h}h", arm="image", hours=h, p_err=0.2) for h in (1.0, 10.0)]
    plot = tmp_path / "wer.svg"
    res = run_compare(CompareConfig(runs=tuple(map(str, runs)), baseline=str(runs[1]), n_resamples=50, plot=str(plot)))
    assert len(res.rows) == 4 and "WER vs training hours" in plot.read_text()


# ------------------------------------------------------------------------------------------------ CLI
@contextlib.contextmanager
def _compare_app():
    """A fresh Typer app with only `compare` registered. While sibling command modules are missing,
    ``avasr_cli.cli`` cannot be imported; then a bare package module stands in for it (removed after)."""
    import typer

    added = False
    try:
        import avasr_cli.cli  # noqa: F401
    except ImportError:
        import avasr_cli

        for k in [k for k in sys.modules if k.startswith("avasr_cli.cli")]:
            del sys.modules[k]
        stub = types.ModuleType("avasr_cli.cli")
        stub.__path__ = [str(Path(avasr_cli.__file__).parent / "cli")]
        sys.modules["avasr_cli.cli"] = stub
        added = True
    try:
        from avasr_cli.cli.compare import register

        app = typer.Typer()
        register(app)
        app.callback()(lambda: None)
        yield app
    finally:
        if added:
            for k in [k for k in sys.modules if k.startswith("avasr_cli.cli")]:
                del sys.modules[k]


def test_cli_formats_and_errors(runs, tmp_path):
    from typer.testing import CliRunner

    with _compare_app() as app:
        runner = CliRunner()
        res = runner.invoke(app, ["compare", *runs, "--format", "json", "--resamples", "50"])
        assert res.exit_code == 0, res.output
        data = json.loads(res.stdout)
        assert [r["arm"] for r in data["rows"]] == ["direct", "align:siglip2/infonce", "audio-only"]
        res = runner.invoke(app, ["compare", *runs[:6], "--resamples", "50", "--split", "dev", "--baseline", "direct"],
                            env={"COLUMNS": "250"})
        assert res.exit_code == 0 and "direct-s{1,2,3}" in res.stdout and "WER dev" in res.stdout
        res = runner.invoke(app, ["compare", *runs, str(tmp_path / "notes.md")])
        assert isinstance(res.exception, InputError) and "notes.md" in res.exception.message
        res = runner.invoke(app, ["compare", "--help"], env={"COLUMNS": "200"})
        assert res.exit_code == 0 and "Examples" in res.stdout and "avasr compare runs/*" in res.stdout


def test_compare_never_imports_torch_or_nemo(runs):
    code = textwrap.dedent(f"""
        import sys, types, pathlib, typer
        try:
            import avasr_cli.cli
        except ImportError:
            import avasr_cli
            for k in [k for k in sys.modules if k.startswith("avasr_cli.cli")]:
                del sys.modules[k]
            m = types.ModuleType("avasr_cli.cli")
            m.__path__ = [str(pathlib.Path(avasr_cli.__file__).parent / "cli")]
            sys.modules["avasr_cli.cli"] = m
        from avasr_cli.cli.compare import register
        app = typer.Typer(); register(app); app.callback()(lambda: None)
        app(["compare", *{runs!r}, "--resamples", "50", "--format", "markdown"], standalone_mode=False)
        heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "nemo", "lightning", "transformers"))
        print("HEAVY", heavy, file=sys.stderr)
    """)
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "HEAVY []" in proc.stderr
    assert "| direct |" in proc.stdout
