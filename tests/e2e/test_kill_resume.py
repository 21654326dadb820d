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
