"""The CLI surface: help for every command, lazy imports, errors without tracebacks."""

import subprocess
import sys
import time
from pathlib import Path

from typer.testing import CliRunner

from avasr_cli.cli import app

COMMANDS = ["prepare", "embed-images", "align", "finetune", "evaluate", "compare"]
ROOT = Path(__file__).resolve().parents[2]


def test_help_lists_six_commands():
    result = CliRunner().invoke(app, ["--help"])
    assert result.exit_code == 0
    for cmd in COMMANDS:
        assert cmd in result.output


def test_each_command_has_help_with_examples():
    for cmd in COMMANDS:
        result = CliRunner().invoke(app, [cmd, "--help"], terminal_width=200)
        assert result.exit_code == 0, cmd
        assert "Examples" in result.output, cmd
        assert f"avasr {cmd}" in result.output or "avasr -r" in result.output, cmd


def test_each_command_is_in_the_readme():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    for cmd in COMMANDS:
        assert f"avasr {cmd}" in readme or f"avasr -r runs/align {cmd}" in readme, cmd


def test_help_does_not_import_torch_or_nemo():
    code = ("import sys, time; t=time.time(); from avasr_cli.cli import app\n"
            "try:\n    app(['--help'], standalone_mode=False)\nexcept SystemExit:\n    pass\n"
            "bad=[m for m in ('torch','nemo','transformers','lightning') if m in sys.modules]\n"
            "print('BAD', bad, 'T', time.time()-t)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60).stdout
    assert "BAD [] " in out, out


def test_help_is_fast():
    start = time.time()
    subprocess.run([sys.executable, "-m", "avasr_cli", "--help"], capture_output=True, timeout=60, check=True)
    assert time.time() - start < 5  # generous for a shared CI machine; typically ~0.3 s


def test_unknown_option_value_gives_one_line_error(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "avasr_cli", "-r", str(tmp_path), "align", "--loss", "nope"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0
    assert "Error:" in proc.stderr and "--loss" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "run.json").exists()


def test_missing_prerequisite_names_the_command(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "avasr_cli", "-r", str(tmp_path), "finetune"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert "avasr prepare" in proc.stderr and "Traceback" not in proc.stderr
