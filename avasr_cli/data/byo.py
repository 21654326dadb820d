"""Bring-your-own data: ``avasr prepare --source manifest --train … --dev … --test … --align …``.

Each file is a NeMo manifest (one JSON object per line) validated line by line; an error names
``file:line``. Fields read:

=======================  ====================================================================================
audio_filepath           required; a relative path is read from the manifest's folder
duration                 required by NeMo; recomputed from the audio
text                     required on train/dev/test; cleaned with :func:`clean_transcript` + NFC, the original
                         kept as ``text_raw``; a line whose text is empty after cleaning is dropped (counted)
image_filepath           required on align (also accepted: ``image_path``, ``image``, ``referenceImage``);
                         optional elsewhere. A missing or corrupt image drops the align pair (counted)
speaker                  also ``speaker_id``, ``speakerID``; a placeholder (``NA``, ``N/A``, ``none``, empty …)
                         is no speaker. Else parsed from the audio file name like Vaani
                         (``IISc_VaaniProject_…`` → ``<State>_<District>_<speaker>``, else the stem without
                         its last ``_`` field), else ``unknown``: counted in the data card, never matched by
                         the leak check (:mod:`avasr_cli.data.vaani.select`)
utt_id                   optional, unique; else the audio file stem (made unique with a path hash)
gender, district         optional, kept for the data card
=======================  ====================================================================================

Audio already 16 kHz mono WAV/FLAC is referenced in place; anything else is decoded, down-mixed,
resampled and written once as FLAC to ``$AVASR_HOME/corpora/byo-audio/<hash of path, size, mtime>.flac``
(shared by every run). Clips longer than ``--max-duration`` and unreadable files are dropped (counted).
Images are referenced in place and keyed by the sha256 of their bytes. A dev/test speaker or audio file that
also occurs in train or align is an error.
"""

from __future__ import annotations

import hashlib
import os
import unicodedata
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from avasr_cli.data.manifest import IMAGE_FIELDS, image_field, read_manifest
from avasr_cli.errors import InputError
from avasr_cli.progress import Reporter
from avasr_cli.run import avasr_home

SPLITS = ("align", "train", "dev", "test")
CHUNK = 64  # files per worker task


@dataclass
class ByoCorpus:
    dir: Path
    splits: dict[str, list[dict]]
    card: dict
    reused: bool


def audio_cache() -> Path:
    return avasr_home() / "corpora" / "byo-audio"


def convert_chunk(task: dict) -> list[dict]:
    """Worker: for each source file, its duration and the file to use (in place or converted), or a drop."""
    from avasr_cli.data import audio_io

    out = []
    for src, dest in task["files"]:
        try:
            if not audio_io.needs_conversion(src):
                seconds = audio_io.audio_seconds(src)
                out.append(dict(drop="empty_audio") if seconds < audio_io.MIN_SECONDS
                           else dict(path=src, duration=seconds, converted=False) if seconds <= task["max_duration"]
                           else dict(drop="too_long"))
                continue
            if Path(dest).is_file():
                out.append(dict(path=dest, duration=audio_io.audio_seconds(dest), converted=True))
                continue
            data, sr = audio_io.decode_audio(src)
        except audio_io.CorruptMedia:
            out.append(dict(drop="corrupt_audio"))
            continue
        if data.shape[0] / sr > task["max_duration"]:
            out.append(dict(drop="too_long"))
            continue
        mono = audio_io.to_16k_mono(data, sr)
        if audio_io.is_empty_or_silent(mono):
            out.append(dict(drop="empty_or_silent"))
            continue
        audio_io.write_audio(Path(dest), mono)
        out.append(dict(path=dest, duration=mono.size / audio_io.SAMPLE_RATE, converted=True))
    return out


def prepare_manifests(cfg, rep: Reporter | None = None) -> ByoCorpus:
    from avasr_cli.data.audio_io import ordered_map
    from avasr_cli.data.text import clean_transcript
    from avasr_cli.data.vaani.select import speaker_keys

    rep = rep or Reporter()
    drops: dict[str, Counter] = {s: Counter() for s in SPLITS}
    rows: dict[str, list[tuple[str, int, dict]]] = {}
    for split in SPLITS:
        path = Path(getattr(cfg, split)).expanduser().resolve()
        need = ("audio_filepath", "duration") + (("text",) if split != "align" else ())
        parsed = read_manifest(path, require=need)
        lines = [i for i, line in enumerate(path.read_bytes().split(b"\n"), 1) if line.strip()]
        rows[split] = [(str(path), lineno, row) for lineno, row in zip(lines, parsed)]

    # 1. validate every line, resolve paths
    items: list[dict] = []
    explicit_ids: dict[str, str] = {}
    for split in SPLITS:
        for mpath, lineno, row in rows[split]:
            where = f"{mpath}:{lineno}"
            base = Path(mpath).parent
            audio = _resolve(base, row["audio_filepath"])
            if not audio.is_file():
                raise InputError(f"{where}: audio file {row['audio_filepath']} does not exist",
                                 "fix the path; relative paths are read from the manifest's folder")
            key = image_field(row)
            if split == "align" and key is None:
                raise InputError(f"{where}: no image path (fields tried: {', '.join(IMAGE_FIELDS)})",
                                 "alignment pairs need an image: add image_filepath to every align line")
            item = dict(split=split, where=where, audio=str(audio),
                        image=str(_resolve(base, row[key])) if key else "")
            if split != "align":
                raw = str(row.get("text") or "")
                text = unicodedata.normalize("NFC", clean_transcript(raw, cfg.lang))
                if not text:
                    drops[split]["empty_transcript"] += 1
                    continue
                item.update(text=text, text_raw=raw)
            spk_col = row.get("speaker") or row.get("speaker_id") or row.get("speakerID")
            item["speaker"] = speaker_keys(spk_col, audio.name)[0]
            if row.get("utt_id"):
                uid = str(row["utt_id"])
                if uid in explicit_ids:
                    raise InputError(f"{where}: utt_id {uid!r} already used at {explicit_ids[uid]}",
                                     "utterance ids must be unique across all four manifests")
                explicit_ids[uid] = where
                item["utt_id"] = uid
            item.update(gender=str(row.get("gender") or "unknown").lower(), district=str(row.get("district") or ""))
            items.append(item)
    _check_leaks(items)
    used = set(explicit_ids)
    for item in items:
        if "utt_id" not in item:
            uid = Path(item["audio"]).stem
            if uid in used:
                uid = f"{uid}-{hashlib.sha1(item['audio'].encode()).hexdigest()[:8]}"
            used.add(uid)
            item["utt_id"] = uid

    # 2. audio: in place when already 16 kHz mono, else converted once into the shared cache
    unique = sorted({i["audio"] for i in items})
    tasks = [dict(files=[(src, str(audio_cache() / f"{_file_key(src)}.flac")) for src in unique[k : k + CHUNK]],
                  max_duration=cfg.max_duration) for k in range(0, len(unique), CHUNK)]
    audio: dict[str, dict] = {}
    with rep.task("checking audio", total=len(unique)) as bar:
        for task, results in zip(tasks, ordered_map(convert_chunk, tasks, max(1, cfg.workers))):
            for (src, _), res in zip(task["files"], results):
                audio[src] = res
            bar.advance(len(task["files"]))

    # 3. images: hashed (and decoded once to catch corrupt files)
    images: dict[str, str | None] = {}
    splits: dict[str, list[dict]] = {s: [] for s in SPLITS}
    for item in items:
        split, res = item["split"], audio[item["audio"]]
        if "drop" in res:
            drops[split][res["drop"]] += 1
            continue
        sha = _image_sha(item["image"], images) if item["image"] else None
        if split == "align" and sha is None:
            drops[split]["missing_image" if not Path(item["image"]).is_file() else "corrupt_image"] += 1
            continue
        row = dict(audio_filepath=res["path"], duration=round(res["duration"], 4), text=item.get("text", ""))
        if split != "align":
            row["text_raw"] = item["text_raw"]
        if sha:
            row.update(image_filepath=item["image"], image_sha256=sha)
        row.update(utt_id=item["utt_id"], speaker=item["speaker"], lang=cfg.lang, gender=item["gender"],
                   district=item["district"])
        splits[split].append(row)
    for split, split_rows in splits.items():
        if not split_rows:
            dropped = ", ".join(f"{n} {why}" for why, n in sorted(drops[split].items())) or "empty file"
            raise InputError(f"no usable lines left in the {split} manifest {getattr(cfg, split)} (dropped: {dropped})",
                             "check the audio, images and transcripts of that manifest (unreadable, empty, silent "
                             "or too long audio, missing images and empty transcripts are dropped)")
    converted = sum(1 for r in audio.values() if r.get("converted"))
    card = dict(kind="manifest", dir=str(audio_cache()), manifests={s: str(Path(getattr(cfg, s)).resolve()) for s in SPLITS},
                dropped={s: dict(sorted(c.items())) for s, c in drops.items()}, audio_converted=converted,
                audio_in_place=len(audio) - converted - sum(1 for r in audio.values() if "drop" in r),
                images=len({v for v in images.values() if v}),
                speaker_rule="speaker/speaker_id/speakerID field unless a placeholder (NA), else parsed from the "
                             "audio file name, else unknown (not matched by the leak check)")
    return ByoCorpus(audio_cache(), splits, card, reused=False)


def _resolve(base: Path, value) -> Path:
    p = Path(str(value)).expanduser()
    return p if p.is_absolute() else (base / p).resolve()


def _file_key(path: str) -> str:
    st = os.stat(path)
    return hashlib.sha256(f"{path}\0{st.st_size}\0{st.st_mtime_ns}".encode()).hexdigest()[:24]


def _image_sha(path: str, memo: dict[str, str | None]) -> str | None:
    from avasr_cli.data.audio_io import CorruptMedia, decode_image

    if path not in memo:
        try:
            data = Path(path).read_bytes()
            decode_image(data)
            memo[path] = hashlib.sha256(data).hexdigest()
        except (OSError, CorruptMedia):
            memo[path] = None
    return memo[path]


def _check_leaks(items: list[dict]) -> None:
    from avasr_cli.data.vaani.select import UNKNOWN_SPEAKER

    seen = {"speaker": {}, "audio": {}}
    for item in items:
        if item["split"] in ("train", "align"):
            if item["speaker"] != UNKNOWN_SPEAKER:
                seen["speaker"].setdefault(item["speaker"], item["where"])
            seen["audio"].setdefault(item["audio"], item["where"])
    leaks = [(i["where"], f"speaker {i['speaker']!r}", seen["speaker"][i["speaker"]]) for i in items
             if i["split"] in ("dev", "test") and i["speaker"] in seen["speaker"]]
    leaks += [(i["where"], f"audio file {Path(i['audio']).name}", seen["audio"][i["audio"]]) for i in items
              if i["split"] in ("dev", "test") and i["audio"] in seen["audio"]]
    if leaks:
        where, what, other = leaks[0]
        raise InputError(f"{len(leaks)} dev/test line(s) share a speaker or audio with train/align, first: {where} "
                         f"({what}, also at {other})",
                         "move those speakers out of train and align (or out of dev/test): evaluation speakers must "
                         "be unseen; speaker ids come from the speaker field, else the audio file name")
