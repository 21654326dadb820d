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
from avasr_cli.data.builtin import (LANGUAGES, CorpusConfig, describe, generate_corpus, held_out_sentence, plan,
                                    render_scene, word_classes)
from avasr_cli.data.builtin.lexicon import CLASSES, DEPICTED

SMALL = dict(num_align=12, num_train=8, num_dev=4, num_test=4)


def _hashes(corpus) -> dict[str, str]:
    return {r["utt_id"]: hashlib.sha256((corpus.dir / r["audio"]).read_bytes()).hexdigest() for r in corpus.rows}


def _scene(*groups, layout="free", bg=0):
    return dict(index=0, groups=[list(g) for g in groups], layout=layout, bg=bg)


def test_kannada_grammar():
    kn = LANGUAGES["kannada"]
    assert describe(kn, _scene((1, None, "red", "circle"))) == "ಒಂದು ಕೆಂಪು ವೃತ್ತ"
    assert describe(kn, _scene((3, None, "blue", "star")), {"kind": "frame"}) == "ಚಿತ್ರದಲ್ಲಿ ಮೂರು ನೀಲಿ ನಕ್ಷತ್ರಗಳು ಇವೆ"
    assert describe(kn, _scene((1, "big", "green", "square")), {"kind": "frame"}) == "ಚಿತ್ರದಲ್ಲಿ ಒಂದು ದೊಡ್ಡ ಹಸಿರು ಚೌಕ ಇದೆ"
    assert describe(kn, _scene((4, None, "yellow", "triangle"), (2, "small", "white", "fish"))) == \
        "ನಾಲ್ಕು ಹಳದಿ ತ್ರಿಕೋನಗಳು ಮತ್ತು ಎರಡು ಸಣ್ಣ ಬಿಳಿ ಮೀನುಗಳು"
    assert describe(kn, _scene((1, None, "red", "house"), (2, None, "blue", "tree"), layout="left-right")) == \
        "ಎಡಗಡೆ ಒಂದು ಕೆಂಪು ಮನೆ ಬಲಗಡೆ ಎರಡು ನೀಲಿ ಮರಗಳು"
    context = {"kind": "context", "name": "ರವಿ", "verb": "ಬಿಡಿಸಿದ", "when": "ನಿನ್ನೆ"}
    assert describe(kn, _scene((2, None, "pink", "heart")), context) == "ರವಿ ನಿನ್ನೆ ಬಿಡಿಸಿದ ಚಿತ್ರದಲ್ಲಿ ಎರಡು ಗುಲಾಬಿ ಹೃದಯಗಳು ಇವೆ"
    assert describe(kn, _scene((1, None, "red", "ring"), bg=2), {"kind": "background"}) == \
        "ನೀಲಿ ಹಿನ್ನೆಲೆಯಲ್ಲಿ ಒಂದು ಕೆಂಪು ಉಂಗುರ ಇದೆ"


def test_hindi_grammar_agrees_in_gender_and_number():
    hi = LANGUAGES["hindi"]
    assert describe(hi, _scene((1, None, "blue", "circle"))) == "एक नीला गोला"
    assert describe(hi, _scene((3, "big", "blue", "circle"))) == "तीन बड़े नीले गोले"
    assert describe(hi, _scene((1, "small", "black", "fish"))) == "एक छोटी काली मछली"
    assert describe(hi, _scene((2, None, "green", "boat"))) == "दो हरी नावें"
    assert describe(hi, _scene((2, None, "black", "star"), (1, None, "white", "square"))) == \
        unicodedata.normalize("NFC", "दो काले तारे और एक सफ़ेद वर्ग")
    assert describe(hi, _scene((1, None, "red", "triangle")), {"kind": "frame"}) == "चित्र में एक लाल त्रिकोण है"
    assert describe(hi, _scene((4, None, "red", "triangle")), {"kind": "frame"}) == "चित्र में चार लाल त्रिकोण हैं"
    assert describe(hi, _scene((1, None, "red", "leaf"), (1, None, "red", "moon"), layout="top-bottom")) == \
        "ऊपर एक लाल पत्ता नीचे एक लाल चाँद"
    context = {"kind": "context", "name": "सीता", "verb": "बनाए", "when": "आज"}
    assert describe(hi, _scene((1, None, "yellow", "flower")), context) == "आज सीता के बनाए चित्र में एक पीला फूल है"
    assert describe(hi, _scene((1, None, "red", "ring"), bg=2), {"kind": "background"}) == \
        "नीली पृष्ठभूमि पर एक लाल अंगूठी है"
    text = describe(hi, _scene((1, None, "white", "star")))
    assert text == unicodedata.normalize("NFC", text)


@pytest.mark.parametrize("lang", sorted(LANGUAGES))
def test_the_default_corpus_speaks_200_words_of_every_class(lang):
    classes = word_classes(LANGUAGES[lang])
    items = plan(CorpusConfig(lang=lang))
    said = {w for i in items for w in i["text"].split()}
    assert said <= set(classes) and len(said) >= 200
    assert {classes[w] for w in said} == set(CLASSES)
    depicted = sum(classes[w] in DEPICTED for i in items for w in i["text"].split())
    total = sum(len(i["text"].split()) for i in items)
    assert 0.5 < depicted / total < 0.9  # most words describe the picture, many do not


def test_dev_and_test_sentences_are_never_said_in_train_or_align():
    items = plan(CorpusConfig())
    heard = {i["text"] for i in items if i["split"] in ("train", "align")}
    held = [i["text"] for i in items if i["split"] in ("dev", "test")]
    assert held and not heard & set(held)
    assert all(held_out_sentence(t) for t in held) and not any(held_out_sentence(t) for t in heard)
    # the pool never says one either
    pool = plan(CorpusConfig(num_align=0, num_train=0, num_dev=0, num_test=0, num_pretrain=500))
    assert not any(held_out_sentence(i["text"]) for i in pool)


def test_evaluation_splits_have_16_test_and_8_dev_voices_of_their_own():
    items = plan(CorpusConfig())
    voices = {s: {i["speaker"]["group"] for i in items if i["split"] == s} for s in builtin.SPLITS}
    assert len(voices["test"]) >= 16 and len(voices["dev"]) >= 8
    assert not (voices["test"] | voices["dev"]) & (voices["train"] | voices["align"]) and not voices["dev"] & voices["test"]
    assert all(i["speaker"]["group"] == i["speaker"]["voice"] for i in items)


def test_no_background_has_the_colour_of_its_objects():
    from avasr_cli.data.builtin.scenes import BACKGROUNDS

    for item in plan(CorpusConfig()):
        assert BACKGROUNDS[item["scene"]["bg"]][0] not in {g[2] for g in item["scene"]["groups"]}


def test_plan_is_deterministic_and_speaker_disjoint():
    cfg = CorpusConfig(seed=3, **SMALL)
    items = plan(cfg)
    assert items == plan(cfg)
    assert [i["text"] for i in items] != [i["text"] for i in plan(CorpusConfig(seed=4, **SMALL))]
    voices = {s: {i["speaker"]["voice"] for i in items if i["split"] == s} for s in builtin.SPLITS}
    assert not (voices["dev"] | voices["test"]) & (voices["train"] | voices["align"])
    assert not voices["dev"] & voices["test"]
    # streamed: the first items come without planning the rest, and are the same
    first = next(builtin.iter_plan(cfg))
    assert first == items[0]
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
        assert abs(info.duration - row["duration"]) < 1e-3 and 0.5 < row["duration"] < 10
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
    from avasr_cli.data.builtin import scenes

    monkeypatch.setattr(scenes, "OTHER_VOICES", scenes.OTHER_VOICES + ("no-such-voice",))
    voices = {i["speaker"]["voice"] for i in plan(CorpusConfig(**SMALL))}
    assert "kn+no-such-voice" not in voices


@pytest.mark.parametrize("lang", sorted(LANGUAGES))
def test_every_word_is_in_the_native_script(lang):
    block = {"kannada": (0x0C80, 0x0CFF), "hindi": (0x0900, 0x097F)}[lang]
    for word in word_classes(LANGUAGES[lang]):
        assert all(block[0] <= ord(ch) <= block[1] for ch in word), word
