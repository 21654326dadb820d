"""``avasr embed-images --cpu-procs 2`` (two processes, gloo, Lightning Fabric's launcher, the real CLI): the
images are divided between the ranks, each commits its own shards into the one store, and the store holds
what one process writes; a two-process run killed mid-way resumes where its shards stopped.

Not bit for bit: each of two processes runs with half the CPU threads, and the CPU kernels (oneDNN/MKL)
split their sums by thread count, so a few features land one float16 step apart (measured on CI: 2 of
640 values, 1 ulp). Same process count, same machine: identical (``test_embed_images``). The bound
asserted here is 2 ulps, on at most 2 % of the values."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest

from avasr_cli.vision.store import FeatureStore

from test_embed_images import N_IMAGES, all_shas, make_run, tiny_model, use_home  # noqa: F401 (fixture)

pytestmark = pytest.mark.slow
ARGS = ["embed-images", "--vision", "tiny-siglip", "--batch-size", "2", "--workers", "0"]


def embed(run, *extra, fault: str | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    env.pop("AVASR_FAULT", None)
    if fault:
        env["AVASR_FAULT"] = fault
    proc = subprocess.run([sys.executable, "-m", "avasr_cli", "-r", str(run.root), *ARGS, *extra], env=env,
                          capture_output=True, text=True, timeout=600)
    wait_for_ranks(run)
    return proc


def wait_for_ranks(run, timeout: float = 60) -> None:
    """No process of this run (Lightning's rank-1 child has the same command line) outlives the test."""
    deadline = time.time() + timeout
    while True:
        left = subprocess.run(["pgrep", "-f", str(run.root)], capture_output=True, text=True).stdout.split()
        if not left:
            return
        if time.time() > deadline:
            for pid in left:
                os.kill(int(pid), 9)
            pytest.fail(f"processes {left} of {run.root} outlived the command")
        time.sleep(0.5)


def assert_within_fp16_ulps(actual, desired, ulps: int = 2, share: float = 0.02) -> None:
    """float16 arrays equal up to ``ulps`` representable steps, and unequal in at most ``share`` of places."""
    a, d = np.asarray(actual, np.float16), np.asarray(desired, np.float16)
    assert a.shape == d.shape
    # float16 bit patterns in a monotone integer order: the difference counts representable steps
    ia, id_ = (x.view(np.int16).astype(np.int32) for x in (a, d))
    ia, id_ = (np.where(x < 0, -32768 - x, x) for x in (ia, id_))
    steps = np.abs(ia - id_)
    assert steps.max() <= ulps, f"{int(steps.max())} float16 steps apart at {np.unravel_index(steps.argmax(), a.shape)}"
    assert (steps > 0).mean() <= share, f"{(steps > 0).mean():.2%} of the values differ"


def features(run):
    record = json.loads((run.root / "features.json").read_text())
    store = FeatureStore.open(record["store"])
    return record, store, store.lookup(all_shas(run))


@pytest.fixture
def runs(tmp_path, monkeypatch, tiny_model):  # noqa: F811
    """The same run directory twice, each with its own AVASR_HOME (so each has its own store)."""
    out = []
    for name in ("one", "two"):
        use_home(monkeypatch, tmp_path / name / "home", tiny_model)
        out.append((make_run(tmp_path / name), str(tmp_path / name / "home")))
    return out


def test_two_processes_write_the_store_one_process_writes(runs, monkeypatch):
    (one, home1), (two, home2) = runs
    monkeypatch.setenv("AVASR_HOME", home1)
    proc = embed(one)
    assert proc.returncode == 0, proc.stderr[-3000:]
    monkeypatch.setenv("AVASR_HOME", home2)
    proc = embed(two, "--cpu-procs", "2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    rec1, store1, (pooled1, patches1) = features(one)
    rec2, store2, (pooled2, patches2) = features(two)
    assert (rec2["processes"], rec2["embedded"], rec2["cached"], rec2["skipped"]) == (2, N_IMAGES, 0, 1)
    assert (rec1["processes"], rec1["embedded"]) == (1, N_IMAGES)
    assert sorted(store2.keys()) == sorted(store1.keys()) == all_shas(one)
    assert_within_fp16_ulps(pooled2, pooled1)  # each image's fp16 features, to a float16 step
    assert_within_fp16_ulps(patches2, patches1)
    assert sum(rec2["shards"].values()) == N_IMAGES and len(rec2["shards"]) >= 2  # both ranks committed shards
    assert rec2["skipped_images"][0]["path"].endswith("bad.png")  # found by whichever rank had it


def test_a_killed_two_process_run_resumes(runs, monkeypatch):
    (one, home1), (two, home2) = runs
    monkeypatch.setenv("AVASR_HOME", home1)
    assert embed(one).returncode == 0
    monkeypatch.setenv("AVASR_HOME", home2)
    # each rank commits a shard of 2 images, then dies as its progress reaches 4 (before a second commit)
    killed = embed(two, "--cpu-procs", "2", "--shard-images", "2", fault="kill:embedding images:4")
    assert killed.returncode == -9, killed.stderr[-3000:]
    assert not (two.root / "features.json").exists()
    partial = FeatureStore.open(next((two.root.parent / "home" / "features").iterdir()))
    assert len(partial) == 4 and len(list(partial.path.glob("shard-*"))) == 2
    resumed = embed(two, "--cpu-procs", "2", "--shard-images", "2")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    record, store, (pooled, patches) = features(two)
    assert (record["embedded"], record["cached"]) == (N_IMAGES - 4, 4)
    _, _, (pooled1, patches1) = features(one)
    assert_within_fp16_ulps(pooled, pooled1)
    assert_within_fp16_ulps(patches, patches1)
