"""Vaani names and selection: speakers, utterance ids, which configs to read, which rows to keep.

Speakers
    One canonical key per speaker, everywhere (manifests, data card, leak check): from a Vaani file name,
    ``IISc_VaaniProject_<S>_<State>_<District>_<speaker>_…`` gives ``<State>_<District>_<speaker>`` (the
    state token as written, e.g. ``KA``, so that districts of the same name in two states stay apart), with
    the ``speakerID`` column's id in the ``<speaker>`` place when it holds a real one. Vaani often stores the
    placeholder ``"NA"`` (and a subset or an older revision may lack the column): a placeholder is not a
    speaker. Other names give the column's id, else the stem without its last ``_`` field
    (``spk12_0003.wav`` → ``spk12``). A name without either is of :data:`UNKNOWN_SPEAKER`: such rows are
    counted, never carved into dev/test by speaker and never matched by the leak check.

Configs
    Hub names may be bare (``Kannada``, ``Karnataka_Bangalore``) or path-like (``audio/Hindi``,
    ``audio/AndhraPradesh/Anantpur``). A config whose last path component is the language is the
    language's own config and is read alone, whether or not ``--districts`` is given (its ``district`` and
    ``state`` columns then select the rows). District configs hold the same clips again, so they are read
    only when there is no language config and ``--districts`` names them; ``images`` is never read as
    audio. ``--districts`` takes ``District``, ``State/District`` (``Bihar/Aurangabad``) or ``State_District``;
    a district that no district config names is an error (when the dataset has district configs).
"""

from __future__ import annotations

import hashlib
import os
import re
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from avasr_cli.errors import InputError

UNKNOWN_SPEAKER = "unknown"
PLACEHOLDERS = frozenset({"", "na", "none", "null", "nan", "unknown"})  # "NA" is what Vaani writes
SPLIT_NAMES = {"train": "train", "validation": "dev", "valid": "dev", "dev": "dev", "test": "test"}
_VAANI_NAME = re.compile(r"^IISc_VaaniProject_[A-Za-z]+_([^_]+)_([^_]+)_([^_]+)_")
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def norm(name: Any) -> str:
    return re.sub(r"[^0-9a-z]", "", unicodedata.normalize("NFKC", str(name or "")).lower())


def is_placeholder(value: Any) -> bool:
    return value is None or norm(value) in PLACEHOLDERS


def speaker_keys(speaker_col: Any, name: str) -> tuple[str, list[str]]:
    """The speaker's one canonical key, and every key the leak check matches it under (none for an
    unknown speaker).

    A Vaani file name gives ``<State>_<District>_<speaker>``; the ``speakerID`` column, when it holds a real
    id, takes the ``<speaker>`` place under the same state and district, so a speaker's rows with and
    without the column carry one canonical key (manifests, data card, voices). Without a Vaani name: the
    column's id, else the stem before its last ``_`` field, else :data:`UNKNOWN_SPEAKER`.

    Whether the column's id always equals the file name's speaker field is not known, so the leak check is
    stricter than the key: it matches under the canonical key, the file name's own key and the bare column
    id, case- and space-folded — a dev/test speaker is never let into align or train by a spelling."""
    stem = Path(name).stem if name else ""
    col = "" if is_placeholder(speaker_col) else str(speaker_col).strip()
    named = ""
    if m := _VAANI_NAME.match(stem):
        token = "" if is_placeholder(m.group(3)) else m.group(3)
        ident = col or token
        key = f"{m.group(1)}_{m.group(2)}_{ident}" if ident else ""
        named = f"{m.group(1)}_{m.group(2)}_{token}" if token else ""
    elif col:
        key = col
    elif "_" in stem and not is_placeholder(stem.rsplit("_", 1)[0]):
        key = named = stem.rsplit("_", 1)[0]
    else:
        key = ""
    matches = sorted({re.sub(r"\s+", "", k).casefold() for k in (key, named, col) if k})
    return key or UNKNOWN_SPEAKER, matches


def utt_id_of(name: str, blob: bytes | None) -> str:
    stem = _UNSAFE.sub("_", Path(name).stem).strip("._") if name else ""
    return stem or "utt-" + hashlib.sha1(blob or b"").hexdigest()[:16]


def blob_of(value: Any) -> tuple[bytes | None, str]:
    """(bytes, file name) of an undecoded Audio/Image cell."""
    if isinstance(value, dict):
        return value.get("bytes"), os.path.basename(str(value.get("path") or ""))
    if isinstance(value, (bytes, bytearray)):
        return bytes(value), ""
    return None, ""


# ------------------------------------------------------------------------------------------------ configs
def is_images(config: str) -> bool:
    return norm(config.rsplit("/", 1)[-1]) in ("images", "image")


def place_of(config: str) -> tuple[str, str]:
    """(state, district) a config name stands for: ``audio/<State>/<District>`` or ``<State>_<District>``;
    ``("", "")`` for names of another shape (a language, ``default``)."""
    parts = [p for p in config.split("/") if p and norm(p) != "audio"]
    if len(parts) >= 2:
        return parts[-2], parts[-1]
    if parts and "_" in parts[0]:
        state, district = parts[0].split("_", 1)
        return state, district
    return "", ""


@dataclass(frozen=True)
class Place:
    """One ``--districts`` entry: a district, optionally qualified by its state."""

    state: str
    district: str

    @classmethod
    def parse(cls, entry: str) -> "Place":
        """``District``, ``State/District`` or a config's ``State_District``."""
        entry = entry.replace(":", "/")
        if "/" not in entry and "_" in entry:
            entry = entry.replace("_", "/", 1)
        state, _, district = entry.rpartition("/")
        return cls(norm(state), norm(district))

    def matches(self, state: Any, district: Any) -> bool:
        return norm(district) == self.district and (not self.state or norm(state) == self.state)


@dataclass(frozen=True)
class Selection:
    configs: list[str]  # configs to read
    by_language: bool  # True: the language's own configs (no filter on the language column)
    estimate: list[str]  # configs whose size best estimates what is read (district configs hold the same clips)


def select_configs(ref: str, configs: list[str], lang: str, districts: tuple[str, ...]) -> Selection:
    """Which configs of dataset ``ref`` to read for ``lang`` (see the module docstring); raises
    :class:`InputError` when the choice cannot be made safely."""
    usable = [c for c in configs if not is_images(c)]
    places = [Place.parse(d) for d in districts]
    by_place = {c: place_of(c) for c in usable if place_of(c)[1]}
    wanted = [c for c, (state, district) in by_place.items() if any(p.matches(state, district) for p in places)]
    unmatched = [d for d, p in zip(districts, places) if by_place and not any(p.matches(*v) for v in by_place.values())]
    found = ", ".join(sorted({f"{s}/{d}" for s, d in by_place.values()})[:40])
    if unmatched:
        raise InputError(f"--districts {', '.join(unmatched)}: no district config of {ref} has that name",
                         f"districts found: {found}; write a district as its config names it, or State/District")
    own = [c for c in usable if norm(c.rsplit("/", 1)[-1]) == norm(lang)]
    if own:
        return Selection(own, True, wanted or own)
    if wanted:
        return Selection(wanted, False, wanted)
    rest = [c for c in usable if c not in by_place]
    if len(usable) == 1 or (len(rest) == 1 and not by_place):
        return Selection(usable[:1], False, usable[:1])
    shown = ", ".join(usable[:12]) + (f" … ({len(usable)} in all)" if len(usable) > 12 else "")
    raise InputError(f"{ref} has no config for language {lang!r}; its district configs are read only when "
                     f"--districts names them", f"check --lang, or pass --districts D1,D2 (configs: {shown})")


def row_filter(by_language: bool, lang: str, districts: tuple[str, ...]):
    """A predicate on dataset rows: the language column (outside the language's own config) and the
    district/state columns (with ``--districts``). A column a subset lacks does not exclude the row."""
    places, want = [Place.parse(d) for d in districts], norm(lang)

    def keep(row: dict) -> bool:
        if not by_language and row.get("language") and norm(row["language"]) != want:
            return False
        if places and row.get("district"):
            return any(p.matches(row.get("state") or p.state, row["district"]) for p in places)
        return True

    return keep
