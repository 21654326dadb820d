"""Prepare throughput: utterances/s at 1 and 2 worker processes, same corpus, for each source.

    python benchmarks/prepare_throughput.py [--source builtin vaani] [--utterances 2000]

builtin: each setting generates the same built-in corpus (align set only, plus the minimum of one
utterance per transcribed split) into its own temporary AVASR_HOME; the audio must come out byte-identical.

vaani: a Vaani-shaped local snapshot (both datasets, parquet, real column names; ``--seconds`` long clips at
``--sample-rate`` so resampling is exercised) is generated once, then ``prepare --source vaani`` decodes it
into a fresh AVASR_HOME per setting; the manifests must come out identical.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def bench_builtin(args) -> None:
    from avasr_cli.data.builtin import CorpusConfig, generate_corpus

    cfg = CorpusConfig(lang=args.lang, num_align=args.utterances, num_train=1, num_dev=1, num_test=1)
    total = args.utterances + 3
    print(f"[builtin] lang={args.lang} utterances={total}")
    rates, digests = {}, set()
    for workers in args.workers:
        with tempfile.TemporaryDirectory(prefix="avasr-bench-") as home:
            os.environ["AVASR_HOME"] = home
            start = time.perf_counter()
            corpus = generate_corpus(cfg, workers=workers)
            seconds = time.perf_counter() - start
            digest = hashlib.sha256(b"".join((corpus.dir / r["audio"]).read_bytes() for r in corpus.rows))
            digests.add(digest.hexdigest())
            audio_h = sum(r["duration"] for r in corpus.rows) / 3600
            rates[workers] = total / seconds
            print(f"workers={workers}: {seconds:6.2f} s  {rates[workers]:7.1f} utterances/s  "
                  f"{audio_h * 3600 / seconds:6.1f}x real time  ({audio_h:.2f} h of audio)")
    _speedups(rates)
    print("audio identical across worker counts:", len(digests) == 1)


def bench_vaani(args) -> None:
    sys.path.insert(0, str(ROOT / "tests" / "unit"))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from test_vaani import write_snapshot

    from avasr_cli.progress import Reporter
    from avasr_cli.run import RunDir
    from avasr_cli.stages.prepare import PrepareConfig, run_prepare

    train_spk, per = 10, 20
    align_spk = max(1, -(-(args.utterances - train_spk * per) // 45))
    with tempfile.TemporaryDirectory(prefix="avasr-bench-vaani-") as tmp:
        start = time.perf_counter()
        va, tr = write_snapshot(Path(tmp) / "snap", quirks=False, align_speakers=align_spk, align_per_speaker=45,
                                train_speakers=train_spk, train_per_speaker=per, seconds=args.seconds,
                                sr=args.sample_rate)
        size = sum(f.stat().st_size for f in Path(tmp, "snap").rglob("*.parquet")) / 2**20
        print(f"[vaani] generated snapshot in {time.perf_counter() - start:.1f} s ({size:.0f} MiB parquet, "
              f"{args.seconds} s clips at {args.sample_rate} Hz)")
        rates, outputs = {}, set()
        for workers in args.workers:
            os.environ["AVASR_HOME"] = str(Path(tmp) / f"home-{workers}")
            cfg = PrepareConfig(source="vaani", lang="kannada", dataset=str(va), transcribed_dataset=str(tr),
                                workers=workers, shard_size=args.shard_size)
            start = time.perf_counter()
            result = run_prepare(RunDir(Path(tmp) / f"run-{workers}"), cfg, Reporter())
            seconds = time.perf_counter() - start
            n = sum(result.counts.values())
            hours = sum(result.hours.values())
            rates[workers] = n / seconds
            outputs.add(b"".join(Path(result.manifests[s]).read_bytes().replace(result.corpus_dir.encode(), b"ROOT")
                                 for s in sorted(result.manifests)))
            print(f"workers={workers}: {seconds:6.2f} s  {rates[workers]:7.1f} utterances/s  "
                  f"{hours * 3600 / seconds:6.1f}x real time  ({n} utterances, {hours:.2f} h, {result.counts})")
            start = time.perf_counter()
            again = run_prepare(RunDir(Path(tmp) / f"run-{workers}-again"), cfg, Reporter())
            print(f"           second run dir, same cache: {time.perf_counter() - start:.2f} s "
                  f"(reused={again.reused_cache})")
        _speedups(rates)
        print("manifests identical across worker counts:", len(outputs) == 1)


def _speedups(rates: dict[int, float]) -> None:
    if len(rates) > 1:
        base = min(rates)
        for workers in sorted(rates)[1:]:
            print(f"speedup {workers} vs {base} workers: {rates[workers] / rates[base]:.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", nargs="+", default=["builtin", "vaani"], choices=["builtin", "vaani"])
    parser.add_argument("--utterances", type=int, default=2000)
    parser.add_argument("--lang", default="kannada")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--seconds", type=float, default=4.0, help="vaani: clip length")
    parser.add_argument("--sample-rate", type=int, default=44100, help="vaani: source sample rate")
    parser.add_argument("--shard-size", type=int, default=64, help="vaani: rows per shard")
    args = parser.parse_args()
    print(f"cpus={os.cpu_count()} load_avg={os.getloadavg()[0]:.2f}")
    for source in args.source:
        {"builtin": bench_builtin, "vaani": bench_vaani}[source](args)


if __name__ == "__main__":
    main()
