"""``avasr compare`` over run directories built on the fly (run.json + reports/wer-<split>.json)."""

from __future__ import annotations

import contextlib
import csv
import hashlib
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


def align_budget(arm: str, seed: int, **over) -> dict:
    """``stages.align.result.budget`` as ``avasr align`` records it (the same budget for both objectives)."""
    image = arm != "audio-only"
    budget = {"objective": "image" if image else "audio-only", "loss": "infonce" if image else None,
              "vision": "siglip2" if image else None, "max_steps": 500, "steps": 500, "batch_size": 16,
              "accumulate": 1, "world_size": 1, "effective_batch": 16, "samples_per_update": 16, "lr": 0.001,
              "weight_decay": 0.001, "warmup_steps": 30, "schedule": "cosine (warm-up 30)",
              "init": f"tiny (seed {seed}, random init)",  # as the direct arm's finetune records its start
              # the starting encoder is the seeded random init: the same per seed in every arm
              "init_sha256": hashlib.sha256(f"tiny-{seed}".encode()).hexdigest(), "manifest_sha256": "m" * 64,
              "train_pairs": 720, "freeze_layers": 0, "seed": seed, "precision": "32",
              "head_lr": 0.001, "layer_decay": 1.0, "align_layer": 1, "encoder_layers": 2,
              "ssl": None if image else {"mask_prob": 0.5, "block_size": 4, "num_codes": 64}}
    budget.update(over)
    return budget


def make_run(root: Path, name: str, *, arm: str = "direct", seed: int = 0, p_err: float = 0.3,
             manifest_sha: str | None = "a" * 64, splits=("test",), max_steps: int = 1000, hours: float = 2.0,
             tokenizer: str = "t" * 64, utterances: bool = True, vision: str = "siglip2", loss: str = "infonce",
             hours_asked: float | None = None, align: dict | None = None, legacy_align: bool = False,
             finetune: dict | None = None) -> Path:
    """A finished run directory with synthetic per-utterance errors (deterministic in name and seed).

    ``align`` overrides keys of the recorded align budget; ``legacy_align`` writes run.json as align did
    before it recorded a budget (config and a few result fields only; ``align`` then overrides the config);
    ``finetune`` overrides keys of the recorded finetune budget."""
    run = root / name
    (run / "reports").mkdir(parents=True)
    stages: dict = {"prepare": {"config": {"lang": "kannada", "source": "builtin", "seed": 0}, "result": {}}}
    if arm != "direct":
        objective = "audio-only" if arm == "audio-only" else "image"
        acfg = {"objective": objective, "vision": "auto", "loss": loss, "max_steps": 500, "batch_size": 16,
                "accumulate": 1, "lr": 0.001, "weight_decay": 0.001, "warmup_steps": 30, "freeze_layers": 0,
                "init": "auto", "seed": seed}
        ares = {"objective": objective, "vision": None if arm == "audio-only" else vision,
                "loss": None if arm == "audio-only" else loss, "init": f"tiny (seed {seed}, random init)", "steps": 500,
                "batch_size": 16,
                "effective_batch": 16, "world_size": 1}
        if legacy_align:  # then effective_batch meant samples per update: batch × accumulate × world
            acfg.update(align or {})
            ares["effective_batch"] = acfg["batch_size"] * acfg["accumulate"]
        else:
            ares["budget"] = align_budget(arm, seed, **{"vision": ares["vision"], "loss": ares["loss"], **(align or {})})
        stages["align"] = {"config": acfg, "result": ares}
    budget = {"max_steps": max_steps, "batch_size": 8, "effective_batch": 8, "lr": 0.001, "schedule": "cosine",
              "seed": seed, "train_hours": hours, "decoder": "ctc", **(finetune or {})}
    stages["finetune"] = {"config": {"decoder": "ctc", "seed": seed, "init": "auto", "max_steps": max_steps,
                                     "batch_size": 8, "lr": 0.001,
                                     "train_hours": hours if hours_asked is None else hours_asked},
                          "result": {"budget": budget, "tokenizer_sha256": tokenizer,
                                     # as finetune records it: the encoder's source, seed and run dir included
                                     "init": f"tiny (seed {seed}, random init)" if arm == "direct"
                                     else f"{run.resolve()}/align/encoder (tiny, seed {seed})"}}
    stages["evaluate"] = {"config": {"batch_size": 16}, "result": {}, "finished": "2026-12-01T00:00:00+0000"}
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
    assert ao["vision"] is None and ao["loss"] is None  # --loss means nothing to the audio-only objective
    img = res.rows[1]
    assert img["objective"] == "image" and img["vision"] == "siglip2" and img["loss"] == "infonce"
    assert img["budget"] == "1000 × 8" and img["train_hours"] == 2.0
    assert img["init"] == "<run>/align/encoder (tiny, seed *)" and direct["init"] == "tiny (seed *, random init)"
    assert ao["init"].endswith("ao-s1/align/encoder (tiny, seed 1)")  # a single run shows its own
    assert img["delta_wer"] == pytest.approx(img["wer_test"] - direct["wer_test"])
    assert img["ci_low"] <= img["delta_wer"] <= img["ci_high"] and 0 <= img["p_value"] <= 1
    assert img["delta_wer"] < 0  # 25% vs 35% error rate
    assert not any(r["flags"] for r in res.rows)
    assert res.flags == ["audio-only: one seed, so the seed×speaker interval against the baseline covers only the "
                         "baseline's seed-to-seed spread"]
    assert [r["interval"] for r in res.rows] == ["seed×speaker"] * 3


def test_speaker_interval_equals_pooling_seeds_with_matching_seeds(runs):
    """Documented equivalence: the speaker-only interval (errors averaged per utterance over seeds) ==
    concatenating seed i with seed i and resampling speakers."""
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
    assert row["speaker_ci_low"] == pytest.approx(pooled["ci_low"])
    assert row["speaker_ci_high"] == pytest.approx(pooled["ci_high"])
    assert row["speaker_p_value"] == pytest.approx(pooled["p_value"])


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


def test_reports_left_behind_by_a_redone_stage_are_refused(tmp_path):
    """Rerunning prepare (or any stage) drops the later stages' records from run.json but leaves their
    files: reports/ then describe a model and a corpus the run no longer has, and must not be compared."""
    from avasr_cli.run import RunDir

    direct, align = make_run(tmp_path, "direct"), make_run(tmp_path, "align", arm="align")
    RunDir(direct).record_stage("prepare", {"lang": "kannada", "num_align": 20}, {})
    assert set(json.loads((direct / "run.json").read_text())["stages"]) == {"prepare"}
    with pytest.raises(InputError) as exc:
        run_compare(CompareConfig(runs=(str(direct), str(align))))
    assert str(direct) in exc.value.message and "no finished evaluate" in exc.value.message
    assert "avasr -r" in exc.value.hint and "finetune" in exc.value.hint


def test_two_runs_of_one_arm_with_one_seed_are_refused(tmp_path):
    """Two runs of the same settings and the same seed are one training run twice (a repeat, not a second
    seed): averaged as two seeds they would give a standard deviation of 0 and a falsely narrow interval."""
    a, b = make_run(tmp_path, "a", seed=0), make_run(tmp_path, "b", seed=0)
    c = make_run(tmp_path, "c", seed=1)
    with pytest.raises(InputError) as exc:
        run_compare(CompareConfig(runs=(str(a), str(b), str(c))))
    assert "seed 0" in exc.value.message and str(a) in exc.value.message and str(b) in exc.value.message
    res = run_compare(CompareConfig(runs=(str(a), str(c)), n_resamples=20))
    assert res.rows[0]["seeds"] == [0, 1]


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
    (run / "run.json").write_text(json.dumps({"schema_version": 1, "stages": {"evaluate": {"config": {}, "result": {}}}}))
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


# ------------------------------------------------------------------- seeds: two-level bootstrap (#12.5)
def _averaged(paths: list[Path]) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Per-utterance word errors averaged over runs (what the speaker-only bootstrap pairs)."""
    reps = [_report(p)["utterances"] for p in paths]
    err = np.mean([[u["word_errors"] for u in r] for r in reps], axis=0)
    return err, np.array([u["ref_words"] for u in reps[0]], dtype=float), [u["speaker"] for u in reps[0]]


def test_seed_variance_widens_the_interval(tmp_path):
    """Training seeds that differ far more than test speakers do (and not alike in both arms): the
    seed×speaker interval must be wider than the speaker-only one (which sees only the seed-averaged
    systems)."""
    direct = [make_run(tmp_path, f"direct-s{s}", seed=s, p_err=p) for s, p in ((1, 0.15), (2, 0.35), (3, 0.55))]
    image = [make_run(tmp_path, f"img-s{s}", arm="image", seed=s, p_err=p) for s, p in ((1, 0.5), (2, 0.1), (3, 0.3))]
    res = run_compare(CompareConfig(runs=tuple(map(str, direct + image)), n_resamples=400, seed=2))
    row = res.rows[1]
    ea, n, spk = _averaged(direct)
    eb, _, _ = _averaged(image)
    one = paired_bootstrap(ea, n, eb, n, spk, n_resamples=400, seed=2)
    assert row["ci_high"] - row["ci_low"] > 2 * (one["ci_high"] - one["ci_low"])
    assert row["interval"] == "seed×speaker" and res.rows[0]["interval"] == "seed×speaker"
    assert row["seed_pairing"] == "paired"
    assert (row["speaker_ci_low"], row["speaker_ci_high"], row["speaker_p_value"]) == pytest.approx(
        (one["ci_low"], one["ci_high"], one["p_value"]))
    assert row["ci_low"] <= row["delta_wer"] <= row["ci_high"] and row["p_value"] > one["p_value"]
    assert row["delta_wer"] == pytest.approx(np.mean([_report(p)["wer"] for p in image])
                                             - np.mean([_report(p)["wer"] for p in direct]))


def test_seed_effects_both_arms_share_cancel_when_seeds_are_paired(tmp_path):
    """Seed N is hard or easy for both arms alike (same init and data order): paired by seed number, the
    interval follows the per-seed differences, all about −15 pp, and excludes 0."""
    direct = [make_run(tmp_path, f"direct-s{s}", seed=s, p_err=p) for s, p in ((1, 0.2), (2, 0.4), (3, 0.6))]
    image = [make_run(tmp_path, f"img-s{s}", arm="image", seed=s, p_err=p) for s, p in ((1, 0.05), (2, 0.25), (3, 0.45))]
    other = [make_run(tmp_path, f"ao-s{s}", arm="audio-only", seed=s, p_err=p) for s, p in ((7, 0.05), (8, 0.25), (9, 0.45))]
    res = run_compare(CompareConfig(runs=tuple(map(str, direct + image + other)), n_resamples=500))
    img, ao = res.rows[1], res.rows[2]
    assert img["seed_pairing"] == "paired" and ao["seed_pairing"] == "independent"
    assert all(d["delta"] < 0 for d in img["seed_deltas"]) and img["ci_high"] < 0
    assert ao["seed_deltas"] == [] and ao["ci_high"] - ao["ci_low"] > 2 * (img["ci_high"] - img["ci_low"])
    assert any(n.startswith("audio-only: seed numbers differ") for n in res.flags)


def test_one_seed_per_arm_is_the_speaker_bootstrap(tmp_path):
    a = make_run(tmp_path, "direct", seed=1, p_err=0.35)
    b = make_run(tmp_path, "img", arm="image", seed=1, p_err=0.25)
    res = run_compare(CompareConfig(runs=(str(a), str(b)), n_resamples=300, seed=5))
    ea, n, spk = _averaged([a])
    eb, _, _ = _averaged([b])
    one = paired_bootstrap(ea, n, eb, n, spk, n_resamples=300, seed=5)
    row = res.rows[1]
    assert row["interval"] == "speaker"
    assert (row["delta_wer"], row["ci_low"], row["ci_high"], row["p_value"]) == (
        one["delta"], one["ci_low"], one["ci_high"], one["p_value"])  # the same numbers, not just close
    assert (row["wer_ci_low"], row["wer_ci_high"]) == (one["wer_ci_low"], one["wer_ci_high"])


def test_per_seed_deltas_for_shared_seeds(tmp_path):
    direct = [make_run(tmp_path, f"direct-s{s}", seed=s, p_err=0.35) for s in (1, 2)]
    image = [make_run(tmp_path, f"img-s{s}", arm="image", seed=s, p_err=0.25) for s in (1, 2, 3)]
    res = run_compare(CompareConfig(runs=tuple(map(str, direct + image)), n_resamples=100))
    row = res.rows[1]
    want = [{"seed": s, "delta": pytest.approx(_report(i)["wer"] - _report(d)["wer"])}
            for s, d, i in zip((1, 2), direct, image)]
    assert row["seed_deltas"] == want and res.rows[0]["seed_deltas"] == []
    from avasr_cli.report.table import render_text

    md = render_text(res, "markdown")
    assert "Δ per seed" in md and f"s1 {100 * want[0]['delta'].expected:+.2f}" in md
    assert "seed×speaker" in md
    data = json.loads(render_text(res, "json"))
    assert [d["seed"] for d in data["rows"][1]["seed_deltas"]] == [1, 2]


# ------------------------------------------------------------ continued-pretraining budgets (#12.6)
def test_align_budget_differences_are_flagged_by_name(tmp_path):
    runs = [make_run(tmp_path, f"direct-s{s}", seed=s) for s in (1, 2)]
    runs += [make_run(tmp_path, f"ao-s{s}", arm="audio-only", seed=s) for s in (1, 2)]
    longer = {"max_steps": 1000, "steps": 1000, "lr": 0.002, "manifest_sha256": "n" * 64, "accumulate": 2,
              "samples_per_update": 32}
    runs += [make_run(tmp_path, "img-s1", arm="image", seed=1, align=longer),
             make_run(tmp_path, "img-s2", arm="image", seed=2, align={**longer, "init_sha256": "f" * 64})]
    res = run_compare(CompareConfig(runs=tuple(map(str, runs)), n_resamples=50))
    by_arm = {r["arm"]: r for r in res.rows}
    img, ao = by_arm["align:siglip2/infonce"], by_arm["audio-only"]
    assert img["flags"] == ["align-budget"] and ao["flags"] == [] and by_arm["direct"]["flags"] == []
    diffs = {(d["key"], d.get("seed")): (d["value"], d["reference"]) for d in img["align_budget_diffs"]}
    assert diffs == {("max_steps", None): (1000, 500), ("lr", None): (0.002, 0.001),
                     ("samples_per_update", None): (32, 16), ("manifest_sha256", None): ("n" * 64, "m" * 64),
                     ("init_sha256", 2): ("f" * 64, align_budget("image", 2)["init_sha256"])}
    assert ao["align_budget_diffs"] == [] and by_arm["direct"]["align_budget_diffs"] == []
    note = next(n for n in res.flags if n.startswith("[align-budget]"))
    for text in ("max_steps 1000 vs 500", "lr 0.002 vs 0.001", "samples_per_update 32 vs 16",
                 "manifest_sha256 nnnnnnnnnnnn vs mmmmmmmmmmmm", "init_sha256 (seed 2) ffffffffffff vs", "audio-only"):
        assert text in note, text

    with _compare_app() as app:
        from typer.testing import CliRunner

        out = CliRunner().invoke(app, ["compare", *map(str, runs), "--resamples", "20"], env={"COLUMNS": "300"})
        assert out.exit_code == 0, out.output
        assert "align-budget" in out.stdout and "max_steps 1000 vs 500" in out.stdout
        out = CliRunner().invoke(app, ["compare", *map(str, runs), "--resamples", "20", "--format", "json"])
        rows = {r["arm"]: r for r in json.loads(out.stdout)["rows"]}
        assert {d["key"] for d in rows["align:siglip2/infonce"]["align_budget_diffs"]} == {
            "max_steps", "lr", "samples_per_update", "manifest_sha256", "init_sha256"}


def test_older_align_records_are_compared_from_their_config(tmp_path):
    ao = make_run(tmp_path, "ao", arm="audio-only", seed=1, legacy_align=True)
    img = make_run(tmp_path, "img", arm="image", seed=1, legacy_align=True,
                   align={"lr": 0.005, "warmup_steps": 10, "accumulate": 4})
    res = run_compare(CompareConfig(runs=(str(ao), str(img)), baseline="audio-only", n_resamples=20))
    row = res.rows[1]
    assert row["flags"] == ["align-budget"]
    assert {d["key"]: (d["value"], d["reference"]) for d in row["align_budget_diffs"]} == {
        "lr": (0.005, 0.001), "warmup_steps": (10, 30), "samples_per_update": (64, 16)}
    assert any("not compared" in n and "manifest_sha256" in n for n in res.flags)


def test_runs_with_different_align_settings_are_not_averaged(tmp_path):
    runs = [make_run(tmp_path, "img-a", arm="image", seed=1), make_run(tmp_path, "img-b", arm="image", seed=2),
            make_run(tmp_path, "img-lr", arm="image", seed=3, align={"lr": 0.01})]
    res = run_compare(CompareConfig(runs=tuple(map(str, runs)), n_resamples=20))
    assert [r["names"] for r in res.rows] == [["img-a", "img-b"], ["img-lr"]]
    assert "lr" in res.rows[1]["label"]


def test_intermediate_align_layer_shows_in_the_label_and_is_flagged(tmp_path):
    direct = make_run(tmp_path, "direct")
    ao = make_run(tmp_path, "ao", arm="audio-only")
    mid = make_run(tmp_path, "mid", arm="align:siglip2/infonce")
    record = json.loads((mid / "run.json").read_text())
    record["stages"]["align"]["result"]["budget"]["align_layer"] = 0
    (mid / "run.json").write_text(json.dumps(record))
    res = run_compare(CompareConfig(runs=(str(direct), str(ao), str(mid)), n_resamples=50))
    row = next(r for r in res.rows if r["runs"] == [str(mid)])
    assert row["arm"].endswith("@L0") and "align-budget" in row["flags"]
    assert {"key": "align_layer", "value": 0, "reference": 1} in row["align_budget_diffs"]


def test_a_baseline_from_another_start_encoder_is_flagged(tmp_path):
    """A random-init direct run against arms that began from a pretrained encoder (e.g. `--init auto` before
    and after `avasr pretrain`) is not a fair baseline."""
    direct = make_run(tmp_path, "direct")
    record = json.loads((direct / "run.json").read_text())
    record["stages"]["finetune"]["result"]["init"] = "builtin-ssl-kannada (NEST/BEST-RQ ...)"
    (direct / "run.json").write_text(json.dumps(record))
    ao = make_run(tmp_path, "ao", arm="audio-only")
    res = run_compare(CompareConfig(runs=(str(direct), str(ao)), n_resamples=50))
    row = next(r for r in res.rows if r["runs"] == [str(ao)])
    assert "start" in row["flags"] and any(n.startswith("[start]") for n in res.flags)


@pytest.mark.parametrize("key,value", [("weight_decay", 0.1), ("head_lr", 0.004), ("layer_decay", 0.8)])
def test_finetune_optimiser_differences_are_flagged_by_name(tmp_path, key, value):
    base = {"weight_decay": 0.001, "head_lr": 0.002, "layer_decay": 1.0}
    runs = [make_run(tmp_path, f"direct-s{s}", seed=s, finetune=base) for s in (1, 2)]
    runs += [make_run(tmp_path, f"ao-s{s}", arm="audio-only", seed=s, finetune={**base, key: value}) for s in (1, 2)]
    res = run_compare(CompareConfig(runs=tuple(map(str, runs)), n_resamples=50))
    by_arm = {r["arm"]: r for r in res.rows}
    assert by_arm["audio-only"]["flags"] == ["budget"] and by_arm["direct"]["flags"] == []
    note = next(n for n in res.flags if n.startswith("[budget]"))
    assert f"{key} {value}" in note, note


# ------------------------------------------------------------------------------------ issue 20: controls
def _set(run: Path, path: tuple, value) -> None:
    record = json.loads((run / "run.json").read_text())
    node = record
    for key in path[:-1]:
        node = node.setdefault(key, {})
    node[path[-1]] = value
    (run / "run.json").write_text(json.dumps(record))


def test_shuffled_and_equal_compute_arms_are_labelled_as_such(tmp_path):
    paths = [make_run(tmp_path, "direct", max_steps=1000), make_run(tmp_path, "img", arm="image", max_steps=1000),
             make_run(tmp_path, "shuf", arm="image", max_steps=1000, align={"pairs": "shuffled"}),
             make_run(tmp_path, "equal", max_steps=1500)]  # 1000 + the align arms' 500 steps
    res = run_compare(CompareConfig(runs=tuple(map(str, paths)), n_resamples=50))
    labels = [r["label"] for r in res.rows]
    assert res.baseline == "direct" and labels[0] == "direct"  # the direct row fine-tuned like the others
    assert "align:siglip2/infonce+shuffled" in labels and "align:siglip2/infonce" in labels
    equal = next(r for r in res.rows if r.get("equal_compute"))
    assert equal["label"] == "direct (equal compute: +500 steps)" and "budget" not in equal["flags"]
    assert any(n.startswith("[equal-compute]") for n in res.flags)
    shuffled = next(r for r in res.rows if r["label"].endswith("+shuffled"))
    assert "align-budget" not in shuffled["flags"]  # the pairs are the arm, not a budget difference
    # a direct arm with another step count that is not the align steps stays a flagged budget difference
    other = make_run(tmp_path, "odd", max_steps=1200)
    res = run_compare(CompareConfig(runs=tuple(map(str, [*paths, other])), n_resamples=50))
    odd = next(r for r in res.rows if r["names"] == ["odd"])
    assert "budget" in odd["flags"] and not odd.get("equal_compute")


ENV = {"avasr": "0.1.0", "avasr_commit": "a" * 40, "python": "3.11.7", "torch": "2.13.0+cpu", "nemo_toolkit": "3.0.0",
       "lightning": "2.4.0", "cpu": "AMD EPYC", "cpu_capability": "AVX2", "torch_threads": 2, "gpus": None,
       "deterministic": True}


def test_compare_flags_arms_whose_environments_differ(tmp_path):
    direct, img = make_run(tmp_path, "direct"), make_run(tmp_path, "img", arm="image")
    for run in (direct, img):
        _set(run, ("stages", "finetune", "environment"), ENV)
    res = run_compare(CompareConfig(runs=(str(direct), str(img)), n_resamples=50))
    assert "env" not in res.rows[1]["flags"]
    _set(img, ("stages", "finetune", "environment"), dict(ENV, cpu="Intel Xeon", cpu_capability="AVX512"))
    res = run_compare(CompareConfig(runs=(str(direct), str(img)), n_resamples=50))
    assert "env" in res.rows[1]["flags"]
    note = next(n for n in res.flags if n.startswith("[env]"))
    assert "cpu Intel Xeon vs AMD EPYC" in note and "cpu_capability AVX512 vs AVX2" in note
    from avasr_cli.report.table import render_text

    text = render_text(res, "markdown")
    assert "Provenance (from the runs' records)" in text and "AMD EPYC / Intel Xeon" in text


def test_intervals_resample_the_reports_unit(tmp_path):
    paths = [make_run(tmp_path, "direct"), make_run(tmp_path, "img", arm="image", p_err=0.2)]
    for p in paths:  # a built-in report: voices hold two speakers each
        report = _report(p)
        report["group_unit"] = "voice"
        for u in report["utterances"]:
            u["group"] = "v" + u["speaker"][-1] if int(u["speaker"][-1]) % 2 else "v" + str(int(u["speaker"][-1]) + 1)
        (p / "reports" / "wer-test.json").write_text(json.dumps(report))
    res = run_compare(CompareConfig(runs=tuple(map(str, paths)), n_resamples=300))
    assert res.rows[1]["interval"] == "voice"
    # the same draw over 4 voices is wider than over 8 speakers
    by_speaker = paired_bootstrap([u["word_errors"] for u in _report(paths[0])["utterances"]], REF_WORDS,
                                  [u["word_errors"] for u in _report(paths[1])["utterances"]], REF_WORDS,
                                  SPEAKERS, n_resamples=300)
    assert res.rows[1]["ci_high"] - res.rows[1]["ci_low"] != by_speaker["ci_high"] - by_speaker["ci_low"]
    from avasr_cli.report.table import render_text

    assert "test voices resampled" in render_text(res, "markdown")


def test_by_word_splits_errors_into_word_classes(tmp_path):
    classes = {"one": "count", "red": "colour", "ball": "shape", "ravi": "name", "drew": "verb"}
    refs = ["one red ball", "ravi drew one red ball", "ravi drew"] * 8 + ["one ball"] * 16
    hyps = {"direct": ["one rid ball", "ravi drew one rid bal", "rav drew"] * 8 + ["one bal"] * 16,
            "img": ["one red ball", "rav drew one red ball", "rav drew"] * 8 + ["one ball"] * 16}
    paths = []
    for name, arm in (("direct", "direct"), ("img", "image")):
        run = make_run(tmp_path, name, arm=arm)
        report = _report(run)
        report["utterances"] = [dict(u, ref=r, hyp=h) for u, r, h in zip(report["utterances"], refs, hyps[name])]
        (run / "reports" / "wer-test.json").write_text(json.dumps(report))
        (run / "data").mkdir()
        (run / "data" / "data_card.json").write_text(json.dumps({"word_classes": classes}))
        paths.append(str(run))
    res = run_compare(CompareConfig(runs=tuple(paths), n_resamples=200, by_word=True))
    cls = {c["class"]: c for c in res.by_word["classes"]}
    assert cls["colour"]["baseline_error_rate"] == 1.0 and cls["colour"]["rows"][0]["error_rate"] == 0.0
    assert cls["shape"]["occurrences"] == 32 and cls["shape"]["baseline_error_rate"] == 24 / 32
    assert cls["name"]["baseline_error_rate"] == 0.5 and cls["name"]["rows"][0]["delta"] == 0.5  # worse on names
    assert cls["depicted"]["rows"][0]["delta"] < 0 and cls["depicted"]["rows"][0]["ci_high"] <= 0
    assert cls["not depicted"]["depicted"] is False
    words = {w["word"]: w for w in res.by_word["changed"][0]["words"]}
    assert words["red"]["delta"] == -1.0 and words["red"]["class"] == "colour"
    from avasr_cli.report.table import render_text

    text = render_text(res, "markdown")
    assert "| **depicted** | yes |" in text and "Words whose error rate moved most" in text


def test_compare_tells_apart_two_cpus_that_share_a_name_and_an_instruction_set(tmp_path):
    """A VM calls Zen 4 and Zen 5 alike "AMD EPYC", and both run torch's AVX512 kernels: the quickstart's
    table changed between two such machines while its record said the same CPU. family/model/stepping and
    the hash of the feature flags are recorded, compared and shown."""
    zen4 = dict(ENV, cpu_capability="AVX512", cpu_id="family 25 model 17 stepping 1", cpu_flags="aaaaaaaaaaaa")
    zen5 = dict(zen4, cpu_id="family 26 model 2 stepping 0", cpu_flags="bbbbbbbbbbbb")
    direct, img = make_run(tmp_path, "direct"), make_run(tmp_path, "img", arm="image")
    _set(direct, ("stages", "finetune", "environment"), zen4)
    _set(img, ("stages", "finetune", "environment"), zen5)
    res = run_compare(CompareConfig(runs=(str(direct), str(img)), n_resamples=50))
    assert "env" in res.rows[1]["flags"]
    note = next(n for n in res.flags if n.startswith("[env]"))
    assert "cpu_id family 26 model 2 stepping 0 vs family 25 model 17 stepping 1" in note
    assert "cpu_flags bbbbbbbbbbbb vs aaaaaaaaaaaa" in note and "cpu AMD" not in note
    from avasr_cli.report.table import render_text

    text = render_text(res, "markdown")
    assert "(AVX512; family 25 model 17 stepping 1 / family 26 model 2 stepping 0, flags aaaaaaaaaaaa / bbbbbbbbbbbb)" in text


def test_this_machines_cpu_identity_is_recorded():
    from avasr_cli.env import environment

    env = environment()
    with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
        text = fh.read()
    if "cpu family" in text:
        assert env["cpu_id"].startswith("family ") and " model " in env["cpu_id"]
    if "\nflags" in text or text.startswith("flags"):
        assert len(env["cpu_flags"]) == 12 and int(env["cpu_flags"], 16) >= 0
