"""Fault injection: a stage SIGKILLed part-way leaves the run unfinished, and the same command run again
completes it with valid outputs (training stages resume from their checkpoint).

Every kill lands at a known point: ``AVASR_FAULT=kill:<task>:<n>`` (the testing hook in
``avasr_cli/progress.py``) makes the stage kill itself once its progress task reaches ``n``, so nothing
here sleeps and hopes. The stage runs in its own session and the whole group is killed once it is dead,
so no helper process (a corpus renderer, a DataLoader worker) outlives it and races the rerun.
"""

import json
import os
import signal
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow

PREP = ["--num-align", "40", "--num-train", "24", "--num-dev", "6", "--num-test", "6"]
COMMANDS = {
    "align": ["align", "--max-steps", "40", "--batch-size", "6", "--checkpoint-every", "3", "--workers", "0"],
    "finetune": ["finetune", "--decoder", "ctc", "--max-steps", "40", "--batch-size", "6", "--val-every", "3",
                 "--workers", "0"],
}


def _env(tmp_path):
    return dict(os.environ, AVASR_HOME=str(tmp_path / "home"), AVASR_RUN_DIR=str(tmp_path / "run"), HF_HUB_OFFLINE="1")


def _avasr(args, env):
    return subprocess.run([sys.executable, "-m", "avasr_cli", *args], env=env, capture_output=True, text=True,
                          timeout=600)


def _killed(args, env, fault, log):
    """Run ``avasr args`` with ``AVASR_FAULT=fault``; it must die of its own SIGKILL at that point."""
    with open(log, "w") as err:
        proc = subprocess.Popen([sys.executable, "-m", "avasr_cli", *args], env=dict(env, AVASR_FAULT=fault),
                                stdout=subprocess.DEVNULL, stderr=err, start_new_session=True)
        try:
            proc.wait(timeout=600)
        finally:
            try:
                os.killpg(proc.pid, signal.SIGKILL)  # its helpers die with it
            except ProcessLookupError:
                pass
    assert proc.returncode == -signal.SIGKILL, f"{fault} never fired (exit {proc.returncode}):\n{log.read_text()[-3000:]}"


def _stages(tmp_path):
    path = tmp_path / "run" / "run.json"
    return json.loads(path.read_text())["stages"] if path.exists() else {}


def _no_leftovers(tmp_path):
    leftovers = [p for p in (tmp_path / "run").rglob("*") if p.name.endswith(".tmp")]
    assert not leftovers, leftovers


@pytest.mark.parametrize("stage,task", [("align", "align"), ("finetune", "finetune")])
def test_killed_stage_resumes(tmp_path, stage, task):
    env = _env(tmp_path)
    assert _avasr(["prepare", *PREP], env).returncode == 0
    assert _avasr(["embed-images"], env).returncode == 0
    ckpts = tmp_path / "run" / stage / "checkpoints"
    # the step-3 checkpoint is written after step 3 is counted; the kill lands as step 4 is counted
    _killed(COMMANDS[stage], env, f"kill:{task}:4", tmp_path / "killed.log")
    assert (tmp_path / "run" / ".lock").exists()  # left behind by the killed process
    assert stage not in _stages(tmp_path)  # unfinished stages are not recorded
    assert sorted(p.name for p in ckpts.glob("step*.ckpt")) == ["step3.ckpt"]

    again = _avasr(COMMANDS[stage], env)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "resuming from" in again.stderr
    assert _stages(tmp_path)[stage]["result"]["steps"] == 40
    assert _stages(tmp_path)[stage]["result"]["resumed_from"].endswith(".ckpt")  # recorded: not an uninterrupted run
    assert not (tmp_path / "run" / ".lock").exists()
    _no_leftovers(tmp_path)
    if stage == "align":
        assert (tmp_path / "run" / "align" / "encoder" / "encoder.safetensors").is_file()
    else:
        assert (tmp_path / "run" / "finetune" / "model.nemo").is_file()


BIG_PREP = ["prepare", "--num-align", "300", "--num-train", "24", "--num-dev", "6", "--num-test", "40"]


def test_killed_prepare_keeps_finished_chunks(tmp_path):
    """prepare killed after the first corpus chunk (of 4): no manifest written, the rerun resumes the
    corpus after that chunk and writes every manifest."""
    env = _env(tmp_path)
    _killed(BIG_PREP, env, "kill:synthesising:1", tmp_path / "killed.log")
    assert "prepare" not in _stages(tmp_path)
    assert not list((tmp_path / "run").glob("data/*.jsonl"))
    assert len(list((tmp_path / "home").glob("corpora/*/chunks/*.jsonl"))) == 1

    again = _avasr(BIG_PREP, env)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "resuming after 1 finished chunks" in " ".join(again.stderr.split())  # rich wraps lines
    assert "prepare" in _stages(tmp_path)
    _no_leftovers(tmp_path)
    from avasr_cli.data.manifest import read_manifest

    rows = read_manifest(tmp_path / "run" / "data" / "align.jsonl")
    assert len(rows) == 300 and all(os.path.isfile(r["audio_filepath"]) for r in rows)


@pytest.mark.parametrize("lost", [False, True])
def test_killed_prepare_into_shards_resumes_at_the_last_committed_shard(tmp_path, lost):
    """``--audio-layout shards`` renders the built-in corpus straight into shards (no file per clip). Killed
    after 120 of 370 clips (shards of 50: two committed), the rerun continues after the second shard (or,
    when that shard's tar was lost meanwhile, after the first), and every shard it leaves holds the same
    bytes as an uninterrupted prepare's."""
    import hashlib

    from avasr_cli.data.manifest import read_manifest

    cmd = [*BIG_PREP, "--audio-layout", "shards", "--shard-clips", "50"]
    env = _env(tmp_path)
    _killed(cmd, env, "kill:synthesising into shards:120", tmp_path / "killed.log")
    assert "prepare" not in _stages(tmp_path)
    packed = next((tmp_path / "home").glob("corpora/*/packed-50"))
    commits = json.loads((packed / "progress.json").read_text())["commits"]
    assert [c["end"] for c in commits] == [50, 100] and not (packed / "complete.json").exists()
    if lost:
        (packed / "align" / "audio_1.tar").unlink()

    again = _avasr(cmd, env)
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"resuming after {50 if lost else 100} committed clips" in " ".join(again.stderr.split())
    _no_leftovers(tmp_path)
    assert not list(packed.rglob("*.wav")) and not list(packed.rglob("*.png")) and not list(packed.glob(".work*"))

    ref_env = dict(env, AVASR_HOME=str(tmp_path / "ref-home"), AVASR_RUN_DIR=str(tmp_path / "ref-run"))
    assert _avasr(cmd, ref_env).returncode == 0

    def content(run: str) -> dict:
        out = {}
        for split in ("align", "train", "dev", "test"):
            rows = read_manifest(tmp_path / run / "data" / f"{split}.jsonl")
            tars = sorted({r["tar_filepath"] for r in rows} | {r["image_tar_filepath"] for r in rows})
            out[split] = ([{k: v for k, v in r.items() if not k.endswith("tar_filepath")} for r in rows],
                          [(os.path.basename(t), hashlib.sha256(open(t, "rb").read()).hexdigest()) for t in tars])
        return out

    assert content("run") == content("ref-run")


def test_killed_embed_images_redoes_the_rest(tmp_path):
    env = _env(tmp_path)
    assert _avasr(BIG_PREP, env).returncode == 0
    cmd = ["embed-images", "--workers", "0", "--batch-size", "4"]
    _killed(cmd, env, "kill:embedding images:8", tmp_path / "killed.log")
    assert "embed-images" not in _stages(tmp_path)
    assert not (tmp_path / "run" / "features.json").exists()

    again = _avasr(cmd, env)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "embed-images" in _stages(tmp_path)
    _no_leftovers(tmp_path)
    features = json.loads((tmp_path / "run" / "features.json").read_text())
    assert features["images"] == features["embedded"] + features["cached"] and features["skipped"] == 0


def test_killed_evaluate_redoes_the_rest(tmp_path):
    """evaluate killed after 10 of the 40 test utterances: dev is scored, test has no report, the stage
    is unrecorded; the rerun writes both reports."""
    env = _env(tmp_path)
    assert _avasr(BIG_PREP, env).returncode == 0
    assert _avasr(["finetune", "--decoder", "ctc", "--max-steps", "2", "--batch-size", "6", "--workers", "0"],
                  env).returncode == 0
    cmd = ["evaluate", "--batch-size", "2"]
    _killed(cmd, env, "kill:transcribing test:10", tmp_path / "killed.log")
    reports = tmp_path / "run" / "reports"
    assert "evaluate" not in _stages(tmp_path)
    assert (reports / "wer-dev.json").is_file() and not (reports / "wer-test.json").exists()

    again = _avasr(cmd, env)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "evaluate" in _stages(tmp_path)
    _no_leftovers(tmp_path)
    report = json.loads((reports / "wer-test.json").read_text())
    assert report["num_utterances"] == 40
    assert len((reports / "hyps-test.jsonl").read_text().splitlines()) == 40
