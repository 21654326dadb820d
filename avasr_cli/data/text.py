"""Transcript cleaning (Vaani markup), script detection, and the text normalisation used for scoring.

Cleaning (:func:`clean_transcript`, used for training text and as the first step of scoring)
-------------------------------------------------------------------------------------------
Vaani transcripts carry markup that is not speech. The rule follows the data as published (and the
organisers' own scorer): tags go, the words between them stay. In this order:

1. Unicode NFC.
2. Corrected or English forms in braces after a native-script word are dropped, the native word kept:
   ``ಆಪಿಸ್{office}`` → ``ಆಪಿಸ್``.
3. Square-bracket spans are speaker sounds and are dropped with their content: ``[breathing]``,
   ``[inhaling]``, ``[...]``.
4. Every tag is dropped and nothing else: tag pairs *wrap spoken words* (``<noise>ಹೌದು ಸರಿ</noise>``,
   ``<people talking> … </people talking>``, ``<static noise>``, ``<wind noise>``, any name of one or
   more words), so the words inside are kept; empty pairs (``<horn> </horn>``, ``<pause></pause>``),
   lone and self-closing tags (``<PAUSE>``, ``<noise/>``) mark a point in time and vanish. Because only
   the tags go, a transcript gives the same text whether or not its closing tag is present.
5. Runs of two or more hyphens (``--``, the incomplete-utterance mark) become a space; the word fragment
   before them is kept, because it was spoken.
6. Stray markup characters left by unbalanced markup (``{ } [ ] < >``) are removed, whitespace is
   collapsed. Markup-only text gives ``""``.

Scoring normalisation ``avasr-indic-v1`` (:func:`normalize_for_scoring`)
-----------------------------------------------------------------------
Applied identically to references and hypotheses before WER/CER:

1. :func:`clean_transcript` (above), then Unicode NFC (so NFC and NFD inputs score the same).
2. Invisible format characters are removed: ZWSP, ZWNJ, ZWJ, word joiner, BOM, soft hyphen.
3. Apostrophes between two letters are removed (``don't`` → ``dont``).
4. Every other punctuation or symbol character (Unicode categories ``P*`` and ``S*``: ASCII
   punctuation, quotes, dashes, the Indic danda ``।`` and double danda ``॥``, ``…``) becomes a space.
   Combining marks (categories ``Mn``/``Mc``: Indic vowel signs, virama, nukta, anusvara) are **never**
   removed, and digits are kept.
5. Lower case (affects Latin and other cased scripts only), NFC again, whitespace collapsed to single
   spaces and stripped.

WER counts whitespace-separated words; CER counts Unicode code points of the normalised text (NFC,
so a vowel sign is a character of its own), spaces between words included (jiwer's default).
"""

from __future__ import annotations

import functools
import re
import unicodedata

from avasr_cli.errors import ConfigError

NORMALIZATION = "avasr-indic-v1"

_BRACES = re.compile(r"\{[^{}]*\}")
_BRACKETS = re.compile(r"\[[^\[\]]*\]")
_TAG = re.compile(r"<\s*/?\s*[A-Za-z][^<>]*>")
_DASHES = re.compile(r"-{2,}")
_STRAY = re.compile(r"[{}\[\]<>]")
_SPACES = re.compile(r"\s+")
_ZERO_WIDTH = re.compile("[\u200b\u200c\u200d\u2060\ufeff\u00ad]")
_APOSTROPHE = re.compile(r"(?<=\w)['\u2019\u02bc](?=\w)")


def clean_transcript(raw: str, lang: str | None = None) -> str:
    """Remove Vaani markup (see the module docstring). ``lang`` is accepted for language-specific rules;
    there are none yet."""
    if not raw:
        return ""
    text = unicodedata.normalize("NFC", str(raw))
    text = _BRACES.sub(" ", text)
    text = _BRACKETS.sub(" ", text)
    text = _TAG.sub(" ", text)  # opening, closing, empty and lone tags alike; the words between them stay
    text = _DASHES.sub(" ", text)
    text = _STRAY.sub(" ", text)
    return _SPACES.sub(" ", text).strip()


# ------------------------------------------------------------------------------------------ scripts
SCRIPT_RANGES: dict[str, tuple[tuple[int, int], ...]] = {
    "devanagari": ((0x0900, 0x097F), (0xA8E0, 0xA8FF), (0x1CD0, 0x1CFF)),
    "bengali": ((0x0980, 0x09FF),),
    "gurmukhi": ((0x0A00, 0x0A7F),),
    "gujarati": ((0x0A80, 0x0AFF),),
    "odia": ((0x0B00, 0x0B7F),),
    "tamil": ((0x0B80, 0x0BFF),),
    "telugu": ((0x0C00, 0x0C7F),),
    "kannada": ((0x0C80, 0x0CFF),),
    "malayalam": ((0x0D00, 0x0D7F),),
    "sinhala": ((0x0D80, 0x0DFF),),
    "ol_chiki": ((0x1C50, 0x1C7F),),
    "meetei_mayek": ((0xABC0, 0xABFF), (0xAAE0, 0xAAFF)),
    "arabic": ((0x0600, 0x06FF), (0x0750, 0x077F), (0x08A0, 0x08FF), (0xFB50, 0xFDFF), (0xFE70, 0xFEFF)),
    "latin": ((0x0041, 0x005A), (0x0061, 0x007A), (0x00C0, 0x024F), (0x1E00, 0x1EFF)),
}

LANG_SCRIPT: dict[str, str] = {
    **{k: "kannada" for k in ("kannada", "kn", "tulu", "kodava")},
    **{k: "devanagari" for k in (
        "hindi", "hi", "marathi", "mr", "nepali", "ne", "sanskrit", "sa", "konkani", "kok", "maithili", "mai",
        "bhojpuri", "bho", "magahi", "mag", "dogri", "doi", "bodo", "brx", "chhattisgarhi", "hne", "rajasthani",
        "awadhi", "bundeli", "garhwali", "kumaoni", "haryanvi", "marwari", "angika", "bajjika", "khortha",
        "nagpuri", "sadri", "surjapuri")},
    **{k: "bengali" for k in ("bengali", "bangla", "bn", "assamese", "as")},
    **{k: "gurmukhi" for k in ("punjabi", "panjabi", "pa")},
    **{k: "gujarati" for k in ("gujarati", "gu")},
    **{k: "odia" for k in ("odia", "oriya", "or")},
    **{k: "tamil" for k in ("tamil", "ta")},
    **{k: "telugu" for k in ("telugu", "te")},
    **{k: "malayalam" for k in ("malayalam", "ml")},
    **{k: "arabic" for k in ("urdu", "ur", "kashmiri", "ks", "sindhi", "sd")},
    **{k: "latin" for k in ("english", "en")},
    **{k: "ol_chiki" for k in ("santali", "sat")},
    **{k: "meetei_mayek" for k in ("manipuri", "meitei", "mni")},
}


@functools.lru_cache(maxsize=4096)
def _char_script(ch: str) -> str | None:
    """The script of a letter (or combining mark), ``None`` for anything else."""
    if unicodedata.category(ch)[0] not in "LM":
        return None
    cp = ord(ch)
    for name, ranges in SCRIPT_RANGES.items():
        for lo, hi in ranges:
            if lo <= cp <= hi:
                return name
    return "other"


def _script_counts(text: str) -> dict[str, int]:
    counts: dict[str, int] = {}
    for ch in clean_transcript(text or ""):
        script = _char_script(ch)
        if script is not None:
            counts[script] = counts.get(script, 0) + 1
    return counts


def script_of(text: str) -> str:
    """The script most of ``text``'s letters are in (``kannada``, ``devanagari``, ``latin``, …; ``other``
    for scripts outside :data:`SCRIPT_RANGES`), or ``""`` when the text has no letters. Markup is removed
    first (an English gloss ``{office}`` does not count), then only letters and combining marks count:
    digits, punctuation (the danda included) and spaces do not."""
    counts = _script_counts(text)
    if not counts:
        return ""
    return max(sorted(counts), key=lambda k: counts[k])


def script_for_lang(lang: str) -> str:
    """The script a language is written in: a language name or ISO code (``kannada``, ``hi``) or a
    script name (``devanagari``). Raises :class:`ConfigError` for an unknown one."""
    key = (lang or "").strip().lower().replace(" ", "_")
    if key in SCRIPT_RANGES:
        return key
    if key in LANG_SCRIPT:
        return LANG_SCRIPT[key]
    raise ConfigError(
        f"unknown language {lang!r} for script detection",
        f"use one of: {', '.join(sorted(k for k in LANG_SCRIPT if len(k) > 3))}, or a script name "
        f"({', '.join(SCRIPT_RANGES)})",
    )


def is_in_script(text: str, lang: str, min_fraction: float = 0.8) -> bool:
    """True when at least ``min_fraction`` of ``text``'s letters are in ``lang``'s script (Vaani has rows
    transcribed in the wrong script). Markup is removed first; text without letters is not in any
    script."""
    script = script_for_lang(lang)
    counts = _script_counts(text)
    total = sum(counts.values())
    return total > 0 and counts.get(script, 0) / total >= min_fraction


# ------------------------------------------------------------------------------------------ scoring
@functools.lru_cache(maxsize=8192)
def _is_punct_or_symbol(ch: str) -> bool:
    return unicodedata.category(ch)[0] in "PS"


def normalize_for_scoring(text: str, lang: str | None = None) -> str:
    """The ``avasr-indic-v1`` normalisation applied to references and hypotheses before WER/CER
    (documented in the module docstring)."""
    text = clean_transcript(text, lang)
    if not text:
        return ""
    text = unicodedata.normalize("NFC", text)
    text = _ZERO_WIDTH.sub("", text)
    text = _APOSTROPHE.sub("", text)
    text = "".join(" " if _is_punct_or_symbol(ch) else ch for ch in text)
    text = unicodedata.normalize("NFC", text.lower())
    return _SPACES.sub(" ", text).strip()
