"""The built-in corpus: grammar, pictures, deterministic generation, shared cache, resume."""

import hashlib
import io
import json
import unicodedata

import numpy as np
import pytest
import soundfile as sf
from PIL import Image

from avasr_cli.data import builtin
from avasr_cli.data.builtin import LANGUAGES, CorpusConfig, describe, generate_corpus, plan, render_scene

SMALL = dict(num_align=12, num_train=8, num_dev=4, num_test=4)


def _hashes(corpus) -> dict[str, str]:
    return {r["utt_id"]: hashlib.sha256((corpus.dir / r["audio"]).read_bytes()).hexdigest() for r in corpus.rows}


def test_kannada_grammar():
    kn = LANGUAGES["kannada"]
    assert describe(kn, [(1, "red", "circle")], False) == "ಒಂದು ಕೆಂಪು ವೃತ್ತ"
    assert describe(kn, [(3, "blue", "star")], True) == "ಚಿತ್ರದಲ್ಲಿ ಮೂರು ನೀಲಿ ನಕ್ಷತ್ರಗಳು ಇವೆ"
    assert describe(kn, [(1, "green", "square")], True) == "ಚಿತ್ರದಲ್ಲಿ ಒಂದು ಹಸಿರು ಚೌಕ ಇದೆ"
    assert describe(kn, [(4, "yellow", "triangle"), (2, "white", "circle")], False) == \
        "ನಾಲ್ಕು ಹಳದಿ ತ್ರಿಕೋನಗಳು ಮತ್ತು ಎರಡು ಬಿಳಿ ವೃತ್ತಗಳು"


def test_hindi_grammar_agrees_in_number():
    hi = LANGUAGES["hindi"]
    assert describe(hi, [(1, "blue", "circle")], False) == "एक नीला गोला"
    assert describe(hi, [(3, "blue", "circle")], False) == "तीन नीले गोले"
    assert describe(hi, [(2, "black", "star"), (1, "white", "square")], False) == \
        unicodedata.normalize("NFC", "दो काले तारे और एक सफ़ेद वर्ग")
    assert describe(hi, [(1, "red", "triangle")], True) == "चित्र में एक लाल त्रिकोण है"
    assert describe(hi, [(4, "red", "triangle")], True) == "चित्र में चार लाल त्रिकोण हैं"
    text = describe(hi, [(1, "white", "star")], False)
    assert text == unicodedata.normalize("NFC", text)


def test_plan_is_deterministic_and_speaker_disjoint():
    cfg = CorpusConfig(seed=3, **SMALL)
    items = plan(cfg)
    assert items == plan(cfg)
    assert [i["text"] for i in items] != [i["text"] for i in plan(CorpusConfig(seed=4, **SMALL))]
    voices = {s: {i["speaker"]["voice"] for i in items if i["split"] == s} for s in builtin.SPLITS}
    assert not (voices["dev"] | voices["test"]) & (voices["train"] | voices["align"])
    assert not voices["dev"] & voices["test"]
    assert len({i["utt_id"] for i in items}) == len(items) == sum(SMALL.values())


def test_scene_is_a_224_png_and_deterministic():
    scene = plan(CorpusConfig(**SMALL))[0]["scene"]
    png = render_scene(scene, 0)
    assert png == render_scene(scene, 0)
    img = Image.open(io.BytesIO(png))
    assert img.format == "PNG" and img.size == (224, 224) and img.mode == "RGB"
    assert len(np.unique(np.asarray(img).reshape(-1, 3), axis=0)) > 10  # objects on a gradient


def test_generated_corpus_files(tmp_path):
    corpus = generate_corpus(CorpusConfig(lang="hindi", **SMALL))
    assert not corpus.reused and (corpus.dir / "complete.json").exists()
    assert corpus.dir.parent.parent == builtin.avasr_home() and corpus.dir.name.startswith("builtin-hindi-")
    assert len(corpus.rows) == sum(SMALL.values())
    for row in corpus.rows:
        info = sf.info(corpus.dir / row["audio"])
        assert (info.samplerate, info.channels, info.subtype) == (16000, 1, "PCM_16")
        assert abs(info.duration - row["duration"]) < 1e-3 and 0.5 < row["duration"] < 6
        png = (corpus.dir / row["image"]).read_bytes()
        assert hashlib.sha256(png).hexdigest() == row["image_sha256"] in row["image"]
    assert len({r["image_sha256"] for r in corpus.rows if r["split"] == "align"}) < SMALL["num_align"]  # shared
    assert not list(corpus.dir.rglob("*.tmp"))


def test_same_seed_same_audio_whatever_the_workers(tmp_path, monkeypatch):
    monkeypatch.setattr(builtin, "CHUNK", 10)  # 3 chunks
    monkeypatch.setenv("AVASR_HOME", str(tmp_path / "a"))
    first = generate_corpus(CorpusConfig(**SMALL), workers=2)
    monkeypatch.setenv("AVASR_HOME", str(tmp_path / "b"))
    second = generate_corpus(CorpusConfig(**SMALL), workers=1)
    assert first.rows == second.rows and _hashes(first) == _hashes(second)
    other = generate_corpus(CorpusConfig(seed=1, **SMALL))
    assert other.dir != second.dir and set(_hashes(other).values()).isdisjoint(_hashes(second).values())


def test_cache_is_reused_and_interrupted_generation_resumes(monkeypatch):
    monkeypatch.setattr(builtin, "CHUNK", 10)
    cfg = CorpusConfig(**SMALL)
    first = generate_corpus(cfg)
    again = generate_corpus(cfg)
    assert again.reused and again.rows == first.rows
    # simulate a kill during chunk 1: no marker, a missing file, a stray temp file, no completion marker
    root = first.dir
    (root / "complete.json").unlink()
    (root / "chunks" / "0001.jsonl").unlink()
    (root / first.rows[12]["audio"]).unlink()
    (root / "audio" / ".stray.wav.123.tmp").write_bytes(b"half")
    kept = root / first.rows[0]["audio"]
    mtime = kept.stat().st_mtime_ns
    resumed = generate_corpus(cfg)
    assert not resumed.reused and resumed.rows == first.rows and _hashes(resumed) == _hashes(first)
    assert kept.stat().st_mtime_ns == mtime  # finished chunks are not redone
    assert not list(root.rglob("*.tmp"))
    assert json.loads((root / "complete.json").read_text())["utterances"] == len(first.rows)


def test_unknown_variant_is_skipped_not_fatal(monkeypatch):
    monkeypatch.setattr(builtin, "MALE_VOICES", builtin.MALE_VOICES + ("no-such-voice",))
    voices = {i["speaker"]["voice"] for i in plan(CorpusConfig(**SMALL))}
    assert "kn+no-such-voice" not in voices


@pytest.mark.parametrize("lang", sorted(LANGUAGES))
def test_every_word_is_in_the_native_script(lang):
    spec = LANGUAGES[lang]
    words = list(spec.numbers) + [w for pair in spec.colours.values() for w in pair] + \
        [w for pair in spec.shapes.values() for w in pair] + [spec.conj]
    block = {"kannada": (0x0C80, 0x0CFF), "hindi": (0x0900, 0x097F)}[lang]
    for word in words:
        assert all(block[0] <= ord(ch) <= block[1] for ch in unicodedata.normalize("NFC", word)), word
