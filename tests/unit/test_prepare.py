"""``avasr prepare`` (source builtin): config validation, manifests, data card, shared cache, the CLI."""

import dataclasses
import json
import sys
import types
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

import avasr_cli
from avasr_cli.data.manifest import SPLITS, read_manifest
from avasr_cli.errors import ConfigError
from avasr_cli.progress import Reporter
from avasr_cli.run import RunDir
from avasr_cli.stages.prepare import PrepareConfig, check_disjoint, run_prepare

SMALL = dict(num_align=12, num_train=8, num_dev=4, num_test=4)
SIZES = ["--num-align", "12", "--num-train", "8", "--num-dev", "4", "--num-test", "4"]


def _app() -> typer.Typer:
    """The real ``avasr`` app; while sibling command modules are missing, stub them to load ours."""
    try:
        from avasr_cli.cli import app
    except ImportError:
        cli_dir = Path(avasr_cli.__file__).parent / "cli"
        for name in ("align", "compare", "embed", "evaluate", "finetune"):
            if not (cli_dir / f"{name}.py").exists():
                sys.modules[f"avasr_cli.cli.{name}"] = types.SimpleNamespace(register=lambda app: None)
        from avasr_cli.cli import app
    return app


def test_validate_reports_every_problem_at_once():
    with pytest.raises(ConfigError) as info:
        PrepareConfig(lang="klingon", source="builtin", num_dev=0, seed=-1, max_align_hours=0).validate()
    msg = info.value.message
    assert "unknown --lang 'klingon'" in msg and "hindi" in msg and "kannada" in msg
    assert "--num-dev" in msg and "--seed" in msg and "--max-align-hours" in msg
    with pytest.raises(ConfigError, match="unknown --source 'ftp'"):
        PrepareConfig(source="ftp").validate()


def test_language_codes_are_aliases():
    assert PrepareConfig(lang="kn").lang == "kannada" and PrepareConfig(lang="Hindi").lang == "hindi"
    assert PrepareConfig().validate() == PrepareConfig(lang="kannada")


def test_run_prepare_writes_valid_manifests_and_a_data_card(tmp_path):
    run = RunDir(tmp_path / "run")
    result = run_prepare(run, PrepareConfig(lang="kannada", **SMALL), Reporter())
    assert result.counts == {"align": 12, "train": 8, "dev": 4, "test": 4}
    assert all(h > 0 for h in result.hours.values()) and not result.reused_cache
    rows = {}
    for split in SPLITS:
        rows[split] = read_manifest(run.manifest(split), require=("audio_filepath", "duration", "text",
                                                                   "image_filepath", "image_sha256", "utt_id",
                                                                   "speaker", "lang", "gender"))
        for row in rows[split]:
            assert Path(row["audio_filepath"]).is_absolute() and Path(row["audio_filepath"]).is_file()
            assert Path(row["image_filepath"]).is_file() and row["image_sha256"] in row["image_filepath"]
            assert row["lang"] == "kannada" and row["gender"] in ("male", "female", "unknown")  # espeak variants of unstated gender
            assert (row["text"] == "") == (split == "align")
    assert all("text_raw" not in r for r in rows["align"])
    card = json.loads(Path(result.data_card).read_text(encoding="utf-8"))
    assert card["disjointness"]["passed"] and card["disjointness"]["speaker_disjoint"]
    assert card["counts"] == result.counts and card["corpus"]["espeak_version"]
    heard = {r["speaker"] for s in ("train", "align") for r in rows[s]}
    assert not heard & {r["speaker"] for s in ("dev", "test") for r in rows[s]}
    # the voice is the unit a bootstrap resamples; dev/test sentences are never said in train
    assert card["speaker_group_unit"] == "voice" and all(r["speaker_group"].startswith("kn+") for s in rows for r in rows[s])
    assert card["speaker_groups"]["test"] == len({r["speaker_group"] for r in rows["test"]})
    assert card["sentences"]["passed"] and card["sentences"]["dev_in_train"] == card["sentences"]["test_in_train"] == 0
    vocab = card["vocabulary"]
    assert vocab["train"] > 0 and 0 <= vocab["test_vs_train"]["unseen_token_rate"] <= 1
    assert card["word_classes"]["ಒಂದು"] == "count" and card["word_classes"]["ರವಿ"] == "name"


def test_data_card_counts_sentences_of_dev_and_test_said_in_train(tmp_path):
    from avasr_cli.data.card import build_card

    rows = {"train": [{"text": "a b", "speaker": "s1"}, {"text": "c d", "speaker": "s1"}],
            "dev": [{"text": "A B.", "speaker": "s2", "speaker_group": "v2"}, {"text": "e", "speaker": "s2"}],
            "test": [{"text": "c d", "speaker": "s3"}, {"text": "c d", "speaker": "s4"}], "align": []}
    paths = {}
    for split, rs in rows.items():
        paths[split] = tmp_path / f"{split}.jsonl"
        paths[split].write_text("".join(json.dumps(dict(r, duration=1.0)) + "\n" for r in rs), encoding="utf-8")
    card = build_card(paths, None)
    assert card["sentences"]["dev_in_train"] == 1 and card["sentences"]["test_in_train"] == 2  # normalised first
    assert not card["sentences"]["passed"] and card["speaker_groups"]["dev"] == 2
    assert card["vocabulary"]["dev_vs_train"] == {"tokens": 3, "types": 3, "unseen_tokens": 1, "unseen_types": 1,
                                                  "unseen_token_rate": 0.3333}


def test_check_disjoint_catches_leaks():
    rows = {"train": [{"speaker": "a", "utt_id": "1"}], "align": [], "dev": [{"speaker": "a", "utt_id": "1"}],
            "test": []}
    check = check_disjoint(rows)
    assert not check["passed"] and check["leaked_speakers"]["dev"] == ["a"] and check["duplicate_utt_ids"] == 1


def test_second_run_dir_reuses_the_cache_and_seed_determines_everything(tmp_path):
    cfg = PrepareConfig(lang="hindi", **SMALL)
    first = run_prepare(RunDir(tmp_path / "a"), cfg, Reporter())
    wavs = sorted(Path(first.corpus_dir).glob("audio/*.wav"))
    mtimes = [p.stat().st_mtime_ns for p in wavs]
    second = run_prepare(RunDir(tmp_path / "b"), cfg, Reporter())
    assert second.reused_cache and second.corpus_dir == first.corpus_dir
    assert [p.stat().st_mtime_ns for p in wavs] == mtimes
    for split in SPLITS:
        assert Path(first.manifests[split]).read_bytes() == Path(second.manifests[split]).read_bytes()
    other = run_prepare(RunDir(tmp_path / "c"), dataclasses.replace(cfg, seed=1), Reporter())
    assert other.corpus_dir != first.corpus_dir
    assert Path(other.manifests["train"]).read_text() != Path(first.manifests["train"]).read_text()


def test_cli_prepare_json_rerun_and_errors(tmp_path):
    app, runner, run_dir = _app(), CliRunner(), str(tmp_path / "run")
    result = runner.invoke(app, ["prepare", "-r", run_dir, "--lang", "hi", "--json", *SIZES])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert payload["counts"]["align"] == 12 and payload["lang"] == "hindi"
    record = json.loads((tmp_path / "run" / "run.json").read_text())
    assert record["stages"]["prepare"]["config"]["lang"] == "hindi"
    again = runner.invoke(app, ["prepare", "-r", run_dir, "--lang", "hi", *SIZES])
    assert again.exit_code == 0 and "already finished" in again.output
    bad = runner.invoke(app, ["prepare", "-r", run_dir, "--source", "ftp"])
    assert bad.exit_code != 0 and isinstance(bad.exception, ConfigError)


def test_cli_help_has_examples():
    result = CliRunner().invoke(_app(), ["prepare", "--help"], terminal_width=200)
    assert result.exit_code == 0
    assert "Examples" in result.output and "avasr prepare --lang kannada" in result.output
    assert "avasr -r runs/direct prepare --lang hindi --seed 1" in result.output


def test_register_on_a_fresh_app(tmp_path):
    _app()  # make avasr_cli.cli importable
    from avasr_cli.cli.prepare import register

    app = typer.Typer()
    register(app)

    @app.callback()
    def _root() -> None:
        pass

    result = CliRunner().invoke(app, ["prepare", "-r", str(tmp_path), "--lang", "tamil"])
    assert result.exit_code != 0 and "tamil" in result.exception.message


def test_unknown_speakers_are_not_a_leak():
    rows = {"train": [{"speaker": "unknown", "utt_id": "1"}, {"speaker": "a", "utt_id": "2"}], "align": [],
            "dev": [{"speaker": "unknown", "utt_id": "3"}], "test": [{"speaker": "b", "utt_id": "4"}]}
    check = check_disjoint(rows)
    assert check["passed"] and check["unknown_speaker_rows"] == {"train": 1, "align": 0, "dev": 1, "test": 0}


def test_all_is_a_vaani_option():
    assert PrepareConfig(source="vaani", all=True).validate().all
    with pytest.raises(ConfigError, match="--all only applies to --source vaani"):
        PrepareConfig(source="builtin", all=True).validate()
    result = CliRunner().invoke(_app(), ["prepare", "--help"], terminal_width=200)
    assert "--all" in result.output
