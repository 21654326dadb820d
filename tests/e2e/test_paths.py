"""Every path the CLI takes, of the wrong kind: its own one-line error naming the path, a hint, exit 2, and
nothing written — never the catch-all ``Error: unexpected …``. (Permission cases are not driven here: the
suite runs as root on CI, where no permission bit stops a read or a write.)"""

from __future__ import annotations

from pathlib import Path

import pytest

from test_damaged_inputs import cli as _cli  # in process, through avasr_cli.cli.main


def cli(monkeypatch, capsys, args: list[str], home: Path) -> tuple[int, str]:
    """``avasr ARGS`` (ARGS starting with ``-r RUN``) with ``$AVASR_HOME`` at ``home`` → (exit, stderr)."""
    assert args[0] == "-r"
    return _cli(monkeypatch, capsys, home, Path(args[1]), args[2:])


PREP = ["prepare", "--num-align", "8", "--num-train", "4", "--num-dev", "2", "--num-test", "2"]


@pytest.fixture
def place(tmp_path):
    (tmp_path / "afile").write_text("not a directory\n")
    (tmp_path / "adir").mkdir()
    (tmp_path / "m.jsonl").write_text("{}\n")
    return tmp_path


def one_error(err: str, *words: str) -> str:
    lines = [line for line in err.splitlines() if line.startswith("Error:")]
    assert len(lines) == 1, err
    assert "unexpected" not in lines[0], err
    assert "Hint:" in err, err
    for word in words:
        assert word in lines[0], (word, lines[0])
    return lines[0]


@pytest.mark.parametrize("command", [PREP, ["embed-images"], ["align"], ["finetune"], ["evaluate"]])
def test_run_directory_that_is_a_file(place, monkeypatch, capsys, command):
    code, err = cli(monkeypatch, capsys, ["-r", str(place / "afile"), *command], place / "home")
    assert code == 2
    one_error(err, str(place / "afile"), "is a file")
    assert (place / "afile").read_text() == "not a directory\n"  # untouched


def test_run_directory_under_a_file(place, monkeypatch, capsys):
    code, err = cli(monkeypatch, capsys, ["-r", str(place / "afile" / "run"), *PREP], place / "home")
    assert code == 2
    one_error(err, str(place / "afile"), "is a file")


def test_avasr_home_that_is_a_file(place, monkeypatch, capsys):
    code, err = cli(monkeypatch, capsys, ["-r", str(place / "run"), *PREP], place / "afile")
    assert code == 2
    one_error(err, "AVASR_HOME", str(place / "afile"))
    assert not (place / "run" / "run.json").exists()


@pytest.mark.parametrize("kind", ["adir", "missing.jsonl"])
def test_manifest_of_the_wrong_kind(place, monkeypatch, capsys, kind):
    m = str(place / "m.jsonl")
    args = ["-r", str(place / "run"), "prepare", "--source", "manifest", "--train", str(place / kind),
            "--dev", m, "--test", m, "--align", m]
    code, err = cli(monkeypatch, capsys, args, place / "home")
    assert code == 2
    line = one_error(err, "--train", str(place / kind))
    assert ("is a directory, not a file" if kind == "adir" else "does not exist") in line
    assert not (place / "run" / "run.json").exists()


def test_dataset_that_is_a_file(place, monkeypatch, capsys):
    code, err = cli(monkeypatch, capsys, ["-r", str(place / "run"), "prepare", "--source", "vaani", "--dataset",
                                          str(place / "afile")], place / "home")
    assert code == 2
    one_error(err, "afile")


def test_compare_on_a_file(place, monkeypatch, capsys):
    code, err = cli(monkeypatch, capsys, ["-r", str(place / "run"), "compare", str(place / "afile")], place / "home")
    assert code == 2
    one_error(err, str(place / "afile"), "not run directories")


def test_an_os_error_naming_a_path_maps_to_one_line():
    import errno

    from avasr_cli.errors import from_os_error

    mapped = from_os_error(FileExistsError(errno.EEXIST, "File exists", "/x/run"))
    assert mapped is not None and mapped.message == "/x/run is a file where a directory is needed" and mapped.hint
    full = from_os_error(OSError(errno.ENOSPC, "No space left on device", "/x/run/data/train.jsonl"))
    assert "full disk" in full.message and "/x/run/data/train.jsonl" in full.message
    assert from_os_error(OSError(errno.EIO, "I/O error")) is None  # no path: left to the catch-all


def test_an_os_error_without_a_path_still_gets_the_one_line_catch_all(place, monkeypatch, capsys):
    """An OSError that names no path is not the user's path: the catch-all line and its hint, no traceback."""
    import errno

    import avasr_cli.stages.compare as compare_stage

    def broken(*args, **kwargs):
        raise OSError(errno.EIO, "I/O error")

    monkeypatch.setattr(compare_stage, "run_compare", broken)
    code, err = cli(monkeypatch, capsys, ["-r", str(place / "run"), "compare", str(place / "adir")], place / "home")
    assert code == 1 and "Traceback" not in err
    assert "Error: unexpected OSError" in err and "AVASR_DEBUG=1" in err
