"""How cost grows with the corpus: prepare → embed-images → align (a few steps) on built-in corpora of
1 k, 10 k and 100 k alignment clips, audio in NeMo tarred shards (``--audio-layout shards``).

    python benchmarks/scale.py [--sizes 1000,10000,100000] [--workers 2] [--align-steps 5]
                               [--out /tmp/avasr-scale] [--json results.json]

Each size gets a fresh ``$AVASR_HOME`` and run directory under ``--out`` (deleted afterwards unless
``--keep``), so nothing is cached between sizes. Each stage is the real CLI in its own process; its wall
time and peak resident memory come from ``os.wait4`` (the process and the children it waited for: the
prepare and DataLoader workers). Disk is the bytes under ``$AVASR_HOME`` and the run directory after the
three stages; files are counted there too, and separately the files the manifests' audio occupies (the
data card's ``audio_files``). The vision encoder is ``tiny-siglip`` (what the CPU can embed 100 k images
with in minutes; a real encoder's cost per image is the throughput ``benchmarks/embed_throughput.py``
measures), and align runs ``--align-steps`` steps of batch 16, so its training part is the same at every
size and what grows is its set-up (reading the manifest, checking the shards, indexing the store).

The last lines are the ratios the scale target is stated in: seconds per clip of prepare, embed-images
and the three stages together, and files per 1 k clips, at the largest size over the smallest; each must
stay within 1.3x (flat). Peak memory is printed per stage with its ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_stage(args: list[str], env: dict, log: Path) -> dict:
    """One CLI stage: wall seconds and peak RSS (MiB) of it and the children it waited for."""
    start = time.perf_counter()
    with open(log, "ab") as fh:
        proc = subprocess.Popen([sys.executable, "-m", "avasr_cli", *args], env=env, stdout=fh, stderr=fh, cwd=ROOT)
        _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(args)} failed (exit {os.waitstatus_to_exitcode(status)}); see {log}")
    return {"seconds": round(seconds, 2), "peak_rss_mib": round(usage.ru_maxrss / 1024, 1)}


def tree(path: Path) -> tuple[int, int]:
    files = size = 0
    for p in path.rglob("*"):
        if p.is_file():
            files += 1
            size += p.stat().st_size
    return files, size


def measure(n: int, out: Path, workers: int, steps: int, keep: bool) -> dict:
    base = out / f"n{n}"
    shutil.rmtree(base, ignore_errors=True)
    home, run = base / "home", base / "run"
    env = {k: v for k, v in os.environ.items() if k not in ("AVASR_RUN_DIR", "AVASR_FAULT")}
    env.update(AVASR_HOME=str(home), HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    log = base / "log.txt"
    base.mkdir(parents=True)
    stages = {
        "prepare": ["-r", str(run), "prepare", "--num-align", str(n), "--num-train", "20", "--num-dev", "10",
                    "--num-test", "10", "--audio-layout", "shards", "--shard-clips", "1000", "--workers", str(workers)],
        "embed-images": ["-r", str(run), "embed-images", "--vision", "tiny-siglip", "--workers", str(workers)],
        "align": ["-r", str(run), "align", "--max-steps", str(steps), "--batch-size", "16", "--workers", str(workers),
                  "--checkpoint-every", str(steps)],
    }
    result: dict = {"clips": n, "stages": {}}
    for name, args in stages.items():
        result["stages"][name] = run_stage(args, env, log)
        print(f"  {n:>7} clips  {name:<13} {result['stages'][name]['seconds']:>8.1f} s  "
              f"{result['stages'][name]['peak_rss_mib']:>7.0f} MiB", flush=True)
    card = json.loads((run / "data" / "data_card.json").read_text())
    files_home, bytes_home = tree(home)
    files_run, bytes_run = tree(run)
    result.update(
        seconds=round(sum(s["seconds"] for s in result["stages"].values()), 2),
        disk_bytes=bytes_home + bytes_run, files=files_home + files_run,
        audio_files_align=card["audio_files"]["align"],
        audio_files_per_1k=round(card["audio_files"]["align"] * 1000 / n, 2),
        files_per_1k=round((files_home + files_run) * 1000 / n, 1),
        hours_align=card["hours"]["align"],
    )
    if not keep:
        shutil.rmtree(base, ignore_errors=True)
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="1000,10000,100000")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--align-steps", type=int, default=5)
    ap.add_argument("--out", default="/tmp/avasr-scale")
    ap.add_argument("--json", default=None, help="also write the results here")
    ap.add_argument("--keep", action="store_true", help="keep each size's AVASR_HOME and run directory")
    a = ap.parse_args()
    sizes = [int(s) for s in a.sizes.split(",")]
    out = Path(a.out)
    results = []
    for n in sizes:
        results.append(measure(n, out, a.workers, a.align_steps, a.keep))
    print()
    print("| clips | hours | prepare s | embed s | align s | total s | ms/clip | peak MiB (prep/embed/align) "
          "| disk MiB | KiB/clip | files/1k | audio files/1k |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        s = r["stages"]
        print(f"| {r['clips']:,} | {r['hours_align']:.1f} | {s['prepare']['seconds']:.1f} | {s['embed-images']['seconds']:.1f} "
              f"| {s['align']['seconds']:.1f} | {r['seconds']:.1f} | {1000 * r['seconds'] / r['clips']:.2f} "
              f"| {s['prepare']['peak_rss_mib']:.0f}/{s['embed-images']['peak_rss_mib']:.0f}/{s['align']['peak_rss_mib']:.0f} "
              f"| {r['disk_bytes'] / 2**20:.0f} | {r['disk_bytes'] / 1024 / r['clips']:.1f} | {r['files_per_1k']} "
              f"| {r['audio_files_per_1k']} |")
    lo, hi = results[0], results[-1]

    def per_clip(r, stage=None):
        return (r["stages"][stage]["seconds"] if stage else r["seconds"]) / r["clips"]

    ratios = {
        "prepare s/clip": per_clip(hi, "prepare") / per_clip(lo, "prepare"),
        "embed-images s/clip": per_clip(hi, "embed-images") / per_clip(lo, "embed-images"),
        "all three s/clip": per_clip(hi) / per_clip(lo),
        "disk bytes/clip": (hi["disk_bytes"] / hi["clips"]) / (lo["disk_bytes"] / lo["clips"]),
        "files per 1k clips": hi["files_per_1k"] / lo["files_per_1k"],
        "audio files per 1k clips": hi["audio_files_per_1k"] / lo["audio_files_per_1k"],
    }
    print()
    print(f"ratios, {hi['clips']:,} clips over {lo['clips']:,} (flat: within 1.3x):")
    for name, value in ratios.items():
        print(f"  {name:<26} {value:.2f}x  {'flat' if value <= 1.3 else 'NOT FLAT'}")
    for stage in ("prepare", "embed-images", "align"):
        print(f"  peak RSS {stage:<17} {hi['stages'][stage]['peak_rss_mib'] / lo['stages'][stage]['peak_rss_mib']:.2f}x")
    if a.json:
        Path(a.json).write_text(json.dumps({"results": results, "ratios": ratios}, indent=1))


if __name__ == "__main__":
    main()
