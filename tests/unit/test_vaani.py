"""``avasr prepare --source vaani`` on Vaani-shaped local snapshots built on the fly (never the hub).

:func:`write_snapshot` writes both datasets the way ``hf download --repo-type dataset`` leaves them: one
folder per config holding parquet files with the real column names (``audio`` and ``image`` as
``{bytes, path}`` structs tagged as datasets ``Audio``/``Image`` features) and Vaani's quirks.
"""

import io
import json
import unicodedata
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from avasr_cli.data.vaani import shards as vaani_shards
from avasr_cli.data.vaani import source as vaani
from avasr_cli.data.manifest import SPLITS, read_manifest
from avasr_cli.errors import InputError
from avasr_cli.progress import Reporter
from avasr_cli.run import RunDir
from avasr_cli.stages.prepare import PrepareConfig, run_prepare

FAKE_TOKEN = "hf_FAKEtokenNEVERwrittenANYWHERE42"
KN_WORDS = ["ಚಿತ್ರದಲ್ಲಿ", "ಒಂದು", "ಮರ", "ಇದೆ", "ಹಸಿರು", "ಹುಲ್ಲು", "ಮನೆ", "ನೀಲಿ", "ಆಕಾಶ", "ಕೋಣೆ"]
COLUMNS = ("audio", "language", "languagesKnown", "gender", "state", "district", "pincode", "stay(years)",
           "isTranscriptionAvailable", "transcript", "referenceImage")


def wav(seconds: float, sr: int = 16000, channels: int = 1, seed: int = 0, silent: bool = False) -> bytes:
    rng = np.random.default_rng(seed)
    n = int(seconds * sr)
    t = np.arange(n) / sr
    x = 0.3 * np.sin(2 * np.pi * (150 + 20 * seed % 200) * t) + 0.05 * rng.standard_normal(n)
    x = np.zeros(n) if silent else x
    buf = io.BytesIO()
    sf.write(buf, np.stack([x] * channels, axis=1).astype(np.float32), sr, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def picture(seed: int, fmt: str = "PNG") -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (seed * 40 % 256, 90, 160)).save(buf, format=fmt)
    return buf.getvalue()


def vaani_name(district: str, speaker: str, i: int) -> str:
    return f"IISc_VaaniProject_M_Karnataka_{district}_{speaker}_0821160000_GENERIC_{i:04d}_1_1.wav"


def write_parquet(path: Path, rows: list[dict], columns, row_group_size: int | None = None) -> None:
    """Parquet as the hub serves it: ``audio``/``image`` as {bytes, path} tagged as datasets features,
    ``pincode`` int64, ``duration`` float64, everything else string."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from datasets import Audio, Features, Image, Value

    blob = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    arrays, feats = {}, {}
    for col in columns:
        values = [r.get(col) for r in rows]
        if col in ("audio", "image"):
            arrays[col], feats[col] = pa.array(values, type=blob), Audio() if col == "audio" else Image()
        elif col == "pincode":
            arrays[col], feats[col] = pa.array(values, type=pa.int64()), Value("int64")
        elif col == "duration":
            arrays[col], feats[col] = pa.array(values, type=pa.float64()), Value("float64")
        else:
            arrays[col] = pa.array([None if v is None else str(v) for v in values], type=pa.string())
            feats[col] = Value("string")
    table = pa.table(arrays).replace_schema_metadata(
        {"huggingface": json.dumps({"info": {"features": Features(feats).to_dict()}})})
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path, row_group_size=row_group_size)


def utterance(district: str, speaker: str, i: int, audio: bytes, text: str = "", image: str = "",
              lang: str = "Kannada", speaker_col: bool = False, gender: str = "Female") -> dict:
    row = dict(audio={"bytes": audio, "path": vaani_name(district, speaker, i)}, language=lang,
               languagesKnown="['Kannada']", gender=gender, state="Karnataka", district=district, pincode=560001,
               **{"stay(years)": "10"}, isTranscriptionAvailable="Yes" if text else "No", transcript=text,
               referenceImage=image)
    if speaker_col:
        row["speakerID"] = speaker
    return row


def sentence(k: int) -> str:
    return " ".join(KN_WORDS[(k + j) % len(KN_WORDS)] for j in range(3))


def write_snapshot(root: Path, quirks: bool = True, align_speakers: int = 4, align_per_speaker: int = 5,
                   train_speakers: int = 4, train_per_speaker: int = 4, seconds: float = 0.6,
                   sr: int = 16000) -> tuple[Path, Path]:
    """Both datasets as local snapshots under ``root``: ``root/vaani`` and ``root/transcribed`` (also used by
    benchmarks/prepare_throughput.py)."""
    tr, va = root / "transcribed", root / "vaani"
    cols = COLUMNS + ("speakerID",)
    k = 0

    def utt(district, spk, text="", image="", audio=None, **kw):
        nonlocal k
        k += 1
        return utterance(district, spk, k, audio if audio is not None else wav(seconds, sr=sr, seed=k), text, image,
                         **kw)

    train = [utt("Bangalore", f"1{s:03d}", sentence(k), speaker_col=True, gender=("Male", "Female")[s % 2])
             for s in range(train_speakers) for _ in range(train_per_speaker)]
    dev = [utt("Bangalore", "2001", sentence(k), speaker_col=True) for _ in range(3)]
    test = [utt("Bangalore", f"300{s}", sentence(k), speaker_col=True, gender="Male") for s in (1, 2) for _ in range(2)]
    images = {f"img_{i:02d}.{'jpg' if i % 2 else 'png'}": picture(i, "JPEG" if i % 2 else "PNG") for i in range(6)}
    names = sorted(images)
    align = [utt("Bangalore", f"5{s:03d}", image=names[(s + j) % len(names)])
             for s in range(align_speakers) for j in range(align_per_speaker)]
    mysore = [utt("Mysore", f"600{s}", image=names[s]) for s in (1, 2) for _ in range(3)]
    patna = [utt("Patna", "7001", image=names[0], lang="Hindi") for _ in range(3)]
    image_rows = [{"image": {"bytes": b, "path": n}} for n, b in images.items()]
    if quirks:
        train += [
            utt("Bangalore", "1000", "ಆಪಿಸ್{office} <noise>ಶಬ್ದ</noise> ಹೌದು <pause>ಸರಿ</pause> [...] ಹೋಗು--",
                speaker_col=True),
            utt("Bangalore", "1000", unicodedata.normalize("NFD", "ಕೋಣೆ ಕೋಣೆ"), speaker_col=True),
            utt("Bangalore", "1001", "यह हिंदी में है", speaker_col=True),  # wrong script
            utt("Bangalore", "1001", "hello world", speaker_col=True),  # wrong script
            utt("Bangalore", "1001", "<noise> [...]", speaker_col=True),  # empty after cleaning
            utt("Bangalore", "1002", sentence(1), audio=wav(25.0), speaker_col=True),  # too long
            utt("Bangalore", "1002", sentence(2), audio=wav(1.0, sr=8000, channels=2), speaker_col=True),  # 8k stereo
            utt("Bangalore", "1003", sentence(3), audio=b"RIFF\x24\x00\x00\x00WAVEgarbage", speaker_col=True),
            utt("Bangalore", "1003", sentence(4), audio=wav(1.0, silent=True), speaker_col=True),  # silent
            utt("Bangalore", "2001", sentence(5), speaker_col=True),  # a dev speaker in train
        ]
        align += [
            utt("Bangalore", "5000", image=""), utt("Bangalore", "5001", image=""),  # empty image names
            utt("Bangalore", "5002", image="img_missing.png"),
            utt("Bangalore", "5003", image="img_corrupt.png"),
            utt("Bangalore", "5003", image="img_copy.png"),  # same bytes as another name: stored once
            utt("Bangalore", "2001", image=names[1]), utt("Bangalore", "2001", image=names[2]),  # dev speaker
            dict(train[0], referenceImage=names[3], transcript=""),  # repeats a train utterance
            utt("Bangalore", "5000", image=names[0], lang="Hindi"),  # another language: only in a district config
            utt("Bangalore", "5001", image=names[1], audio=b"\x00" * 64),  # corrupt audio
            utt("Bangalore", "5002", image=names[2], audio=wav(21.0, sr=8000)),  # too long
        ]
        image_rows += [{"image": {"bytes": picture(99), "path": names[1]}},  # duplicate name: first wins
                       {"image": {"bytes": images[names[0]], "path": "img_copy.png"}},  # same bytes, other name
                       {"image": {"bytes": b"\x89PNG\r\n\x1a\n" + b"\x00" * 40, "path": "img_corrupt.png"}},
                       {"image": {"bytes": picture(7), "path": "unused.png"}}]
    write_parquet(tr / "Kannada" / "train-00000-of-00001.parquet", train, cols)
    write_parquet(tr / "Kannada" / "validation-00000-of-00001.parquet", dev, cols)
    write_parquet(tr / "Kannada" / "test-00000-of-00001.parquet", test, cols)
    write_parquet(tr / "Hindi" / "train-00000-of-00001.parquet",
                  [utt("Patna", "7001", "यह हिंदी है", lang="Hindi", speaker_col=True)], cols)
    other_language = [r for r in align if r["language"] != "Kannada"]
    kannada = [r for r in align if r["language"] == "Kannada"] + mysore
    write_parquet(va / "audio" / "Kannada" / "train-00000-of-00001.parquet", kannada, COLUMNS)  # the language config
    write_parquet(va / "audio" / "Hindi" / "train-00000-of-00001.parquet", patna, COLUMNS)
    # per-district configs holding the same clips again (never read while the language config exists)
    write_parquet(va / "audio" / "Karnataka" / "Bangalore" / "train-00000-of-00001.parquet", align, COLUMNS)
    missing = tuple(c for c in COLUMNS if c not in ("pincode", "stay(years)"))  # a subset lacking columns
    write_parquet(va / "audio" / "Karnataka" / "Mysore" / "train-00000-of-00001.parquet", mysore, missing)
    write_parquet(va / "audio" / "Bihar" / "Patna" / "train-00000-of-00001.parquet", patna + other_language, COLUMNS)
    write_parquet(va / "images" / "train-00000-of-00001.parquet", image_rows, ("image",))
    return va, tr


@pytest.fixture(scope="module")
def snapshot(tmp_path_factory):
    return write_snapshot(tmp_path_factory.mktemp("snap"))


def config(snapshot, **kw) -> PrepareConfig:
    va, tr = snapshot
    return PrepareConfig(source="vaani", lang=kw.pop("lang", "Kannada"), dataset=str(va), transcribed_dataset=str(tr),
                         workers=kw.pop("workers", 1), shard_size=kw.pop("shard_size", 4), **kw)


def manifests(run: RunDir) -> dict[str, list[dict]]:
    return {s: read_manifest(run.manifest(s)) for s in SPLITS}


# ------------------------------------------------------------------------------------------------ tests
def test_local_layout_and_config_selection(snapshot):
    va, tr = snapshot
    ds = vaani.VaaniDataset(str(va), None, None)
    assert ds.configs() == ["audio", "audio/Bihar", "audio/Bihar/Patna", "audio/Hindi", "audio/Kannada",
                            "audio/Karnataka", "audio/Karnataka/Bangalore", "audio/Karnataka/Mysore", "images"]
    picked = vaani.select_configs(ds.ref, ds.configs(), "kannada", ())
    assert (picked.configs, picked.by_language, picked.estimate) == (["audio/Kannada"], True, ["audio/Kannada"])
    mysore = vaani.select_configs(ds.ref, ds.configs(), "kannada", ("mysore",))
    assert (mysore.configs, mysore.estimate) == (["audio/Kannada"], ["audio/Karnataka/Mysore"])
    districts = ["audio/Karnataka/Bangalore", "Karnataka_Mysore", "images"]  # no language config: districts only
    assert vaani.select_configs("x", districts, "kannada", ("Karnataka/Mysore",)).configs == ["Karnataka_Mysore"]
    with pytest.raises(InputError, match="no config for language 'kannada'"):
        vaani.select_configs("x", districts, "kannada", ())
    assert vaani.select_configs("x", ["Hindi", "KANNADA"], "kannada", ()).configs == ["KANNADA"]
    assert vaani.select_configs("x", ["audio/Hindi", "audio/Bihar/Patna"], "hindi", ()).configs == ["audio/Hindi"]
    assert sorted(vaani.VaaniDataset(str(tr), None, None).files("Kannada")) == ["test", "train", "validation"]
    assert vaani.speaker_keys(None, vaani_name("Mysore", "6001", 3)) == ("Karnataka_Mysore_6001",
                                                                         ["karnataka_mysore_6001"])
    # one speaker, one key: the row with a real speakerID and the row with the placeholder agree
    assert vaani.speaker_keys("6001", vaani_name("Mysore", "6001", 3))[0] == "Karnataka_Mysore_6001"
    assert vaani.speaker_keys("6001", vaani_name("Mysore", "6001", 3))[0] == vaani.speaker_keys("NA", vaani_name("Mysore", "6001", 4))[0]
    # the leak check is stricter than the key: a column id that differs from the name's field still matches
    # the name's key (and the bare id), folded for case
    with_col = vaani.speaker_keys("0042", vaani_name("Mysore", "S0042", 3))
    assert with_col[0] == "Karnataka_Mysore_0042"
    assert set(vaani.speaker_keys(None, vaani_name("Mysore", "s0042", 5))[1]) <= set(with_col[1])
    assert vaani.speaker_keys("6001", "clip_0003.wav") == ("6001", ["6001"])  # no Vaani name: the column
    assert vaani.speaker_keys("NA", vaani_name("Mysore", "6001", 3))[0] == "Karnataka_Mysore_6001"
    assert vaani.speaker_keys(None, "spk12_0003.wav")[0] == "spk12"
    assert vaani.speaker_keys("N/A", "recording.wav") == (vaani.UNKNOWN_SPEAKER, [])
    assert vaani.parse_ref("ARTPARK-IISc/Vaani@abc123", None) == ("ARTPARK-IISc/Vaani", "abc123")


def test_prepare_vaani_counts_cleaning_and_disjointness(snapshot, tmp_path):
    run = RunDir(tmp_path / "run")
    result = run_prepare(run, config(snapshot), Reporter())
    rows = manifests(run)
    card = json.loads(Path(result.data_card).read_text(encoding="utf-8"))
    corpus = card["corpus"]
    assert corpus["dropped"]["train"] == {"corrupt_audio": 1, "empty_or_silent": 1, "empty_transcript": 1,
                                          "too_long": 1, "wrong_script": 2}
    assert corpus["dropped"]["align"] == {"corrupt_audio": 1, "no_image_name": 2, "too_long": 1}
    assert corpus["dropped"]["assembly"] == {"align_dev_test_speaker": 2, "align_repeats_train_utterance": 1,
                                             "train_speaker_in_dev_test": 1}
    assert corpus["dropped"]["images"] == {"align_image_corrupt": 1, "align_image_missing": 1}
    # two names share one picture's bytes; one name appears twice (first wins)
    assert corpus["images"] == {"needed": 9, "found": 7, "stored": 6, "reused": 0, "row_groups_read": 1,
                                "row_groups": 1, "duplicate_names": 1}
    assert corpus["resampled_or_downmixed"] == 1
    # 4x4 train + braces + NFD + 8 kHz stereo; 3 dev; 4 test; 4x5 Bangalore + img_copy + 6 Mysore pairs
    assert result.counts == {"align": 27, "train": 19, "dev": 3, "test": 4}
    assert card["disjointness"]["passed"] and corpus["eval_leak_check"]["passed"]
    assert corpus["eval_splits"] == {"dev": "official", "test": "official"}
    heard = {r["speaker"] for s in ("align", "train") for r in rows[s]}
    assert not heard & {r["speaker"] for s in ("dev", "test") for r in rows[s]}
    assert "Bangalore_2001" not in heard and "2001" not in heard
    assert set(card["districts"]["align"]) == {"Karnataka/Bangalore", "Karnataka/Mysore"}
    assert corpus["configs"]["audio"]["configs"] == ["audio/Kannada"]  # the district configs are not read
    assert card["utterances_by_gender"]["test"] == {"male": 4} and card["hours"]["train"] > 0
    by_raw = {r["text_raw"]: r for r in rows["train"]}
    braces = next(r for raw, r in by_raw.items() if "{office}" in raw)
    assert braces["text"] == "ಆಪಿಸ್ ಶಬ್ದ ಹೌದು ಸರಿ ಹೋಗು"  # the words a tag pair wraps are speech
    nfd = by_raw[unicodedata.normalize("NFD", "ಕೋಣೆ ಕೋಣೆ")]  # the raw transcript is kept exactly
    assert nfd["text"] == unicodedata.normalize("NFC", "ಕೋಣೆ ಕೋಣೆ") != nfd["text_raw"]
    for split, split_rows in rows.items():
        for r in split_rows:
            assert unicodedata.is_normalized("NFC", r["text"]) and r["lang"] == "kannada"
            info = sf.info(r["audio_filepath"])
            assert (info.samplerate, info.channels, info.format) == (16000, 1, "FLAC")
            assert abs(info.frames / 16000 - r["duration"]) < 1e-3 and r["duration"] <= 20
            if split == "align":
                assert r["text"] == "" and Path(r["image_filepath"]).is_file()
                assert r["image_sha256"] in r["image_filepath"]
    stereo = [r for r in rows["train"] if abs(r["duration"] - 1.0) < 1e-3]
    assert len(stereo) == 1
    assert len({r["image_sha256"] for r in rows["align"]}) == 6
    assert all("speakerID" not in r and "speaker_keys" not in r for s in rows.values() for r in s)


def test_hour_caps_keep_a_prefix(snapshot, tmp_path):
    full = run_prepare(RunDir(tmp_path / "a"), config(snapshot), Reporter())
    capped = run_prepare(RunDir(tmp_path / "b"), config(snapshot, max_align_hours=1.5 / 3600 * 3,
                                                        max_train_hours=0.6 * 3 / 3600), Reporter())
    assert capped.corpus_dir == full.corpus_dir  # same cache: the caps only choose a prefix
    assert capped.counts["train"] == 3 and capped.counts["align"] < full.counts["align"]
    assert capped.reused_cache


def test_second_run_dir_shares_the_cache_without_decoding(snapshot, tmp_path, monkeypatch):
    first = run_prepare(RunDir(tmp_path / "a"), config(snapshot), Reporter())
    files = sorted(Path(first.corpus_dir).rglob("*.flac"))
    mtimes = [p.stat().st_mtime_ns for p in files]

    def boom(*a, **k):
        raise AssertionError("the cache should have been used")

    monkeypatch.setattr(vaani_shards, "process_shard", boom)
    monkeypatch.setattr(vaani.VaaniDataset, "open", boom)  # not even the datasets are opened
    second = run_prepare(RunDir(tmp_path / "b"), config(snapshot), Reporter())
    assert second.reused_cache and second.corpus_dir == first.corpus_dir
    assert [p.stat().st_mtime_ns for p in files] == mtimes
    for split in SPLITS:
        assert Path(first.manifests[split]).read_bytes() == Path(second.manifests[split]).read_bytes()
    other = config(snapshot, seed=1)
    monkeypatch.undo()
    assert run_prepare(RunDir(tmp_path / "c"), other, Reporter()).corpus_dir != first.corpus_dir


def test_interrupted_prepare_resumes_without_redoing_shards(snapshot, tmp_path, monkeypatch):
    real, calls = vaani_shards.process_shard, []

    def counting(task):
        calls.append((task["phase"], task["index"]))
        return real(task)

    def flaky(task):
        if len(calls) == 5:
            raise KeyboardInterrupt("interrupted")
        return counting(task)

    monkeypatch.setattr(vaani_shards, "process_shard", flaky)
    run = RunDir(tmp_path / "run")
    with pytest.raises(KeyboardInterrupt):
        run_prepare(run, config(snapshot), Reporter())
    before = list(calls)
    calls.clear()
    monkeypatch.setattr(vaani_shards, "process_shard", counting)
    resumed = run_prepare(run, config(snapshot), Reporter())
    after = list(calls)
    monkeypatch.setattr(vaani_shards, "process_shard", real)
    monkeypatch.setenv("AVASR_HOME", str(tmp_path / "fresh-home"))
    clean = run_prepare(RunDir(tmp_path / "clean"), config(snapshot), Reporter())
    shards = {(p.parent.name, int(p.stem)) for p in Path(clean.corpus_dir).glob("shards/*/[0-9]*.json")}
    assert len(before) == 5 and not set(before) & set(after)  # nothing finished was redone
    assert set(before) | set(after) == shards and not resumed.reused_cache
    for split in SPLITS:  # and the result equals a clean run's
        a = Path(resumed.manifests[split]).read_text().replace(resumed.corpus_dir, "ROOT")
        assert a == Path(clean.manifests[split]).read_text().replace(clean.corpus_dir, "ROOT")


def test_two_workers_give_the_same_manifests(snapshot, tmp_path, monkeypatch):
    one = run_prepare(RunDir(tmp_path / "one"), config(snapshot), Reporter())
    monkeypatch.setenv("AVASR_HOME", str(tmp_path / "home2"))
    two = run_prepare(RunDir(tmp_path / "two"), config(snapshot, workers=2), Reporter())
    for split in SPLITS:
        a = Path(one.manifests[split]).read_text().replace(one.corpus_dir, "ROOT")
        assert a == Path(two.manifests[split]).read_text().replace(two.corpus_dir, "ROOT")


def test_token_is_never_written(snapshot, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from tests.unit.test_prepare import _app

    va, tr = snapshot
    run_dir = tmp_path / "run"
    args = ["prepare", "-r", str(run_dir), "--source", "vaani", "--lang", "kannada", "--dataset", str(va),
            "--transcribed-dataset", str(tr), "--workers", "1", "--token", FAKE_TOKEN]
    monkeypatch.setattr("sys.argv", ["avasr", *args])
    result = CliRunner().invoke(_app(), args)
    assert result.exit_code == 0, result.output
    assert FAKE_TOKEN not in result.output
    home = Path(__import__("os").environ["AVASR_HOME"])
    for root in (run_dir, home):
        for f in root.rglob("*"):
            if f.is_file():
                assert FAKE_TOKEN.encode() not in f.read_bytes(), f
    record = json.loads((run_dir / "run.json").read_text())
    assert "***" in record["stages"]["prepare"]["command"]
    assert "token" not in record["stages"]["prepare"]["config"]


def _gated(*args, **kwargs):
    from huggingface_hub.errors import GatedRepoError

    try:
        import httpx2 as httpx
    except ImportError:
        import httpx
    url = "https://huggingface.co/datasets/ARTPARK-IISc/Vaani-transcription-part"
    raise GatedRepoError("Access to dataset ARTPARK-IISc/Vaani-transcription-part is restricted",
                         response=httpx.Response(401, request=httpx.Request("GET", url)))


def test_missing_token_for_a_hub_id_says_how_to_get_access(tmp_path, monkeypatch):
    import datasets
    import huggingface_hub

    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setattr(datasets, "get_dataset_config_names", _gated)
    monkeypatch.setattr(huggingface_hub, "get_token", lambda: None)
    with pytest.raises(InputError) as info:
        run_prepare(RunDir(tmp_path / "run"), PrepareConfig(source="vaani", lang="kannada"), Reporter())
    assert "refused" in info.value.message and "no Hugging Face token" in info.value.message
    assert "hf auth login" in info.value.hint and "HF_TOKEN" in info.value.hint
    assert "https://huggingface.co/datasets/ARTPARK-IISc/Vaani-transcription-part" in info.value.hint
    with pytest.raises(InputError) as info:
        run_prepare(RunDir(tmp_path / "run"), PrepareConfig(source="vaani", lang="kannada"), Reporter(),
                    token=FAKE_TOKEN)
    assert "your token was refused" in info.value.message and FAKE_TOKEN not in info.value.message


def test_unknown_language_and_bad_options(snapshot, tmp_path):
    from avasr_cli.errors import ConfigError

    with pytest.raises(InputError, match="has no config for language 'tamil'"):
        run_prepare(RunDir(tmp_path / "run"), config(snapshot, lang="tamil"), Reporter())
    with pytest.raises(ConfigError) as info:
        config(snapshot, max_align_hours=0, max_duration=-1, workers=0, train="x.jsonl").validate()
    for part in ("--max-align-hours", "--max-duration", "--workers", "--train"):
        assert part in info.value.message


def test_hub_ids_go_through_the_same_code(snapshot, tmp_path, monkeypatch):
    """A fake hub serving the snapshot: hub ids, revisions and the token reach ``datasets`` unchanged."""
    from tests.unit.test_vaani_snapshot import FakeHub

    va, tr = snapshot
    names = {"ARTPARK-IISc/Vaani": {c: c for c in ("audio/Kannada", "audio/Hindi", "audio/Karnataka/Bangalore",
                                                   "audio/Karnataka/Mysore", "audio/Bihar/Patna", "images")},
             "ARTPARK-IISc/Vaani-transcription-part": {"Kannada": "Kannada", "Hindi": "Hindi"}}
    hub = FakeHub(monkeypatch, {"ARTPARK-IISc/Vaani": va, "ARTPARK-IISc/Vaani-transcription-part": tr}, names=names)
    cfg = PrepareConfig(source="vaani", lang="kannada", workers=1, shard_size=4, revision="v1",
                        dataset="ARTPARK-IISc/Vaani@abc")
    result = run_prepare(RunDir(tmp_path / "run"), cfg, Reporter(), token=FAKE_TOKEN)
    assert result.counts == {"align": 27, "train": 19, "dev": 3, "test": 4}
    assert {(p, r, t) for p, *_, r, t in hub.loads} == {("ARTPARK-IISc/Vaani", "abc", FAKE_TOKEN),
                                                        ("ARTPARK-IISc/Vaani-transcription-part", "v1", FAKE_TOKEN)}
    assert {(p, r) for p, r, _ in hub.listed} == {("ARTPARK-IISc/Vaani", "abc"),
                                                  ("ARTPARK-IISc/Vaani-transcription-part", "v1")}
    card = Path(result.data_card).read_text(encoding="utf-8")
    assert '"revision": "abc"' in card and FAKE_TOKEN not in card


def test_missing_official_eval_splits_are_carved_by_speaker(tmp_path):
    va, tr = write_snapshot(tmp_path / "snap", quirks=False, train_speakers=40, train_per_speaker=2,
                            align_speakers=2, align_per_speaker=3, seconds=0.3)
    for split in ("validation", "test"):
        (tr / "Kannada" / f"{split}-00000-of-00001.parquet").unlink()
    result = run_prepare(RunDir(tmp_path / "run"), config((va, tr)), Reporter())
    card = json.loads(Path(result.data_card).read_text(encoding="utf-8"))
    assert card["corpus"]["eval_splits"] == {"dev": "carved from train by speaker hash",
                                             "test": "carved from train by speaker hash"}
    assert result.counts["dev"] > 0 and result.counts["test"] > 0 and card["disjointness"]["passed"]
    assert sum(result.counts[s] for s in ("train", "dev", "test")) == 80
