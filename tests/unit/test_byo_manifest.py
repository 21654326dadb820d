"""``avasr prepare --source manifest``: bring-your-own NeMo manifests, validated line by line."""

import hashlib
import json
import unicodedata
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from typer.testing import CliRunner

from avasr_cli.data.manifest import SPLITS, read_manifest
from avasr_cli.errors import ConfigError, InputError
from avasr_cli.progress import Reporter
from avasr_cli.run import RunDir
from avasr_cli.stages.prepare import PrepareConfig, run_prepare


def audio(path: Path, seconds: float = 0.5, sr: int = 16000, channels: int = 1, seed: int = 0) -> Path:
    t = np.arange(int(seconds * sr)) / sr
    x = 0.3 * np.sin(2 * np.pi * (200 + 10 * seed) * t)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, np.stack([x] * channels, axis=1).astype(np.float32), sr)
    return path


def image(path: Path, seed: int = 0) -> Path:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8), (seed * 30 % 256, 10, 10)).save(path)
    return path


def write(path: Path, rows: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r, ensure_ascii=False)) + "\n" for r in rows),
                    encoding="utf-8")
    return path


def corpus(root: Path, align_extra: list | None = None, dev_speaker: str = "d1") -> dict[str, Path]:
    """Four manifests under ``root``; relative paths, each image field name variant, 8 kHz stereo audio."""
    rows: dict[str, list] = {s: [] for s in SPLITS}
    for i in range(6):
        spk = f"t{i % 3}"
        rows["train"].append(dict(audio_filepath=str(audio(root / "wav" / f"{spk}_{i}.wav", seed=i).relative_to(root)),
                                  duration=0.5, text=unicodedata.normalize("NFD", "ಕೋಣೆ ಮನೆ{house}"), speaker=spk))
    rows["train"].append(dict(audio_filepath=str(audio(root / "wav" / "t0_8k.wav", 1.0, sr=8000, channels=2)),
                              duration=1.0, text="ಮರ", speaker="t0"))
    for split, spk in (("dev", dev_speaker), ("test", "e1"), ("test", "e2")):
        rows[split].append(dict(audio_filepath=str(audio(root / "wav" / f"{spk}_{split}.wav", seed=7)), duration=0.5,
                                text="ಹಸಿರು ಹುಲ್ಲು", speaker=spk))
    fields = ("image_filepath", "image_path", "image", "referenceImage")
    for i in range(8):
        rows["align"].append({"audio_filepath": str(audio(root / "wav" / f"a{i % 2}_{i}.wav", seed=i)),
                              "duration": 0.5, fields[i % 4]: str(image(root / "img" / f"{i % 3}.png", i % 3))})
    rows["align"] += align_extra or []
    return {s: write(root / f"{s}.jsonl", r) for s, r in rows.items()}


def cfg_for(paths: dict[str, Path], **kw) -> PrepareConfig:
    return PrepareConfig(source="manifest", lang="kannada", workers=1, **{s: str(p) for s, p in paths.items()}, **kw)


def test_valid_manifests(tmp_path):
    paths = corpus(tmp_path / "data")
    run = RunDir(tmp_path / "run")
    result = run_prepare(run, cfg_for(paths), Reporter())
    assert result.counts == {"align": 8, "train": 7, "dev": 1, "test": 2}
    card = json.loads(Path(result.data_card).read_text(encoding="utf-8"))
    assert card["disjointness"]["passed"] and card["corpus"]["audio_converted"] == 1
    assert card["corpus"]["images"] == 3
    rows = {s: read_manifest(run.manifest(s)) for s in SPLITS}
    by_name = {Path(r["audio_filepath"]).name: r for r in rows["train"]}
    in_place = str((tmp_path / "data" / "wav" / "t0_0.wav").resolve())
    assert in_place in {r["audio_filepath"] for r in rows["train"]}  # 16 kHz mono: referenced in place
    converted = [r for name, r in by_name.items() if name.endswith(".flac")]
    assert len(converted) == 1 and abs(converted[0]["duration"] - 1.0) < 1e-3
    info = sf.info(converted[0]["audio_filepath"])
    assert (info.samplerate, info.channels) == (16000, 1) and "byo-audio" in converted[0]["audio_filepath"]
    sample = by_name["t0_0.wav"]
    assert sample["text"] == unicodedata.normalize("NFC", "ಕೋಣೆ ಮನೆ") and "{house}" in sample["text_raw"]
    for r in rows["align"]:
        assert r["image_sha256"] == hashlib.sha256(Path(r["image_filepath"]).read_bytes()).hexdigest()
        assert r["text"] == "" and r["speaker"] in ("a0", "a1")
    # a second run reuses the converted file
    mtime = Path(converted[0]["audio_filepath"]).stat().st_mtime_ns
    run_prepare(RunDir(tmp_path / "run2"), cfg_for(paths), Reporter())
    assert Path(converted[0]["audio_filepath"]).stat().st_mtime_ns == mtime


def test_bad_lines_name_file_and_line(tmp_path):
    paths = corpus(tmp_path / "data")
    lines = paths["train"].read_text(encoding="utf-8").splitlines()
    write(paths["train"], lines[:1] + [""] + ["{not json"] + lines[2:])
    with pytest.raises(InputError, match=rf"{paths['train']}:3: not valid JSON"):
        run_prepare(RunDir(tmp_path / "run"), cfg_for(paths), Reporter())
    write(paths["train"], lines[:1] + [json.dumps({"audio_filepath": "x.wav", "duration": 1})])
    with pytest.raises(InputError, match=rf"{paths['train']}:2: missing field\(s\) text"):
        run_prepare(RunDir(tmp_path / "run"), cfg_for(paths), Reporter())
    write(paths["train"], lines[:1] + [json.dumps({"audio_filepath": "nowhere.wav", "duration": 1, "text": "x"})])
    with pytest.raises(InputError, match=rf"{paths['train']}:2: audio file nowhere.wav does not exist"):
        run_prepare(RunDir(tmp_path / "run"), cfg_for(paths), Reporter())
    write(paths["train"], lines)
    align = paths["align"].read_text(encoding="utf-8").splitlines()
    write(paths["align"], align + [json.dumps({"audio_filepath": "wav/a0_0.wav", "duration": 0.5})])
    with pytest.raises(InputError, match=rf"{paths['align']}:9: no image path") as info:
        run_prepare(RunDir(tmp_path / "run"), cfg_for(paths), Reporter())
    assert "image_filepath" in info.value.hint


def test_missing_or_corrupt_image_drops_the_pair(tmp_path):
    data = tmp_path / "data"
    bad = data / "img" / "corrupt.png"
    bad.parent.mkdir(parents=True)
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 32)
    extra = [dict(audio_filepath=str(audio(data / "wav" / "a0_x.wav")), duration=0.5, image_filepath="img/gone.png"),
             dict(audio_filepath=str(audio(data / "wav" / "a0_y.wav")), duration=0.5, image_filepath=str(bad))]
    result = run_prepare(RunDir(tmp_path / "run"), cfg_for(corpus(data, extra)), Reporter())
    card = json.loads(Path(result.data_card).read_text(encoding="utf-8"))
    assert card["corpus"]["dropped"]["align"] == {"corrupt_image": 1, "missing_image": 1}
    assert result.counts["align"] == 8


def test_dev_speaker_in_train_is_an_error(tmp_path):
    paths = corpus(tmp_path / "data", dev_speaker="t1")
    with pytest.raises(InputError) as info:
        run_prepare(RunDir(tmp_path / "run"), cfg_for(paths), Reporter())
    assert "dev/test line(s) share a speaker" in info.value.message and f"{paths['dev']}:1" in info.value.message
    assert "speaker 't1'" in info.value.message and "move those speakers" in info.value.hint


def test_config_needs_all_four_manifests(tmp_path):
    with pytest.raises(ConfigError) as info:
        PrepareConfig(source="manifest", train=str(tmp_path / "nope.jsonl")).validate()
    msg = info.value.message
    assert "--dev is required" in msg and "--align is required" in msg and "nope.jsonl does not exist" in msg
    with pytest.raises(ConfigError, match="only apply to --source manifest"):
        PrepareConfig(source="builtin", train="x.jsonl").validate()


def test_cli_manifest_source(tmp_path):
    from tests.unit.test_prepare import _app

    paths = corpus(tmp_path / "data")
    args = ["prepare", "-r", str(tmp_path / "run"), "--source", "manifest", "--json", "--workers", "1"]
    for split, path in paths.items():
        args += [f"--{split}", str(path)]
    result = CliRunner().invoke(_app(), args)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["counts"] == {"align": 8, "train": 7, "dev": 1, "test": 2}


def vaani_file(root: Path, state: str, district: str, speaker: str, i: int) -> Path:
    return audio(root / "wav" / f"IISc_VaaniProject_M_{state}_{district}_{speaker}_0821160000_GENERIC_{i:04d}_1_1.wav",
                 seed=i)


def test_placeholder_speakers_are_not_one_speaker(tmp_path):
    """Vaani's speakerID is often the placeholder "NA": the speaker then comes from the file name, else it is
    unknown (counted, never a speaker of its own), in BYO manifests as in Vaani itself."""
    data = tmp_path / "data"
    rows: dict[str, list] = {s: [] for s in SPLITS}
    i = 0
    for split, speakers in (("train", ("S1", "S2")), ("dev", ("S3",)), ("test", ("S4",)), ("align", ("S5", "S6"))):
        for spk in speakers:
            for _ in range(2):
                i += 1
                row = dict(audio_filepath=str(vaani_file(data, "KA", "DakshinKannada", spk, i)), duration=0.5,
                           speaker=("NA", "N/A", "")[i % 3])
                if split == "align":
                    row["image_filepath"] = str(image(data / "img" / f"{i}.png", i))
                else:
                    row["text"] = "ಹಸಿರು ಹುಲ್ಲು"
                rows[split].append(row)
    # no usable column and no speaker in the file name: unknown, in train and in test
    rows["train"].append(dict(audio_filepath=str(audio(data / "wav" / "clip0001.wav")), duration=0.5, text="ಮರ",
                              speakerID="NA"))
    rows["test"].append(dict(audio_filepath=str(audio(data / "wav" / "clip0002.wav", seed=3)), duration=0.5,
                             text="ಮನೆ", speaker="NA"))
    paths = {s: write(tmp_path / f"{s}.jsonl", r) for s, r in rows.items()}
    result = run_prepare(RunDir(tmp_path / "run"), cfg_for(paths), Reporter())
    assert result.speakers == {"align": 2, "train": 2, "dev": 1, "test": 1}
    assert result.unknown_speaker_rows == {"align": 0, "train": 1, "dev": 0, "test": 1}
    card = json.loads(Path(result.data_card).read_text(encoding="utf-8"))
    assert card["disjointness"]["passed"] and card["unknown_speaker_rows"] == result.unknown_speaker_rows
    assert card["speaker_ids"]["train"] == ["KA_DakshinKannada_S1", "KA_DakshinKannada_S2"]
    manifest = read_manifest(RunDir(tmp_path / "run").manifest("test"))
    assert sorted(r["speaker"] for r in manifest) == ["KA_DakshinKannada_S4"] * 2 + ["unknown"]
