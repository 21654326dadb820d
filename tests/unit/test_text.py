"""Vaani markup cleaning, script detection and the avasr-indic-v1 scoring normalisation."""

from __future__ import annotations

import unicodedata

import pytest

from avasr_cli.data.text import NORMALIZATION, clean_transcript, is_in_script, normalize_for_scoring, script_of
from avasr_cli.errors import ConfigError


def _marks(s: str) -> list[str]:
    return [c for c in s if unicodedata.category(c) in ("Mn", "Mc")]


# ------------------------------------------------------------------------------------------ cleaning
def test_kannada_vaani_markup():
    raw = "ನಮ್ಮ ಊರಿನ ಆಪಿಸ್{office} <noise> ಹತ್ತಿರ [...] ಇದೆ--"
    assert clean_transcript(raw) == "ನಮ್ಮ ಊರಿನ ಆಪಿಸ್ ಹತ್ತಿರ ಇದೆ"


def test_hindi_pause_span_keeps_words_and_noise_goes():
    raw = "मैं <pause>कल</pause> बाज़ार{market} गया था। <noise>"
    assert clean_transcript(raw) == "मैं कल बाज़ार गया था।"


# Real-shaped Vaani transcripts of every markup style (issue 14): tag pairs wrap spoken words (kept), empty
# pairs and lone tags mark a point in time, [..] is a speaker sound, {..} after a native word is its
# corrected/English form, a trailing -- marks an incomplete utterance.
STYLES = [
    # (raw, cleaned)
    ("<noise>ಹೌದು ಸರಿ</noise>", "ಹೌದು ಸರಿ"),  # a whole utterance inside a noise pair
    ("ಹೌದು <Noise>ಬಸ್ ಬಂತು</Noise> ಸರಿ", "ಹೌದು ಬಸ್ ಬಂತು ಸರಿ"),
    ("ಅವರು <people talking>ಬಂದರು ಇಲ್ಲಿ</people talking> ಹೋದರು", "ಅವರು ಬಂದರು ಇಲ್ಲಿ ಹೋದರು"),  # multi-word tag
    ("<static noise>ಮನೆ ಇದೆ</static noise>", "ಮನೆ ಇದೆ"),
    ("<wind noise> ಗಾಳಿ ಬೀಸುತ್ತಿದೆ </wind noise>", "ಗಾಳಿ ಬೀಸುತ್ತಿದೆ"),
    ("ಹೌದು <horn> </horn> ಸರಿ", "ಹೌದು ಸರಿ"),  # point tags
    ("ನೀಲಿ <pause></pause> ಆಕಾಶ <PAUSE>", "ನೀಲಿ ಆಕಾಶ"),
    ("[breathing] ಮರ [inhaling] ಇದೆ", "ಮರ ಇದೆ"),
    ("ನಮ್ಮ ಆಪಿಸ್{office} ಹತ್ತಿರ", "ನಮ್ಮ ಆಪಿಸ್ ಹತ್ತಿರ"),
    ("ಅವರು ಹೋಗಿ--", "ಅವರು ಹೋಗಿ"),
    ("<noise>यह मेरा गाँव है</noise>", "यह मेरा गाँव है"),
    ("हाँ <laugh>हा हा</laugh> ठीक है", "हाँ हा हा ठीक है"),
    ("वो <people talking>बाज़ार गए</people talking> थे", "वो बाज़ार गए थे"),
    ("<static noise>खेत में</static noise> <wind noise>पेड़ है</wind noise>", "खेत में पेड़ है"),
    ("गाड़ी <horn> </horn> आई <pause></pause> फिर <PAUSE> गई", "गाड़ी आई फिर गई"),
    ("[breathing] मैं स्कूल{school} [inhaling] गया", "मैं स्कूल गया"),
    ("हम लोग वहाँ जा--", "हम लोग वहाँ जा"),
]


IDS = [f"style{i}" for i in range(len(STYLES))]


@pytest.mark.parametrize("raw, cleaned", STYLES, ids=IDS)
def test_every_vaani_markup_style(raw, cleaned):
    assert clean_transcript(raw) == cleaned


@pytest.mark.parametrize("raw, cleaned", STYLES, ids=IDS)
def test_missing_closing_tag_gives_the_same_text(raw, cleaned):
    """Shared transcripts of the two Vaani datasets can differ only by a closing tag."""
    without = raw
    for closing in ("</noise>", "</Noise>", "</people talking>", "</static noise>", "</wind noise>", "</laugh>",
                    "</horn>", "</pause>"):
        without = without.replace(closing, "")
    assert clean_transcript(without) == clean_transcript(raw)


def test_scoring_follows_the_same_tag_rule():
    from avasr_cli.report.metrics import score

    for raw, cleaned in STYLES:
        assert normalize_for_scoring(raw) == normalize_for_scoring(cleaned)
    refs = ["<noise>ಹೌದು ಸರಿ</noise>", "ಅವರು <people talking>ಬಂದರು ಇಲ್ಲಿ</people talking> ಹೋದರು"]
    result = score(refs, ["ಹೌದು ಸರಿ", "ಅವರು ಬಂದರು ಇಲ್ಲಿ ಹೋದರು"], utt_ids=["a", "b"], lang="kannada")
    assert result["wer"] == 0.0 and result["words"]["insertions"] == 0


def test_self_closing_and_lone_tags_vanish():
    assert clean_transcript("ಹೌದು <noise/> ಸರಿ <music>") == "ಹೌದು ಸರಿ"


@pytest.mark.parametrize("raw", ["", "<noise>", "[...]", "{office}", "<noise> [...] {ok} --", "  <pause></pause>  "])
def test_markup_only_gives_empty(raw):
    assert clean_transcript(raw) == ""
    assert normalize_for_scoring(raw) == ""


def test_truncation_keeps_fragment_and_collapses_space():
    assert clean_transcript("ಅವರು  ಹೋ--   ಹೋಗಿದ್ದರು\n") == "ಅವರು ಹೋ ಹೋಗಿದ್ದರು"


def test_unbalanced_markup_leaves_no_stray_brackets():
    assert clean_transcript("ಮನೆ{home ಇದೆ> ]") == "ಮನೆ home ಇದೆ"


def test_clean_returns_nfc():
    nfd = unicodedata.normalize("NFD", "ಕೊಡು बाज़ार")
    assert clean_transcript(nfd) == unicodedata.normalize("NFC", nfd)


# ------------------------------------------------------------------------------------------ scripts
def test_script_of_counts_letters_only():
    assert script_of("ನಮ್ಮ ಊರು 2024, ok") == "kannada"
    assert script_of("मैं घर जा रहा हूँ। 5") == "devanagari"
    assert script_of("আমার সোনার বাংলা") == "bengali"
    assert script_of("నమస్కారం") == "telugu"
    assert script_of("வணக்கம்") == "tamil"
    assert script_of("ਸਤ ਸ੍ਰੀ ਅਕਾਲ") == "gurmukhi"
    assert script_of("નમસ્તે") == "gujarati"
    assert script_of("ନମସ୍କାର") == "odia"
    assert script_of("നമസ്കാരം") == "malayalam"
    assert script_of("hello there") == "latin"
    assert script_of("।। 123 ..") == ""  # danda, digits and punctuation are not letters


def test_is_in_script_ignores_glosses_and_catches_wrong_script():
    assert is_in_script("ನಮ್ಮ ಆಪಿಸ್{office} ಇದೆ", "kannada")
    assert is_in_script("ನಮ್ಮ ಆಪಿಸ್ ಇದೆ", "kn")
    assert not is_in_script("मेरा गाँव", "kannada")  # a Vaani row in the wrong script
    assert is_in_script("मेरा गाँव", "hindi")
    assert is_in_script("माझे गाव", "marathi")  # Marathi is Devanagari
    assert not is_in_script("", "hindi")
    assert not is_in_script("ಮನೆ house garden", "kannada")
    assert is_in_script("ಮನೆ house garden", "kannada", min_fraction=0.2)


def test_unknown_language_is_a_config_error():
    with pytest.raises(ConfigError) as exc:
        is_in_script("abc", "klingon")
    assert "klingon" in exc.value.message and exc.value.hint


# ------------------------------------------------------------------------------------------ scoring
def test_normalisation_name():
    assert NORMALIZATION == "avasr-indic-v1"


def test_nfc_and_nfd_inputs_score_the_same():
    for text in ("ಕೊಡು ಕೀಲಿ ಆಪಿಸ್{office}", "বোন", "ମୈଥିଳୀ", "तमिऴ", "கொடு"):
        nfc, nfd = unicodedata.normalize("NFC", text), unicodedata.normalize("NFD", text)
        assert nfc != nfd
        assert normalize_for_scoring(nfd) == normalize_for_scoring(nfc)
        assert unicodedata.is_normalized("NFC", normalize_for_scoring(nfd))
    # precomposed nukta letters (U+095B, U+095C) and their decomposed spelling score the same
    assert normalize_for_scoring("\u095bमीन पे\u095c") == normalize_for_scoring("ज\u093cमीन पेड\u093c")


def test_danda_and_punctuation_removed():
    assert normalize_for_scoring("हाँ, ठीक है। चलो॥") == "हाँ ठीक है चलो"
    assert normalize_for_scoring("“ನಮ್ಮ” ಊರು… ಸರಿ?! (ಹೌದು)") == "ನಮ್ಮ ಊರು ಸರಿ ಹೌದು"
    assert normalize_for_scoring("ಮನೆ,ಶಾಲೆ") == "ಮನೆ ಶಾಲೆ"  # punctuation separates words


def test_vowel_signs_virama_nukta_preserved():
    text = "ನಮ್ಮ ಊರಿನ ಕೊಡಗು ಕ್ಷೇತ್ರ ಬಾಜ಼ಾರ್ मैं ज़िंदगी ক্ষ"
    out = normalize_for_scoring(text)
    assert _marks(out) == _marks(unicodedata.normalize("NFC", text))
    assert "್" in out and "़" in out and "ಿ" in out and "ं" in out


def test_latin_lowercased_digits_kept_zero_width_removed():
    assert normalize_for_scoring("WiFi 5G ಇದೆ") == "wifi 5g ಇದೆ"
    assert normalize_for_scoring("don't STOP") == "dont stop"
    assert normalize_for_scoring("ಕನ್\u200cನಡ") == "ಕನ್ನಡ"


def test_scoring_removes_markup_first():
    assert normalize_for_scoring("ನಮ್ಮ ಊರಿನ ಆಪಿಸ್{office} <noise> ಹತ್ತಿರ [...] ಇದೆ--") == "ನಮ್ಮ ಊರಿನ ಆಪಿಸ್ ಹತ್ತಿರ ಇದೆ"
