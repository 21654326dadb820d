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
        files = tree(home)[0] + (tree(run)[0] if run.exists() else 0)  # everything on disk once this stage is done
        result["stages"][name]["files_per_1k"] = round(files * 1000 / n, 2)
        print(f"  {n:>7} clips  {name:<13} {result['stages'][name]['seconds']:>8.1f} s  "
              f"{result['stages'][name]['peak_rss_mib']:>7.0f} MiB  {files:>8} files", flush=True)
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


# Vaani, as its dataset card gives it (assumptions of the extrapolation, not measured here): clips average
# about 6.9 s (the Anantpur config: 118,552 rows in 26.0 GB of 16-bit 16 kHz audio, about 226 h); Hindi is
# about 10 k hours, all of Vaani about 31 k hours, with about 290 k images.
VAANI_CLIP_S = 6.9
TARGETS = {"Hindi (≈ 10 k h)": 10_000, "all of Vaani (≈ 31 k h)": 31_000}


def extrapolate(lo: dict, hi: dict) -> list[str]:
    """Markdown lines: the largest run's per-clip and per-audio-second costs carried to Vaani's sizes,
    prepare's memory by the line through the two sizes' peaks (nothing here is measured at that size)."""
    audio_s = hi["hours_align"] * 3600
    kib_per_s = hi["disk_bytes"] / 1024 / audio_s
    files_per_clip = hi["files"] / hi["clips"]
    rss_slope = (hi["stages"]["prepare"]["peak_rss_mib"] - lo["stages"]["prepare"]["peak_rss_mib"]) / max(
        1, hi["clips"] - lo["clips"])
    s_per_audio_s = hi["stages"]["prepare"]["seconds"] / audio_s
    out = [f"Extrapolated from the {hi['clips']:,}-clip run (its {hi['hours_align']:.2f} h of built-in audio), with "
           f"Vaani's clips at ≈ {VAANI_CLIP_S} s (its card's Anantpur config); nothing below is measured at that size:", ""]
    out.append("| corpus | clips | disk (this layout) | files (this layout) | prepare peak RSS | prepare time (built-in rate, 2 cores) |")
    out.append("|---|---|---|---|---|---|")
    for name, hours in TARGETS.items():
        clips = hours * 3600 / VAANI_CLIP_S
        rss = hi["stages"]["prepare"]["peak_rss_mib"] + rss_slope * (clips - hi["clips"])
        out.append(f"| {name} | {clips / 1e6:.1f} M | {kib_per_s * hours * 3600 / 2**30:.1f} TiB "
                   f"| {files_per_clip * clips / 1e6:.2f} M | {rss / 1024:.1f} GiB "
                   f"| {s_per_audio_s * hours * 3600 / 3600:.0f} h |")
    out += ["", f"Rates used: {kib_per_s:.1f} KiB of disk and {s_per_audio_s * 1000:.1f} ms of prepare per second of "
                f"audio, {files_per_clip:.3f} files per clip, prepare's peak memory {rss_slope * 1024:+.2f} KiB per "
                "clip (the line through the two sizes)."]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="1000,10000,100000")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--align-steps", type=int, default=5)
    ap.add_argument("--out", default="/tmp/avasr-scale")
    ap.add_argument("--json", default=None, help="also write the results here")
    ap.add_argument("--markdown", default=None,
                    help="also write the table, the ratios and a provenance line here (docs/results/scale.md)")
    ap.add_argument("--keep", action="store_true", help="keep each size's AVASR_HOME and run directory")
    a = ap.parse_args()
    sizes = [int(s) for s in a.sizes.split(",")]
    out = Path(a.out)
    results = []
    for n in sizes:
        results.append(measure(n, out, a.workers, a.align_steps, a.keep))
    lines = ["| clips | hours | prepare s | embed s | align s | total s | ms/clip | peak MiB (prep/embed/align) "
             "| disk MiB | KiB/clip | files/1k | audio files/1k |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        s = r["stages"]
        lines.append(
            f"| {r['clips']:,} | {r['hours_align']:.1f} | {s['prepare']['seconds']:.1f} | {s['embed-images']['seconds']:.1f} "
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
    for stage in ("prepare", "embed-images", "align"):
        ratios[f"peak RSS {stage}"] = hi["stages"][stage]["peak_rss_mib"] / lo["stages"][stage]["peak_rss_mib"]
    lines += ["", f"Ratios, {hi['clips']:,} clips over {lo['clips']:,} (target: within 1.3x):", ""]
    lines += [f"* {name}: {value:.2f}x{'' if value <= 1.3 else ' (not flat)'}" for name, value in ratios.items()]
    lines += ["", "Files under $AVASR_HOME and the run directory per 1 k clips after each stage:", "",
              "| clips | " + " | ".join(r["stages"]) + " |", "|---|" + "---|" * len(lo["stages"])]
    lines += [f"| {r['clips']:,} | " + " | ".join(f"{st['files_per_1k']}" for st in r["stages"].values()) + " |"
              for r in results]
    lines += ["", *extrapolate(lo, hi)]
    worst = max(r["files_per_1k"] for r in results)
    lines += ["", f"Files under $AVASR_HOME and the run directory: at most {worst} per 1 k clips "
                  f"(target: at most 10){'' if worst <= 10 else ' — over the target'}."]
    if hi["clips"] > lo["clips"]:  # what grows with the corpus, and what every run has whatever its size
        slope = (hi["files"] - lo["files"]) / (hi["clips"] - lo["clips"])
        lines.append(f"Per 1 k more clips: {1000 * slope:.1f} files (the line through the two sizes); "
                     f"independent of the size: {lo['files'] - slope * lo['clips']:.0f} files (models, "
                     "checkpoints, logs, manifests, indexes).")
    print()
    print("\n".join(lines))
    if a.json:
        Path(a.json).write_text(json.dumps({"results": results, "ratios": ratios}, indent=1))
    if a.markdown:
        sys.path.insert(0, str(ROOT))
        from avasr_cli.env import write_results_markdown

        write_results_markdown(a.markdown, lines, "python benchmarks/scale.py " + " ".join(sys.argv[1:]))


if __name__ == "__main__":
    main()
