"""WER/CER scoring: hand-computed counts that agree with jiwer on the same normalised strings."""

from __future__ import annotations

import unicodedata

import jiwer
import pytest

from avasr_cli.data.text import normalize_for_scoring
from avasr_cli.report.metrics import _width, format_errors, score


def test_hand_computed_wer_matches_jiwer():
    refs = ["ನಮ್ಮ ಊರಿನ ಆಪಿಸ್{office} <noise> ಹತ್ತಿರ ಇದೆ--", "मैं <pause>कल</pause> बाज़ार गया।"]
    hyps = ["ನಮ್ಮ ಊರನ ಹತ್ತಿರ ಇದೆ", "मैं कल बाज़ार गया था"]
    # utt a: ref ನಮ್ಮ ಊರಿನ ಆಪಿಸ್ ಹತ್ತಿರ ಇದೆ (5) vs ನಮ್ಮ ಊರನ ಹತ್ತಿರ ಇದೆ: 1 sub (ಊರಿನ→ಊರನ) + 1 del (ಆಪಿಸ್)
    # utt b: ref मैं कल बाज़ार गया (4) vs + था: 1 insertion
    res = score(refs, hyps, utt_ids=["a", "b"], speakers=["s1", "s2"])
    assert res["words"] == {"ref": 9, "hits": 7, "substitutions": 1, "insertions": 1, "deletions": 1}
    assert res["wer"] == pytest.approx(3 / 9)
    nrefs = [normalize_for_scoring(r) for r in refs]
    nhyps = [normalize_for_scoring(h) for h in hyps]
    assert res["wer"] == pytest.approx(jiwer.wer(nrefs, nhyps))
    assert res["cer"] == pytest.approx(jiwer.cer(nrefs, nhyps))
    a, b = res["utterances"]
    assert (a["ref_words"], a["word_errors"], a["sub"], a["ins"], a["del"]) == (5, 2, 1, 0, 1)
    assert (b["ref_words"], b["word_errors"], b["sub"], b["ins"], b["del"]) == (4, 1, 0, 1, 0)
    assert a["ref"] == "ನಮ್ಮ ಊರಿನ ಆಪಿಸ್ ಹತ್ತಿರ ಇದೆ"
    assert res["normalization"] == "avasr-indic-v1" and res["num_utterances"] == 2
    assert res["top_confusions"] == [["ಊರಿನ", "ಊರನ", 1]]


def test_cer_counts_code_points_vowel_signs_included():
    # ಮನೆ = ಮ ನ ೆ (3 code points); dropping the vowel sign is one deletion
    res = score(["ಮನೆ"], ["ಮನ"], utt_ids=["u"])
    assert res["chars"]["ref"] == 3 and res["chars"]["deletions"] == 1
    assert res["cer"] == pytest.approx(1 / 3)
    assert res["wer"] == 1.0


def test_normalisation_applies_to_both_sides():
    ref = "हाँ, ठीक है। <noise>"
    hyp = unicodedata.normalize("NFD", "हाँ ठीक है")
    res = score([ref], [hyp], utt_ids=["u"])
    assert res["wer"] == 0.0 and res["cer"] == 0.0


def test_empty_reference_counts_insertions():
    res = score(["<noise> [...]", "ಮನೆ ಇದೆ"], ["ಹೌದು ಸರಿ", "ಮನೆ ಇದೆ"], utt_ids=["x", "y"])
    x = res["utterances"][0]
    assert (x["ref_words"], x["word_errors"], x["ins"]) == (0, 2, 2)
    assert res["words"]["ref"] == 2 and res["words"]["insertions"] == 2
    assert res["wer"] == pytest.approx(1.0)
    only_empty = score(["<noise>"], ["ಹೌದು"], utt_ids=["x"])
    assert only_empty["wer"] is None  # undefined: errors over zero reference words
    assert score(["<noise>"], [""], utt_ids=["x"])["wer"] == 0.0


def test_breakdowns_by_speaker_and_extra():
    refs = ["a b", "c d", "e f g h"]
    hyps = ["a b", "c x", "e f"]
    res = score(refs, hyps, utt_ids=["1", "2", "3"], speakers=["s1", "s1", None],
                extra={"gender": ["female", "female", "male"], "district": ["Mysuru", "", "Udupi"]})
    spk = res["breakdown"]["speaker"]
    assert spk["s1"] == {"wer": pytest.approx(1 / 4), "cer": pytest.approx(1 / 6), "num_utterances": 2}
    assert spk["unknown"]["wer"] == pytest.approx(2 / 4)
    assert res["breakdown"]["gender"]["male"]["num_utterances"] == 1
    assert set(res["breakdown"]["district"]) == {"Mysuru", "Udupi", "unknown"}
    assert res["utterances"][2]["speaker"] == "unknown"


def test_no_speakers_no_speaker_breakdown_and_empty_input():
    res = score(["a"], ["a"], utt_ids=["1"])
    assert "speaker" not in res["breakdown"]
    empty = score([], [], utt_ids=[])
    assert empty["num_utterances"] == 0 and empty["wer"] == 0.0 and empty["utterances"] == []


def test_mismatched_lengths_raise():
    with pytest.raises(ValueError):
        score(["a", "b"], ["a"], utt_ids=["1", "2"])
    with pytest.raises(ValueError):
        score(["a"], ["a"], utt_ids=["1"], speakers=["s", "t"])


def test_top_confusions_sorted_and_capped():
    refs = [f"w{i} common" for i in range(30)] + ["common"] * 3
    hyps = [f"v{i} common" for i in range(30)] + ["other"] * 3
    res = score(refs, hyps, utt_ids=[str(i) for i in range(33)])
    assert len(res["top_confusions"]) == 20
    assert res["top_confusions"][0] == ["common", "other", 3]


def test_format_errors_sorted_with_alignment():
    res = score(["ನಮ್ಮ ಊರಿನ ಆಪಿಸ್ ಹತ್ತಿರ ಇದೆ", "ಮನೆ ಇದೆ", "ಶಾಲೆ"], ["ನಮ್ಮ ಊರನ ಹತ್ತಿರ ಇದೆ ಹೌದು", "ಮನೆ ಇದೆ", "ಶಾಲೆ"],
                utt_ids=["u1", "u2", "u3"], speakers=["s", "s", "t"])
    text = format_errors(res)
    assert text.index("u1 ") < text.index("u2 ") and text.index("u1 ") < text.index("u3 ")
    block = text[text.index("u1 "):].splitlines()
    assert block[1].startswith("REF:") and block[2].startswith("HYP:") and block[3].startswith("EVAL:")
    assert "ಆಪಿಸ್" in block[1] and "*" in block[2] and "ಹೌದು" in block[2]
    assert block[3][len("EVAL:"):].split() == ["S", "D", "I"]
    # columns line up: each REF word starts where its HYP word starts
    ref_line, hyp_line = block[1], block[2]
    assert _width(ref_line[:ref_line.index("ಹತ್ತಿರ")]) == _width(hyp_line[:hyp_line.index("ಹತ್ತಿರ")])
    assert "WER" in text and "ಊರಿನ -> ಊರನ: 1" in text
