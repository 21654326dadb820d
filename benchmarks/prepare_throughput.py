"""Built-in corpus generation throughput: utterances/s at 1 and 2 worker processes, same corpus.

    python benchmarks/prepare_throughput.py [--utterances 2000]

Each setting generates the same corpus (align set only, plus the minimum of one utterance per
transcribed split) into its own temporary AVASR_HOME; the audio must come out byte-identical.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--utterances", type=int, default=2000)
    parser.add_argument("--lang", default="kannada")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()

    from avasr_cli.data.builtin import CorpusConfig, generate_corpus

    cfg = CorpusConfig(lang=args.lang, num_align=args.utterances, num_train=1, num_dev=1, num_test=1)
    total = args.utterances + 3
    print(f"cpus={os.cpu_count()} load_avg={os.getloadavg()[0]:.2f} lang={args.lang} utterances={total}")
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
    if len(rates) > 1:
        base = min(rates)
        for workers in sorted(rates)[1:]:
            print(f"speedup {workers} vs {base} workers: {rates[workers] / rates[base]:.2f}x")
    print("audio identical across worker counts:", len(digests) == 1)


if __name__ == "__main__":
    main()
