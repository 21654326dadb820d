"""Fault injection: a training stage killed with SIGKILL after a checkpoint resumes when the same command
is run again (stale lock taken over, training continued from the checkpoint, valid outputs)."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

pytestmark = pytest.mark.slow

PREP = ["--num-align", "40", "--num-train", "24", "--num-dev", "6", "--num-test", "6"]
COMMANDS = {
    "align": ["align", "--max-steps", "40", "--batch-size", "6", "--checkpoint-every", "3", "--workers", "0"],
    "finetune": ["finetune", "--decoder", "ctc", "--max-steps", "40", "--batch-size", "6", "--val-every", "3",
                 "--workers", "0"],
}


def _avasr(args, env, **kw):
    return subprocess.run([sys.executable, "-m", "avasr_cli", *args], env=env, capture_output=True, text=True,
                          timeout=600, **kw)


@pytest.mark.parametrize("stage", ["align", "finetune"])
def test_killed_stage_resumes(tmp_path, stage):
    env = dict(os.environ, AVASR_HOME=str(tmp_path / "home"), AVASR_RUN_DIR=str(tmp_path / "run"), HF_HUB_OFFLINE="1")
    assert _avasr(["prepare", *PREP], env).returncode == 0
    assert _avasr(["embed-images"], env).returncode == 0
    ckpts = tmp_path / "run" / stage / "checkpoints"
    proc = subprocess.Popen([sys.executable, "-m", "avasr_cli", *COMMANDS[stage]], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and not any(p.name.startswith("step") for p in ckpts.glob("*.ckpt")):
        assert proc.poll() is None, "the stage ended before its first checkpoint"
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert (tmp_path / "run" / ".lock").exists()  # left behind by the killed process
    record = json.loads((tmp_path / "run" / "run.json").read_text())
    assert stage not in record["stages"]  # unfinished stages are not recorded

    again = _avasr(COMMANDS[stage], env)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "resuming from" in again.stderr
    record = json.loads((tmp_path / "run" / "run.json").read_text())
    assert record["stages"][stage]["result"]["steps"] == 40
    assert not (tmp_path / "run" / ".lock").exists()
    if stage == "align":
        assert (tmp_path / "run" / "align" / "encoder" / "encoder.safetensors").is_file()
    else:
        assert (tmp_path / "run" / "finetune" / "model.nemo").is_file()


@pytest.mark.parametrize("stage,after", [("prepare", 0.8), ("embed-images", 0.3), ("evaluate", 3.0)])
def test_killed_stage_without_checkpoints_redoes_the_rest(tmp_path, stage, after):
    """prepare, embed-images and evaluate write every file atomically and record the stage last: a
    SIGKILL at any moment leaves no half-written file that a rerun would trust."""
    env = dict(os.environ, AVASR_HOME=str(tmp_path / "home"), AVASR_RUN_DIR=str(tmp_path / "run"), HF_HUB_OFFLINE="1")
    prep = ["prepare", "--num-align", "300", "--num-train", "24", "--num-dev", "6", "--num-test", "40"]
    commands = {"prepare": prep, "embed-images": ["embed-images", "--workers", "0", "--batch-size", "4"],
                "evaluate": ["evaluate", "--batch-size", "2"]}
    if stage != "prepare":
        assert _avasr(prep, env).returncode == 0
    if stage == "evaluate":
        assert _avasr(["finetune", "--decoder", "ctc", "--max-steps", "2", "--batch-size", "6", "--workers", "0"],
                      env).returncode == 0
    proc = subprocess.Popen([sys.executable, "-m", "avasr_cli", *commands[stage]], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    # for evaluate, wait until the stage is under way (NeMo imported, first split transcribing)
    time.sleep(after + (8.0 if stage == "evaluate" else 0.0))
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    record = json.loads((tmp_path / "run" / "run.json").read_text()) if (tmp_path / "run" / "run.json").exists() else {"stages": {}}
    if proc.returncode == -signal.SIGKILL:
        assert stage not in record["stages"]
    again = _avasr(commands[stage], env)
    assert again.returncode == 0, again.stderr[-3000:]
    record = json.loads((tmp_path / "run" / "run.json").read_text())
    assert stage in record["stages"]
    leftovers = [p for p in (tmp_path / "run").rglob("*") if p.name.endswith(".tmp")]
    assert not leftovers, leftovers
    if stage == "prepare":
        from avasr_cli.data.manifest import read_manifest

        assert len(read_manifest(tmp_path / "run" / "data" / "align.jsonl")) == 300
    elif stage == "embed-images":
        features = json.loads((tmp_path / "run" / "features.json").read_text())
        assert features["images"] == features["embedded"] + features["cached"] and features["skipped"] == 0
    else:
        report = json.loads((tmp_path / "run" / "reports" / "wer-test.json").read_text())
        assert report["num_utterances"] == 40
