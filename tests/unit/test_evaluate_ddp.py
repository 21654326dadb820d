"""``avasr evaluate --cpu-procs 2`` (two processes, gloo, through the CLI and Lightning Fabric's launcher):
each rank transcribes its own part of every split, and the report equals the one-process report."""

import json
import os
import subprocess
import sys

import pytest

from avasr_cli.stages.finetune import FinetuneConfig, run_finetune

pytestmark = pytest.mark.slow


def _evaluate(run, *extra):
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    proc = subprocess.run([sys.executable, "-m", "avasr_cli", "-r", str(run.root), "evaluate", "--split", "dev,test",
                           "--batch-size", "1", "--force", *extra], env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return {s: json.loads((run.reports / f"wer-{s}.json").read_text()) for s in ("dev", "test")}, \
        {s: (run.reports / f"hyps-{s}.jsonl").read_text() for s in ("dev", "test")}


def test_two_process_evaluate_equals_one_process(run):
    run_finetune(run, FinetuneConfig(decoder="ctc", max_steps=6, batch_size=6, val_every=6, workers=0, warmup_steps=1))
    run.record_stage("finetune", FinetuneConfig(), {})
    one, hyps_one = _evaluate(run)
    two, hyps_two = _evaluate(run, "--cpu-procs", "2")
    assert hyps_two == hyps_one  # every utterance, in manifest order, with the same hypothesis
    for split in ("dev", "test"):
        assert two[split]["wer"] == one[split]["wer"] and two[split]["cer"] == one[split]["cer"]
        assert two[split]["num_utterances"] == one[split]["num_utterances"] == len(hyps_one[split].splitlines())
    assert json.loads((run.root / "run.json").read_text())["stages"]["evaluate"]["config"]["cpu_procs"] == 2
