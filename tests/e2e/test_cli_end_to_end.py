"""The six commands, driven as a user drives them (subprocesses of the installed `avasr`), on a tiny
built-in corpus: the direct baseline, the aligned arm and the audio-only control, then compare."""

import json
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow

PREP = ["--num-align", "48", "--num-train", "24", "--num-dev", "8", "--num-test", "8"]
ALIGN = ["--max-steps", "4", "--batch-size", "8", "--workers", "0", "--checkpoint-every", "2"]
FT = ["--decoder", "ctc", "--max-steps", "6", "--batch-size", "8", "--val-every", "3", "--workers", "0"]


def avasr(*args, cwd, env, check=True):
    proc = subprocess.run([sys.executable, "-m", "avasr_cli", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=600)
    if check and proc.returncode != 0:
        raise AssertionError(f"avasr {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr[-4000:]}")
    return proc


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("e2e")
    env = dict(os.environ, AVASR_HOME=str(root / "home"), HF_HUB_OFFLINE="1")
    env.pop("AVASR_RUN_DIR", None)
    for arm in ("direct", "align", "audio-only"):
        (root / "runs" / arm).mkdir(parents=True)
    # the design card's lines: from inside a run directory ...
    avasr("prepare", "--lang", "kannada", *PREP, cwd=root / "runs" / "align", env=env)
    # ... or with --run-dir / $AVASR_RUN_DIR
    avasr("-r", "runs/direct", "prepare", "--lang", "kannada", *PREP, cwd=root, env=env)
    avasr("prepare", "--lang", "kannada", *PREP, cwd=root, env=dict(env, AVASR_RUN_DIR=str(root / "runs" / "audio-only")))
    avasr("-r", "runs/align", "embed-images", cwd=root, env=env)
    avasr("-r", "runs/align", "align", *ALIGN, cwd=root, env=env)
    avasr("-r", "runs/audio-only", "align", "--objective", "audio-only", *ALIGN, cwd=root, env=env)
    for arm in ("direct", "align", "audio-only"):
        avasr("-r", f"runs/{arm}", "finetune", *FT, cwd=root, env=env)
        avasr("-r", f"runs/{arm}", "evaluate", cwd=root, env=env)
    return root, env


def test_runs_share_one_corpus_and_test_set(runs):
    root, _ = runs
    shas = {json.loads((root / "runs" / arm / "reports" / "wer-test.json").read_text())["manifest_sha256"]
            for arm in ("direct", "align", "audio-only")}
    assert len(shas) == 1


def test_align_records_recall_before_and_after(runs):
    root, _ = runs
    recall = json.loads((root / "runs" / "align" / "align" / "recall.json").read_text())
    assert set(recall) == {"before", "after", "train_before", "train_after", "final_train_loss", "chance_loss", "verdict"}
    assert 0.0 <= recall["after"]["a2i_r@1"] <= 1.0 and 0.0 <= recall["train_after"]["a2i_r@1"] <= 1.0
    assert recall["verdict"] in ("generalises", "memorises", "none")
    record = json.loads((root / "runs" / "align" / "run.json").read_text())
    assert record["stages"]["finetune"]["result"]["init_kind"] == "aligned"
    assert record["stages"]["align"]["result"]["steps"] == 4
    ctrl = json.loads((root / "runs" / "audio-only" / "run.json").read_text())
    assert ctrl["stages"]["align"]["result"]["objective"] == "audio-only"
    assert ctrl["stages"]["align"]["result"]["steps"] == 4
    direct = json.loads((root / "runs" / "direct" / "run.json").read_text())
    assert direct["stages"]["finetune"]["result"]["init_kind"] == "init"


def test_compare_table_json(runs):
    root, env = runs
    proc = avasr("compare", "runs/direct", "runs/align", "runs/audio-only", "--format", "json", cwd=root, env=env)
    data = json.loads(proc.stdout)
    rows = data["rows"] if isinstance(data, dict) else data
    arms = {r["arm"] for r in rows}
    assert {"direct", "audio-only"} <= arms and any(a.startswith("align") for a in arms)


def test_compare_glob_and_rich_table(runs):
    root, env = runs
    proc = subprocess.run(f"{sys.executable} -m avasr_cli compare runs/*", shell=True, cwd=root, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "direct" in proc.stdout and "audio-only" in proc.stdout


def test_rerun_skips_finished_stage(runs):
    root, env = runs
    proc = avasr("-r", "runs/direct", "evaluate", cwd=root, env=env)
    assert "already finished" in proc.stderr


def test_nemo_file_transcribes_in_stock_nemo_like_evaluate(runs):
    root, _ = runs
    hyps = [json.loads(line) for line in (root / "runs" / "direct" / "reports" / "hyps-test.jsonl").read_text().splitlines()]
    from nemo.collections.asr.models import ASRModel

    model = ASRModel.restore_from(str(root / "runs" / "direct" / "finetune" / "model.nemo"), map_location="cpu")
    model.eval()
    out = model.transcribe([h["audio_filepath"] for h in hyps], batch_size=4, verbose=False)
    texts = [o.text if hasattr(o, "text") else o for o in out]
    assert texts == [h["hyp"] for h in hyps]
