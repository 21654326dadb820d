"""``prepare --source vaani`` on Vaani as it is published (issue 14), never the hub itself.

:func:`write_published` builds both repositories the way ``hf download --repo-type dataset`` leaves them, from
the facts gathered by public loaders and audits of ``ARTPARK-IISc/Vaani`` and
``ARTPARK-IISc/Vaani-transcription-part``:

* audio parquet under ``audio/<Language>/…`` in both; main Vaani also has per-district configs holding the
  same clips again (``audio/<State>/<District>``, two states with a district named ``Aurangabad``) and an
  ``images`` config (``image`` = {bytes, path}, several shards, small row groups);
* the real column sets: main Vaani with ``duration``, ``speakerID`` (mostly the placeholder ``"NA"``),
  ``pincode`` as int64 …; the transcription part without ``speakerID`` or ``duration``;
* transcripts whose tag pairs wrap spoken words, point tags, speaker sounds, braces, ``--``;
* shared rows (``isTranscriptionAvailable=Yes``) with the same file names in both repositories, one whose
  two transcripts differ only by a closing tag;
* file names ``IISc_VaaniProject_<S>_<State>_<District>_<speaker>_…`` with the state abbreviated (``KA``).

:func:`write_older` is an older revision: ``{State}_{District}`` configs only, no language config, and no
``speakerID``/``duration`` columns. :class:`FakeHub` serves these folders under the hub ids (config names as
the hub lists them, streaming datasets, the file listing, ``hf://`` files) and can refuse one repository the
ways ``datasets`` surfaces a gated refusal.
"""

from __future__ import annotations

import json
import shutil
import types
from pathlib import Path

import pytest
import soundfile as sf

from avasr_cli.data.manifest import SPLITS, read_manifest
from avasr_cli.data.text import clean_transcript
from avasr_cli.errors import ConfigError, InputError, ResourceError
from avasr_cli.progress import Reporter
from avasr_cli.run import RunDir
from avasr_cli.stages.prepare import PrepareConfig, run_prepare
from tests.unit.test_vaani import KN_WORDS, picture, wav, write_parquet

MAIN = ("audio", "language", "duration", "speakerID", "languagesKnown", "gender", "state", "district", "pincode",
        "stay(years)", "isTranscriptionAvailable", "transcript", "referenceImage", "speakerImageHash",
        "UtteranceSequenceID")
OLD_MAIN = tuple(c for c in MAIN if c not in ("speakerID", "duration"))
TRANSCRIBED = ("audio", "language", "gender", "state", "district", "transcript", "referenceImage")
STATES = {"KA": "Karnataka", "Karnataka": "Karnataka", "BR": "Bihar", "MH": "Maharashtra"}
HI_WORDS = ["तस्वीर", "में", "एक", "पेड़", "है", "हरी", "घास", "नीला", "आसमान", "घर"]
SECONDS = 0.6
MAIN_ID, TR_ID = "ARTPARK-IISc/Vaani", "ARTPARK-IISc/Vaani-transcription-part"

# (raw transcript, cleaned reference) of the Kannada markup rows; the cleaned text is what WER is scored against
MARKUP = [
    ("<noise>ಹೌದು ಸರಿ</noise>", "ಹೌದು ಸರಿ"),  # a whole utterance inside a noise pair: kept, not dropped
    ("ಅವರು <people talking>ಬಂದರು ಇಲ್ಲಿ</people talking> <horn> </horn> ಹೋದರು--", "ಅವರು ಬಂದರು ಇಲ್ಲಿ ಹೋದರು"),
    ("[breathing] ಮನೆ ಆಪಿಸ್{office} <static noise>ಇದೆ", "ಮನೆ ಆಪಿಸ್ ಇದೆ"),  # no closing tag
    ("<pause></pause> ನೀಲಿ <PAUSE> ಆಕಾಶ [inhaling]", "ನೀಲಿ ಆಕಾಶ"),
    ("ಹೌದು <Noise>ಬಸ್ ಶಬ್ದ</Noise> ಸರಿ", "ಹೌದು ಬಸ್ ಶಬ್ದ ಸರಿ"),
]
DEV_TEXT = [("<wind noise>ಗಾಳಿ ಬೀಸುತ್ತಿದೆ</wind noise>", "ಗಾಳಿ ಬೀಸುತ್ತಿದೆ"), ("<noise>ಮಳೆ ಬಂತು</noise>", "ಮಳೆ ಬಂತು")]
TEST_LAUGH = ("<laugh>ಹ ಹ</laugh> ಹೌದು", "ಹ ಹ ಹೌದು")
K1 = ("<noise>ಚಿತ್ರದಲ್ಲಿ ಒಂದು ಮರ</noise> ಇದೆ", "<noise>ಚಿತ್ರದಲ್ಲಿ ಒಂದು ಮರ ಇದೆ")  # transcription part, main Vaani


# ------------------------------------------------------------------------------------------------ writing
class Clips:
    """Numbered clips with Vaani file names; every clip is SECONDS of 16 kHz mono 16-bit WAV."""

    def __init__(self):
        self.k = 0

    def __call__(self, lang: str, st: str, district: str, speaker: str, text: str | None = None, image: str = "",
                 speaker_col: str = "NA", name: str | None = None) -> dict:
        self.k += 1
        name = name or f"IISc_VaaniProject_M_{st}_{district}_{speaker}_08211{self.k:05d}_{self.k:04d}.wav"
        return dict(audio={"bytes": wav(SECONDS, seed=self.k), "path": name}, language=lang, duration=SECONDS,
                    speakerID=speaker_col, languagesKnown=f"['{lang}']", gender=("Male", "Female")[self.k % 2],
                    state=STATES[st], district=district, pincode=560000 + self.k, **{"stay(years)": "10"},
                    isTranscriptionAvailable="Yes" if text else "No", transcript=text,
                    referenceImage=f"Images/{STATES[st]}/{image}" if image else "", speakerImageHash="9f2c",
                    UtteranceSequenceID=str(self.k))

    def words(self, vocabulary=KN_WORDS) -> str:
        return " ".join(vocabulary[(self.k + j) % len(vocabulary)] for j in range(3))


def shared(row: dict, transcript: str, image: str) -> dict:
    """The main-Vaani copy of a transcription-part row (same file name and audio)."""
    return dict(row, isTranscriptionAvailable="Yes", transcript=transcript, speakerID="NA",
                referenceImage=f"Images/{row['state']}/{image}")


def write_images(root: Path) -> None:
    """Two shards of ten rows in row groups of two; 'img_00' appears twice (first wins)."""
    names = [["img_00", "img_01", "u_00", "u_01", "u_02", "u_03", "u_04", "u_05", "u_06", "img_02"],
             ["img_03", "img_04", "img_05", "u_07", "u_08", "u_09", "u_10", "u_11", "img_00", "u_12"]]
    for shard, shard_names in enumerate(names):
        rows = [{"image": {"bytes": picture(10 * shard + i, "JPEG"), "path": f"{n}.jpg"}}
                for i, n in enumerate(shard_names)]
        write_parquet(root / "images" / f"train-{shard:05d}-of-00002.parquet", rows, ("image",), row_group_size=2)


def write_published(root: Path) -> tuple[Path, Path]:
    """Both repositories as published: ``root/vaani`` and ``root/transcribed``."""
    va, tr, c = root / "vaani", root / "transcribed", Clips()
    # --- Kannada, transcription part: speakers only in the file names, no duration column
    k1 = c("Kannada", "KA", "DakshinKannada", "T1", K1[0])
    train = [k1] + [c("Kannada", st, d, spk, c.words()) for spk, st, d, n in (
        ("T1", "KA", "DakshinKannada", 2), ("T2", "KA", "DakshinKannada", 3), ("T3", "Karnataka", "Bangalore", 3),
        ("T4", "Karnataka", "Bangalore", 3)) for _ in range(n)]
    train += [c("Kannada", "KA", "DakshinKannada", "T1", MARKUP[0][0]),
              c("Kannada", "KA", "DakshinKannada", "T2", MARKUP[1][0]),
              c("Kannada", "Karnataka", "Bangalore", "T3", MARKUP[2][0]),
              c("Kannada", "Karnataka", "Bangalore", "T4", MARKUP[3][0]),
              c("Kannada", "KA", "DakshinKannada", "T1", MARKUP[4][0]),
              c("Kannada", "KA", "DakshinKannada", "T2", "<noise> </noise> [breathing]"),  # nothing spoken
              c("Kannada", "Karnataka", "Bangalore", "T3", "यह हिंदी में है")]  # wrong script
    dev = [c("Kannada", "KA", "DakshinKannada", "D1", raw) for raw, _ in DEV_TEXT]
    test = [c("Kannada", "Karnataka", "Bangalore", "E1", c.words()), c("Kannada", "Karnataka", "Bangalore", "E1",
                                                                       TEST_LAUGH[0])]
    test += [c("Kannada", "Karnataka", "Bangalore", "E2", c.words()) for _ in range(2)]
    for split, rows in (("train", train), ("validation", dev), ("test", test)):
        write_parquet(tr / "audio" / "Kannada" / f"{split}-00000-of-00001.parquet", rows, TRANSCRIBED)
    # --- Kannada, main Vaani: one speaker with a real speakerID, the others "NA"
    main = [c("Kannada", "KA", "DakshinKannada", "A1", image=f"img_0{i}.jpg", speaker_col="A1") for i in range(3)]
    main += [c("Kannada", "KA", "DakshinKannada", "A2", image=f"img_0{i}.jpg") for i in range(3)]
    main += [shared(k1, K1[1], "img_01.jpg"), shared(dev[0], DEV_TEXT[0][0], "img_02.jpg")]
    main += [c("Kannada", "KA", "DakshinKannada", "A1", image="", speaker_col="A1"),  # no image named
             c("Kannada", "KA", "DakshinKannada", "A2", image="img_missing.jpg")]  # named, absent from images
    main += [c("Kannada", "Karnataka", "Bangalore", "A3", image=f"img_0{i}.jpg") for i in (3, 4, 5)]
    main += [c("Kannada", "Karnataka", "Bangalore", "A4", image=f"img_0{i}.jpg") for i in (3, 4)]
    main += [shared(test[0], test[0]["transcript"], "img_03.jpg"),
             c("Kannada", "Karnataka", "Bangalore", "A9", image="img_05.jpg", name="recording.wav")]  # no speaker
    write_parquet(va / "audio" / "Kannada" / "train-00000-of-00001.parquet", main, MAIN)
    for district in ("DakshinKannada", "Bangalore"):  # the same clips again, per district
        write_parquet(va / "audio" / "Karnataka" / district / "train-00000-of-00001.parquet",
                      [r for r in main if r["district"] == district], MAIN)
    # --- Hindi: a district named Aurangabad in Bihar and in Maharashtra, speaker numbers repeating across them
    hi = {"train": [c("Hindi", "BR", "Aurangabad", "0001", c.words(HI_WORDS)) for _ in range(3)]
          + [c("Hindi", "MH", "Aurangabad", "0002", c.words(HI_WORDS)) for _ in range(2)]
          + [c("Hindi", "BR", "Patna", "0007", c.words(HI_WORDS)) for _ in range(2)],
          "validation": [c("Hindi", "BR", "Aurangabad", "0003", c.words(HI_WORDS)) for _ in range(2)],
          "test": [c("Hindi", "MH", "Aurangabad", "0001", c.words(HI_WORDS)) for _ in range(2)]
          + [c("Hindi", "BR", "Aurangabad", "0006", "<noise>घर में</noise> एक पेड़ है")]}
    for split, rows in hi.items():
        write_parquet(tr / "audio" / "Hindi" / f"{split}-00000-of-00001.parquet", rows, TRANSCRIBED)
    hmain = [c("Hindi", st, d, "0004" if d == "Aurangabad" else "0005", image=f"img_0{i}.jpg")
             for st, d in (("BR", "Aurangabad"), ("MH", "Aurangabad"), ("BR", "Patna")) for i in range(2)]
    write_parquet(va / "audio" / "Hindi" / "train-00000-of-00001.parquet", hmain, MAIN)
    for st, d in (("Bihar", "Aurangabad"), ("Maharashtra", "Aurangabad"), ("Bihar", "Patna")):
        write_parquet(va / "audio" / st / d / "train-00000-of-00001.parquet",
                      [r for r in hmain if (r["state"], r["district"]) == (st, d)], MAIN)
    write_images(va)
    return va, tr


def write_older(root: Path) -> tuple[Path, Path]:
    """An older revision: ``{State}_{District}`` configs, no language config, no speakerID or duration."""
    va, tr, c = root / "vaani", root / "transcribed", Clips()
    dk = [c("Kannada", "KA", "DakshinKannada", spk, image=f"img_0{i}.jpg") for spk in ("A1", "A2") for i in range(3)]
    dk.append(c("Hindi", "KA", "DakshinKannada", "A5", image="img_00.jpg"))  # another language: filtered out
    write_parquet(va / "Karnataka_DakshinKannada" / "train-00000-of-00001.parquet", dk, OLD_MAIN)
    write_parquet(va / "Karnataka_Bangalore" / "train-00000-of-00001.parquet",
                  [c("Kannada", "Karnataka", "Bangalore", "A3", image="img_03.jpg") for _ in range(2)], OLD_MAIN)
    rows = {"train": [c("Kannada", "KA", "DakshinKannada", "T1", c.words()) for _ in range(3)]
            + [c("Kannada", "Karnataka", "Bangalore", "T3", c.words()) for _ in range(3)],
            "validation": [c("Kannada", "KA", "DakshinKannada", "D1", c.words()) for _ in range(2)],
            "test": [c("Kannada", "KA", "DakshinKannada", "E5", c.words()) for _ in range(2)]}
    for split, split_rows in rows.items():
        write_parquet(tr / "Kannada" / f"{split}-00000-of-00001.parquet", split_rows, TRANSCRIBED)
    write_images(va)
    return va, tr


@pytest.fixture(scope="module")
def published(tmp_path_factory):
    return write_published(tmp_path_factory.mktemp("published"))


@pytest.fixture(scope="module")
def older(tmp_path_factory):
    return write_older(tmp_path_factory.mktemp("older"))


def local(snap, lang="kannada", **kw) -> PrepareConfig:
    va, tr = snap
    return PrepareConfig(source="vaani", lang=lang, dataset=str(va), transcribed_dataset=str(tr), workers=1,
                         shard_size=4, **kw)


def card_of(result) -> dict:
    return json.loads(Path(result.data_card).read_text(encoding="utf-8"))


def corpora(home_env: str = "AVASR_HOME") -> list[Path]:
    import os

    return sorted((Path(os.environ[home_env]) / "corpora").glob("*"))


class Recorder(Reporter):
    def __init__(self):
        self.lines: list[str] = []

    def log(self, message: str) -> None:
        self.lines.append(message)

    warn = log


# ------------------------------------------------------------------------------------------------ local
KANNADA_COUNTS = {"align": 12, "train": 17, "dev": 2, "test": 4}


def test_published_kannada_counts_and_references(published, tmp_path):
    run = RunDir(tmp_path / "run")
    result = run_prepare(run, local(published), Reporter())
    card = card_of(result)
    corpus = card["corpus"]
    assert result.counts == KANNADA_COUNTS
    # the language config alone: the district configs holding the same clips are never read
    assert corpus["configs"]["audio"]["configs"] == ["audio/Kannada"]
    assert corpus["configs"]["transcribed"]["configs"] == ["audio/Kannada"]
    assert corpus["dropped"]["train"] == {"empty_transcript": 1, "wrong_script": 1}
    assert corpus["dropped"]["align"] == {"no_image_name": 1}
    assert corpus["dropped"]["assembly"] == {"align_dev_test_speaker": 2, "align_repeats_train_utterance": 1}
    assert corpus["dropped"]["images"] == {"align_image_missing": 1}
    # speakers: "NA" is no speaker; the file name gives one (state kept), a name without one gives unknown
    assert result.speakers == {"align": 4, "train": 4, "dev": 1, "test": 2}
    assert result.unknown_speaker_rows == {"align": 1, "train": 0, "dev": 0, "test": 0}
    # one speaker, one key: A1's rows with a real speakerID and without one are one speaker in the card
    assert card["speaker_ids"]["align"] == ["KA_DakshinKannada_A1", "KA_DakshinKannada_A2", "Karnataka_Bangalore_A3",
                                            "Karnataka_Bangalore_A4"]
    assert card["speaker_ids"]["dev"] == ["KA_DakshinKannada_D1"] and card["disjointness"]["passed"]
    rows = {s: read_manifest(run.manifest(s)) for s in SPLITS}
    by_raw = {r["text_raw"]: r["text"] for s in ("train", "dev", "test") for r in rows[s]}
    for raw, cleaned in MARKUP + DEV_TEXT + [TEST_LAUGH]:
        assert by_raw[raw] == cleaned
    assert by_raw[K1[0]] == clean_transcript(K1[1]) == "ಚಿತ್ರದಲ್ಲಿ ಒಂದು ಮರ ಇದೆ"  # differ only by a closing tag
    for split_rows in rows.values():  # durations from the audio (the transcription part has no column)
        for r in split_rows:
            info = sf.info(r["audio_filepath"])
            assert abs(r["duration"] - SECONDS) < 1e-3 and abs(info.frames / 16000 - SECONDS) < 1e-3
    assert card["districts"]["align"] == {"Karnataka/Bangalore": 6, "Karnataka/DakshinKannada": 6}


def test_only_the_needed_images_are_read(published, tmp_path):
    result = run_prepare(RunDir(tmp_path / "run"), local(published), Reporter())
    images = card_of(result)["corpus"]["images"]
    # 7 names needed (img_00..img_05 and one absent); their rows sit in 4 of the 10 row groups
    assert images == {"needed": 7, "found": 6, "stored": 6, "reused": 0, "row_groups_read": 4, "row_groups": 10,
                      "duplicate_names": 1}


def test_same_named_districts_in_two_states_stay_apart(published, tmp_path):
    both = run_prepare(RunDir(tmp_path / "a"), local(published, "hindi", districts=("Aurangabad",)), Reporter())
    card = card_of(both)
    assert both.counts == {"align": 4, "train": 5, "dev": 2, "test": 3}
    assert card["corpus"]["configs"]["audio"]["configs"] == ["audio/Hindi"]
    assert card["speaker_ids"]["train"] == ["BR_Aurangabad_0001", "MH_Aurangabad_0002"]
    assert card["speaker_ids"]["test"] == ["BR_Aurangabad_0006", "MH_Aurangabad_0001"]
    assert card["speaker_ids"]["align"] == ["BR_Aurangabad_0004", "MH_Aurangabad_0004"]
    assert card["districts"]["align"] == {"Bihar/Aurangabad": 2, "Maharashtra/Aurangabad": 2}
    bihar = run_prepare(RunDir(tmp_path / "b"), local(published, "hindi", districts=("Bihar/Aurangabad",)),
                        Reporter())
    assert bihar.counts == {"align": 2, "train": 3, "dev": 2, "test": 1}
    assert card_of(bihar)["districts"]["train"] == {"Bihar/Aurangabad": 3}


def test_older_revision_needs_districts_and_parses_speakers(older, tmp_path):
    with pytest.raises(InputError) as info:
        run_prepare(RunDir(tmp_path / "x"), local(older), Reporter())
    assert "no config for language 'kannada'" in info.value.message and "--districts" in info.value.message
    assert "Karnataka_DakshinKannada" in info.value.hint
    assert not corpora()
    result = run_prepare(RunDir(tmp_path / "run"), local(older, districts=("DakshinKannada",)), Reporter())
    card = card_of(result)
    assert result.counts == {"align": 6, "train": 3, "dev": 2, "test": 2}
    assert card["corpus"]["configs"]["audio"]["configs"] == ["Karnataka_DakshinKannada"]
    assert card["speaker_ids"]["align"] == ["KA_DakshinKannada_A1", "KA_DakshinKannada_A2"]
    for r in read_manifest(RunDir(tmp_path / "run").manifest("align")):
        assert abs(r["duration"] - SECONDS) < 1e-3


def test_a_district_no_config_names_is_an_error(published, tmp_path):
    with pytest.raises(InputError) as info:
        run_prepare(RunDir(tmp_path / "run"), local(published, districts=("Atlantis",)), Reporter())
    assert "Atlantis" in info.value.message and "DakshinKannada" in info.value.hint
    assert not corpora()


# ------------------------------------------------------------------------------------------------ plan
def test_the_plan_is_printed_before_decoding(published, tmp_path):
    rep = Recorder()
    result = run_prepare(RunDir(tmp_path / "run"), local(published, max_align_hours=1.0), rep)
    text = "\n".join(rep.lines)
    assert "plan" in text and "audio/Kannada" in text and "estimated disk" in text
    plan = card_of(result)["corpus"]["plan"]
    assert plan["phases"]["train"]["rows"] == 19 and plan["phases"]["align"]["rows"] == 17
    assert plan["phases"]["align"]["hours"] == pytest.approx(17 * SECONDS / 3600)  # the duration column
    assert plan["phases"]["train"]["hours"] == pytest.approx(19 * SECONDS / 3600, rel=0.01)  # from the WAV bytes
    assert plan["phases"]["align"]["cap_hours"] == 1.0 and plan["estimated_disk_bytes"] > 0


def test_a_large_job_needs_a_cap_or_all(published, tmp_path, monkeypatch):
    from avasr_cli.data.vaani import plan as vaani_plan

    monkeypatch.setattr(vaani_plan, "LARGE_PHASE_HOURS", 5 * SECONDS / 3600)  # five clips count as large here
    with pytest.raises(ConfigError) as info:
        run_prepare(RunDir(tmp_path / "a"), local(published), Reporter())
    msg = info.value.message
    assert "alignment" in msg and "training" in msg and "--max-align-hours" in info.value.hint
    assert "--all" in info.value.hint and not corpora()
    six = 5.7 * SECONDS / 3600  # a cap reached by the sixth clip
    capped = run_prepare(RunDir(tmp_path / "b"), local(published, max_align_hours=six, max_train_hours=six), Reporter())
    assert capped.counts["train"] == 6 and capped.counts["align"] == 6
    everything = run_prepare(RunDir(tmp_path / "c"), local(published, all=True), Reporter())
    assert everything.counts == KANNADA_COUNTS
    from typer.testing import CliRunner

    from tests.unit.test_prepare import _app

    va, tr = published
    args = ["prepare", "--source", "vaani", "--dataset", str(va), "--transcribed-dataset", str(tr), "--workers", "1"]
    refused = CliRunner().invoke(_app(), [*args, "-r", str(tmp_path / "d")])
    assert refused.exit_code != 0 and isinstance(refused.exception, ConfigError)
    assert not (tmp_path / "d").exists()
    allowed = CliRunner().invoke(_app(), [*args, "-r", str(tmp_path / "e"), "--all", "--json"])
    assert allowed.exit_code == 0, allowed.output
    assert json.loads(allowed.stdout)["counts"] == KANNADA_COUNTS


def test_not_enough_disk_is_refused_before_writing(published, tmp_path, monkeypatch):
    real = shutil.disk_usage
    monkeypatch.setattr(shutil, "disk_usage", lambda p: real(p)._replace(free=4096))
    with pytest.raises(ResourceError) as info:
        run_prepare(RunDir(tmp_path / "run"), local(published), Reporter())
    assert "disk space" in info.value.message and "estimated" in info.value.message
    assert not corpora()


# ------------------------------------------------------------------------------------------------ hub
HUB_NAMES = {  # config names as the hub lists them → the folder holding their files
    TR_ID: {"Kannada": "audio/Kannada", "Hindi": "audio/Hindi"},
    MAIN_ID: {"audio/Kannada": "audio/Kannada", "audio/Hindi": "audio/Hindi",
              "audio/Karnataka/DakshinKannada": "audio/Karnataka/DakshinKannada",
              "audio/Karnataka/Bangalore": "audio/Karnataka/Bangalore",
              "audio/Bihar/Aurangabad": "audio/Bihar/Aurangabad",
              "audio/Maharashtra/Aurangabad": "audio/Maharashtra/Aurangabad", "audio/Bihar/Patna": "audio/Bihar/Patna",
              "images": "images"},
}


def _gated_error(repo: str):
    from huggingface_hub.errors import GatedRepoError

    try:
        import httpx2 as httpx
    except ImportError:
        import httpx
    url = f"https://huggingface.co/api/datasets/{repo}/auth-check"
    return GatedRepoError(f"Access to dataset {repo} is restricted. You must have access to it and be authenticated",
                          response=httpx.Response(403, request=httpx.Request("GET", url)))


class FakeHub:
    """The Hub as prepare sees it, serving the local folders. ``refuse[repo]`` is raised when that repository's
    data is read (listing configs and files still works, as on the real hub); ``gated`` are the repositories the
    access check (``HfApi.auth_check``) reports as gated; ``glob_bug`` makes ``load_dataset(hub id)`` fail as
    some fsspec versions do."""

    def __init__(self, monkeypatch, roots: dict[str, Path], refuse: dict | None = None, gated=(), glob_bug=False,
                 names: dict | None = None):
        import datasets
        import huggingface_hub

        names = names or HUB_NAMES
        self.roots, self.refuse, self.seen = roots, refuse or {}, []
        self.loads: list[tuple] = []  # (repo, config, revision, token) of every load_dataset(<hub id>)
        self.listed: list[tuple] = []  # (repo, revision, token) of every listing
        real_load = datasets.load_dataset
        hub = self

        def files_of(repo, folder):
            out: dict[str, list[str]] = {}
            for f in sorted((roots[repo] / folder).rglob("*.parquet")):
                out.setdefault(f.name.split("-")[0], []).append(str(f))
            return out

        def configs(path, revision=None, token=None, **kw):
            return list(names[path])

        def load(path, name=None, **kw):
            if path == "parquet":
                files = {s: [hub.local_path(u) for u in urls] for s, urls in kw.pop("data_files").items()}
                hub.seen.append(("parquet", sorted(files)))
                return real_load("parquet", data_files=files, **kw)
            hub.seen.append((path, name))
            hub.loads.append((path, name, kw.get("revision"), kw.get("token")))
            if glob_bug:
                raise ValueError("Invalid pattern: '**' can only be an entire path component")
            if path in hub.refuse:
                exc = hub.refuse[path]

                def refused():
                    raise exc
                    yield  # pragma: no cover

                return datasets.IterableDatasetDict({"train": datasets.IterableDataset.from_generator(refused)})
            return real_load("parquet", data_files=files_of(path, names[path][name]), streaming=True)

        def list_repo_tree(api, repo_id, path_in_repo=None, recursive=False, revision=None, repo_type=None,
                           token=None, **kw):
            assert recursive and repo_type == "dataset"
            hub.listed.append((repo_id, revision, token))
            return [types.SimpleNamespace(path=str(f.relative_to(roots[repo_id])), size=f.stat().st_size)
                    for f in sorted(roots[repo_id].rglob("*")) if f.is_file()]

        def auth_check(api, repo_id, repo_type=None, token=None, write=False):
            if repo_id in gated:
                raise _gated_error(repo_id)

        class FileSystem:
            def __init__(self, *a, **kw):
                pass

            def open(self, path, mode="rb", **kw):
                return open(hub.local_path(path), mode)

        monkeypatch.setattr(datasets, "get_dataset_config_names", configs)
        monkeypatch.setattr(datasets, "load_dataset", load)
        monkeypatch.setattr(huggingface_hub.HfApi, "list_repo_tree", list_repo_tree)
        monkeypatch.setattr(huggingface_hub.HfApi, "auth_check", auth_check)
        monkeypatch.setattr(huggingface_hub, "HfFileSystem", FileSystem)

    def local_path(self, url: str) -> str:
        path = url.removeprefix("hf://").removeprefix("datasets/")
        for repo in sorted(self.roots, key=len, reverse=True):
            if path.startswith(repo + "/") or path.startswith(repo + "@"):
                return str(self.roots[repo] / path[len(repo):].split("/", 1)[1])
        raise FileNotFoundError(url)


def hub_config(**kw) -> PrepareConfig:
    return PrepareConfig(source="vaani", lang=kw.pop("lang", "kannada"), workers=1, shard_size=4, **kw)


def test_hub_listing_fallback_when_fsspec_rejects_the_pattern(published, tmp_path, monkeypatch):
    va, tr = published
    hub = FakeHub(monkeypatch, {MAIN_ID: va, TR_ID: tr}, glob_bug=True)
    result = run_prepare(RunDir(tmp_path / "run"), hub_config(), Reporter(), token="hf_x")
    assert result.counts == KANNADA_COUNTS
    assert ("parquet", ["test", "train", "validation"]) in hub.seen  # the explicit listing was read
    assert card_of(result)["corpus"]["images"]["row_groups_read"] == 4


@pytest.mark.parametrize("how", ["FileNotFoundError", "ConnectionError"])
@pytest.mark.parametrize("repo", [TR_ID, MAIN_ID])
def test_a_gated_refusal_stops_before_anything_is_decoded(published, tmp_path, monkeypatch, how, repo):
    from typer.testing import CliRunner

    from tests.unit.test_prepare import _app

    va, tr = published
    url = f"https://huggingface.co/datasets/{repo}/resolve/main/audio/Kannada/train-00000-of-00001.parquet"
    exc = FileNotFoundError(url) if how == "FileNotFoundError" else ConnectionError(
        f"Couldn't reach '{repo}' on the Hub (HfHubHTTPError)")
    FakeHub(monkeypatch, {MAIN_ID: va, TR_ID: tr}, refuse={repo: exc}, gated={repo})
    with pytest.raises(InputError) as info:
        run_prepare(RunDir(tmp_path / "run"), hub_config(), Reporter())
    assert f"access to {repo} was refused" in info.value.message
    assert f"https://huggingface.co/datasets/{repo}" in info.value.hint
    assert not corpora()  # nothing decoded, no partial cache
    run_dir = tmp_path / "fresh-run"
    result = CliRunner().invoke(_app(), ["prepare", "-r", str(run_dir), "--source", "vaani", "--lang", "kannada"])
    assert result.exit_code != 0 and f"access to {repo} was refused" in result.exception.message
    assert not run_dir.exists() and not corpora()


def test_a_network_failure_is_not_called_a_refusal(published, tmp_path, monkeypatch):
    va, tr = published
    FakeHub(monkeypatch, {MAIN_ID: va, TR_ID: tr}, refuse={MAIN_ID: ConnectionError("Couldn't reach the Hub")})
    with pytest.raises(InputError) as info:
        run_prepare(RunDir(tmp_path / "run"), hub_config(), Reporter())
    assert "refused" not in info.value.message and f"cannot read {MAIN_ID}" in info.value.message
    assert not corpora()


def test_unknown_speakers_are_never_carved_into_dev_or_test(tmp_path):
    """Without official dev/test splits, speakers are carved from train by a hash of the speaker id; rows of
    unknown speaker (a name that gives none, no speakerID) all share one id and are never carved."""
    va, tr, c = tmp_path / "vaani", tmp_path / "transcribed", Clips()
    train = [c("Kannada", "KA", "DakshinKannada", f"S{s:02d}", c.words()) for s in range(40) for _ in range(2)]
    train += [c("Kannada", "KA", "DakshinKannada", "-", c.words(), name=f"clip{i:03d}.wav") for i in range(30)]
    write_parquet(tr / "audio" / "Kannada" / "train-00000-of-00001.parquet", train, TRANSCRIBED)
    write_parquet(va / "audio" / "Kannada" / "train-00000-of-00001.parquet",
                  [c("Kannada", "KA", "DakshinKannada", f"A{s}", image=f"img_0{s}.jpg") for s in range(3)], MAIN)
    write_images(va)
    result = run_prepare(RunDir(tmp_path / "run"), local((va, tr)), Reporter())
    assert result.unknown_speaker_rows == {"align": 0, "train": 30, "dev": 0, "test": 0}
    assert result.counts["dev"] > 0 and result.counts["test"] > 0
    assert sum(result.counts[s] for s in ("train", "dev", "test")) == 110
    assert card_of(result)["disjointness"]["passed"]
