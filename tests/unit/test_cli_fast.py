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


def test_cli_defaults_are_the_stage_configs_defaults():
    """One source of truth: every option a command shares with its stage's config has the config's default
    (the CLI once said --num-dev 60 --num-test 120 while PrepareConfig said 80/160)."""
    import dataclasses

    import typer

    from avasr_cli.cli import app
    from avasr_cli.stages.align import AlignConfig
    from avasr_cli.stages.embed_images import EmbedConfig
    from avasr_cli.stages.evaluate import EvaluateConfig
    from avasr_cli.stages.finetune import FinetuneConfig
    from avasr_cli.stages.prepare import PrepareConfig
    from avasr_cli.stages.pretrain import PretrainConfig

    sentinels = {("align", "siglip_bias"): ("auto", None)}  # the CLI's word for the config's None
    commands = typer.main.get_command(app).commands
    checked = 0
    for name, cfg in (("prepare", PrepareConfig), ("align", AlignConfig), ("finetune", FinetuneConfig),
                      ("embed-images", EmbedConfig), ("evaluate", EvaluateConfig), ("pretrain", PretrainConfig)):
        fields = {f.name: f for f in dataclasses.fields(cfg)}
        for param in commands[name].params:
            f = fields.get(param.name)
            if f is None:
                continue
            want = f.default if f.default is not dataclasses.MISSING else f.default_factory()
            got = param.default
            if (name, param.name) in sentinels:
                assert (got, want) == sentinels[(name, param.name)]
            elif isinstance(want, (tuple, list)):
                assert list(got or []) == list(want), (name, param.name)
            else:
                assert got == want, (name, param.name, got, want)
            checked += 1
    assert checked > 50, checked
