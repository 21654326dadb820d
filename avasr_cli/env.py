"""The stack a stage ran on, recorded with every stage (``run.json``) so that two tables whose figures
differ can be told apart, and the switches that make a run repeatable.

What is recorded (:func:`environment`): avasr's version and, when it runs from a git checkout, the
commit and whether the checkout had uncommitted changes; the versions of Python, torch, NeMo, Lightning,
transformers and numpy; the machine (CPU model, its family/model/stepping and a short hash of its feature
flags, the instruction set torch's kernels use, cores, torch's thread count; GPU names when CUDA is in use);
whether deterministic algorithms were on. A virtual machine often names its CPU only "AMD EPYC": two
generations of it that both have AVX512 (Zen 4, Zen 5) differ in family/model and in flags, and oneDNN
picks kernels by the flags, so those two fields are what tells such machines apart.

Reproducibility (:func:`make_deterministic`): the same commit, inputs, seed and machine give the same
weights, hypotheses and WER. Training stages seed Python, numpy and torch (and DataLoader workers), and
ask torch for deterministic algorithms (warn-only: on a GPU a few kernels, e.g. CUDA's CTC loss backward,
have no deterministic version; torch then warns instead of stopping the run). What is *not* the same
from one machine to the next: float results of the same code on another CPU model or instruction set
(oneDNN and BLAS pick different kernels, whose sums round differently), or with another thread count.
Over hundreds of training steps such differences grow like a change of seed; :mod:`compare` flags runs
whose recorded environments differ.
"""

from __future__ import annotations

import functools
import os
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path

# what compare holds equal between arms (avasr_commit compared only when both runs know it)
COMPARED = ("avasr", "avasr_commit", "python", "torch", "nemo_toolkit", "lightning", "cpu", "cpu_id", "cpu_flags",
            "cpu_capability", "torch_threads", "gpus", "deterministic")
_PACKAGES = ("torch", "nemo_toolkit", "lightning", "transformers", "numpy")


@functools.lru_cache(maxsize=None)
def _git(root: str) -> tuple[str | None, bool | None]:
    """(commit, dirty) of the checkout avasr runs from, or (None, None) outside one."""
    if not (Path(root) / ".git").exists():
        return None, None
    try:
        commit = subprocess.run(["git", "-C", root, "rev-parse", "HEAD"], capture_output=True, text=True,
                                timeout=10).stdout.strip() or None
        status = subprocess.run(["git", "-C", root, "status", "--porcelain", "--untracked-files=no", "--",
                                 "avasr_cli"], capture_output=True, text=True, timeout=10)
        return commit, (bool(status.stdout.strip()) if status.returncode == 0 else None)
    except (OSError, subprocess.SubprocessError):
        return None, None


@functools.lru_cache(maxsize=None)
def cpu_model() -> str:
    return _cpuinfo_fields().get("model name") or platform.processor() or platform.machine()


@functools.lru_cache(maxsize=None)
def _cpuinfo_fields() -> dict[str, str]:
    """The first processor's fields in /proc/cpuinfo (empty where there is none)."""
    out: dict[str, str] = {}
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return out
    for line in text.splitlines():
        if not line.strip():
            if out:
                break  # the first processor's block only
            continue
        key, _, value = line.partition(":")
        out.setdefault(key.strip().lower(), value.strip())
    return out


@functools.lru_cache(maxsize=None)
def cpu_identity() -> tuple[str | None, str | None]:
    """(``family F model M stepping S``, 12 hex of the sha256 of the sorted feature flags), or None for a
    field /proc/cpuinfo does not give."""
    import hashlib

    info = _cpuinfo_fields()
    parts = [f"{k} {info[k]}" for k in ("cpu family", "model", "stepping") if info.get(k)]
    ident = " ".join(parts).replace("cpu family", "family") or None
    flags = info.get("flags") or info.get("features")  # x86 / arm64
    digest = hashlib.sha256(" ".join(sorted(flags.split())).encode()).hexdigest()[:12] if flags else None
    return ident, digest


def environment() -> dict:
    """The stack and machine of this process (see the module docstring). Cheap: torch is asked for its
    threads and kernels only when the stage has imported it already."""
    import avasr_cli

    commit, dirty = _git(str(Path(avasr_cli.__file__).resolve().parent.parent))
    env: dict = {"avasr": avasr_cli.__version__, "avasr_commit": commit, "avasr_dirty": dirty,
                 "python": platform.python_version(), "platform": platform.platform(terse=True)}
    for dist in _PACKAGES:
        try:
            env[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            env[dist] = None
    cpu_id, cpu_flags = cpu_identity()
    env.update(cpu=cpu_model(), cpu_id=cpu_id, cpu_flags=cpu_flags, cores=os.cpu_count(), cpu_capability=None,
               torch_threads=None, gpus=None, deterministic=None)
    torch = sys.modules.get("torch")
    if torch is not None:
        try:
            env["cpu_capability"] = torch.backends.cpu.get_cpu_capability()
        except AttributeError:
            pass
        env["torch_threads"] = torch.get_num_threads()
        env["deterministic"] = bool(torch.are_deterministic_algorithms_enabled())
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            env["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return env


def make_deterministic(seed: int) -> None:
    """Seed everything and turn on torch's deterministic algorithms (warn-only, see the module docstring)."""
    import lightning.pytorch as pl
    import torch

    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # cuBLAS's deterministic workspace
    pl.seed_everything(seed, workers=True, verbose=False)
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.benchmark = False


def differences(a: dict | None, b: dict | None) -> list[str]:
    """``key: value vs value`` for each :data:`COMPARED` key both environments record and that differs."""
    if not isinstance(a, dict) or not isinstance(b, dict):
        return []
    out = []
    for key in COMPARED:
        x, y = a.get(key), b.get(key)
        if x is None or y is None or x == y:
            continue
        shown = (lambda v: str(v)[:12]) if key == "avasr_commit" else str
        out.append(f"{key} {shown(x)} vs {shown(y)}")
    return out


def write_results_markdown(path, lines: list[str], command: str) -> None:
    """A results file under docs/results: ``lines`` (a table, its notes), then :func:`provenance_markdown`."""
    from pathlib import Path

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text("\n".join(lines) + "\n\n" + provenance_markdown(command) + "\n", encoding="utf-8")


def provenance_markdown(command: str) -> str:
    """One markdown line saying what made a results file: the command, the date, avasr's commit and the
    stack and machine of this process (benchmarks write it under their tables; docs/results/)."""
    import time

    env = environment()
    dirty = " (with uncommitted changes)" if env["avasr_dirty"] else ""
    gpus = f"; GPUs {', '.join(env['gpus'])}" if env["gpus"] else "; no GPU"
    return (f"_Provenance: `{command}`, one run, {time.strftime('%Y-%m-%d', time.gmtime())}; avasr "
            f"{env['avasr']} at commit {(env['avasr_commit'] or 'unknown')[:12]}{dirty}; Python {env['python']}, "
            f"torch {env['torch']}, NeMo {env['nemo_toolkit']}; CPU {env['cpu']}{_cpu_detail(env)}, {env['cores']} cores{gpus}._")


def _cpu_detail(env: dict) -> str:
    parts = [p for p in (env.get("cpu_id"), env.get("cpu_flags") and f"flags {env['cpu_flags']}") if p]
    return f" ({'; '.join(parts)})" if parts else ""
