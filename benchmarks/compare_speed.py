"""How fast is ``avasr compare`` on a large synthetic case?

Builds 50 run directories (10 arms × 5 seeds, so every comparison takes the two-level seed×speaker
bootstrap; align arms record a continued-pretraining budget) whose test reports each hold 10,000
utterances from 400 speakers, in a temporary directory, then times :func:`run_compare` with 1,000
bootstrap resamples plus rendering (in process, best of ``--repeat``; of that, the statistics alone), and
the whole command in a fresh interpreter (imports included), and prints the wall times.

    python benchmarks/compare_speed.py [--runs 50] [--utts 10000] [--resamples 1000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
WORDS = ["ನಮ್ಮ", "ಊರಿನ", "ಆಪಿಸ್", "ಹತ್ತಿರ", "ಇದೆ", "ಮನೆ", "ಶಾಲೆ", "ದೊಡ್ಡ", "ಮರ", "ಹೋಗಿದ್ದೆ"]


def build(root: Path, n_runs: int, n_utts: int, seeds_per_arm: int = 5) -> list[str]:
    rng = np.random.default_rng(0)
    n_speakers = 400
    speakers = [f"spk{int(s):04d}" for s in rng.integers(0, n_speakers, n_utts)]
    ref_words = rng.integers(3, 25, n_utts)
    refs = [" ".join(WORDS[j] for j in rng.integers(0, len(WORDS), n)) for n in ref_words]
    ref_chars = np.array([len(r) for r in refs])
    paths = []
    n_arms = max(1, n_runs // seeds_per_arm)
    for i in range(n_runs):
        arm, seed = i % n_arms, i // n_arms
        p_err = 0.30 - 0.01 * arm + 0.005 * rng.standard_normal()
        errs = rng.binomial(ref_words, max(0.01, p_err))
        cerrs = rng.binomial(ref_chars, max(0.005, p_err / 2))
        utts = [{"utt_id": f"utt{u:05d}", "speaker": speakers[u], "ref": refs[u], "hyp": refs[u],
                 "ref_words": int(ref_words[u]), "word_errors": int(errs[u]), "sub": int(errs[u]), "ins": 0, "del": 0,
                 "ref_chars": int(ref_chars[u]), "char_errors": int(cerrs[u])} for u in range(n_utts)]
        report = {"normalization": "avasr-indic-v1", "num_utterances": n_utts,
                  "wer": float(errs.sum() / ref_words.sum()), "cer": float(cerrs.sum() / ref_chars.sum()),
                  "utterances": utts, "breakdown": {}, "top_confusions": [], "split": "test",
                  "manifest": "data/test.jsonl", "manifest_sha256": "0" * 64, "checkpoint": "finetune/model.nemo",
                  "checkpoint_sha256": "1" * 64}
        stages = {"prepare": {"config": {"lang": "kannada", "source": "builtin", "seed": 0}, "result": {}}}
        if arm:
            objective = "audio-only" if arm == 1 else "image"
            budget = {"objective": objective, "max_steps": 1000, "steps": 1000, "batch_size": 32, "accumulate": 1,
                      "world_size": 1, "effective_batch": 32, "samples_per_update": 32, "lr": 1e-3,
                      "weight_decay": 1e-3, "warmup_steps": 30, "schedule": "cosine (warm-up 30)", "init": "random",
                      "init_sha256": f"{seed:064d}", "manifest_sha256": "3" * 64, "freeze_layers": 0, "seed": seed}
            stages["align"] = {"config": {"objective": objective, "vision": f"vision{arm}",
                                          "loss": "infonce", "max_steps": 1000, "batch_size": 32, "init": "random"},
                               "result": {"budget": budget}}
        budget = {"max_steps": 2000, "batch_size": 16, "effective_batch": 16, "lr": 1e-3, "schedule": "cosine",
                  "seed": seed, "train_hours": 10.0, "decoder": "ctc"}
        stages["finetune"] = {"config": {"decoder": "ctc", "seed": seed, "init": "auto", "max_steps": 2000,
                                         "batch_size": 16, "lr": 1e-3},
                              "result": {"budget": budget, "tokenizer_sha256": "2" * 64, "init": "align" if arm else "random"}}
        run = root / f"arm{arm:02d}-seed{seed}"
        (run / "reports").mkdir(parents=True)
        (run / "run.json").write_text(json.dumps({"schema_version": 1, "stages": stages}))
        (run / "reports" / "wer-test.json").write_text(json.dumps(report, ensure_ascii=False))
        paths.append(str(run))
    return paths


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=50)
    ap.add_argument("--utts", type=int, default=10_000)
    ap.add_argument("--resamples", type=int, default=1000)
    ap.add_argument("--repeat", type=int, default=3, help="in-process timings: the best of this many")
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT))
    from avasr_cli.report import bootstrap
    from avasr_cli.report.table import render_text, to_rich
    from avasr_cli.stages.compare import CompareConfig, run_compare

    stats_seconds: list[float] = []
    depth = [0]

    def timed(fn):  # the time spent in the bootstrap functions (outermost calls), per call of run_compare
        def inner(*a, **k):
            t = time.perf_counter()
            depth[0] += 1
            try:
                return fn(*a, **k)
            finally:
                depth[0] -= 1
                if depth[0] == 0:
                    stats_seconds.append(time.perf_counter() - t)
        return inner

    for name in ("paired_bootstrap_many", "seed_speaker_bootstrap"):
        if hasattr(bootstrap, name):
            setattr(bootstrap, name, timed(getattr(bootstrap, name)))

    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        paths = build(Path(tmp), args.runs, args.utts)
        t_build = time.perf_counter() - t0
        size = sum(f.stat().st_size for f in Path(tmp).rglob("*.json")) / 2**20

        from rich.console import Console

        t_compare, t_stats = [], []
        for _ in range(max(1, args.repeat)):
            stats_seconds.clear()
            t0 = time.perf_counter()
            result = run_compare(CompareConfig(runs=tuple(paths), n_resamples=args.resamples))
            with open(os.devnull, "w") as null:
                Console(file=null, width=200).print(to_rich(result))
            render_text(result, "json")
            t_compare.append(time.perf_counter() - t0)
            t_stats.append(sum(stats_seconds))

        code = ("import sys, typer\n"
                "try:\n    from avasr_cli.cli import app\n"
                "except ImportError:\n"
                "    import types, pathlib, avasr_cli\n"
                "    [sys.modules.pop(k) for k in list(sys.modules) if k.startswith('avasr_cli.cli')]\n"
                "    m = types.ModuleType('avasr_cli.cli'); m.__path__ = [str(pathlib.Path(avasr_cli.__file__).parent / 'cli')]\n"
                "    sys.modules['avasr_cli.cli'] = m\n"
                "    from avasr_cli.cli.compare import register\n"
                "    app = typer.Typer(); register(app); app.callback()(lambda: None)\n"
                "app(['compare', *sys.argv[1:]], standalone_mode=False)\n"
                "assert 'torch' not in sys.modules and 'nemo' not in sys.modules\n")
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, "-c", code, *paths, "--format", "json", "--resamples", str(args.resamples)],
                              cwd=ROOT, capture_output=True, text=True)
        t_cli = time.perf_counter() - t0
        if proc.returncode != 0:
            print(proc.stderr, file=sys.stderr)
            raise SystemExit(f"the compare command failed (exit {proc.returncode})")
        rows = json.loads(proc.stdout)["rows"]

    print(f"synthetic case: {args.runs} runs x {args.utts} utterances ({size:.0f} MiB of reports, built in {t_build:.1f} s), "
          f"{args.resamples} resamples, {len(result.rows)} rows")
    kinds = sorted({str(r.get("interval")) for r in result.rows if not r["baseline"]})
    print(f"run_compare + rendering (in process, best of {len(t_compare)}): {min(t_compare):.2f} s, of which "
          f"bootstrap {min(t_stats):.2f} s (intervals: {', '.join(kinds)})")
    print(f"whole command in a fresh interpreter:  {t_cli:.2f} s  ({len(rows)} rows, torch/nemo not imported)")


if __name__ == "__main__":
    main()
