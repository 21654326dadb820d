"""Resumable, parallel decoding of Vaani rows in shards.

A :class:`Phase` is one stream of rows (dev, test, train, align or images) cut into shards of ``shard_size``
rows. Each shard is decoded by :func:`process_shard` in a worker process, which writes the shard's audio
or image files, then its marker ``shards/<phase>/<i>.json`` (the rows it kept and what it dropped), atomically
and last. A rerun reuses every finished shard whose files still exist; ``end.json`` records that the stream
ended after that many shards.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import unicodedata
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

from avasr_cli.progress import Reporter
from avasr_cli.run import write_json_atomic

# row fields carried from the stream into the shard markers
META = ("utt_id", "speaker", "speaker_keys", "gender", "district", "state", "config", "split", "image")


# ------------------------------------------------------------------------------------------------ worker
def process_shard(task: dict) -> dict:
    """Decode one shard (worker process), write its files, then its marker; return the marker's content."""
    from avasr_cli.data.audio_io import os_sync

    result = _audio_shard(task) if task["kind"] == "audio" else _image_shard(task)
    result.update(index=task["index"], read=task["read"])
    os_sync()
    write_json_atomic(Path(task["root"]) / "shards" / task["phase"] / f"{task['index']:06d}.json", result)
    return result


def _audio_shard(task: dict) -> dict:
    from avasr_cli.data import audio_io
    from avasr_cli.data.text import clean_transcript, is_in_script

    root, phase, lang = Path(task["root"]), task["phase"], task["lang"]
    drops: Counter = Counter()
    rows, converted = [], 0
    for r in task["rows"]:
        text = raw = ""
        if task["transcribed"]:
            raw = str(r.get("text_raw") or "")
            text = unicodedata.normalize("NFC", clean_transcript(raw, lang))
            if not text:
                drops["empty_transcript"] += 1
                continue
            if task["script_check"] and not is_in_script(raw, lang):
                drops["wrong_script"] += 1
                continue
        elif not r["image"]:
            drops["no_image_name"] += 1
            continue
        try:
            data, sr = audio_io.decode_audio(r["bytes"] or b"")
        except audio_io.CorruptMedia:
            drops["corrupt_audio"] += 1
            continue
        if data.shape[0] / sr > task["max_duration"]:
            drops["too_long"] += 1
            continue
        mono = audio_io.to_16k_mono(data, sr)
        if audio_io.is_empty_or_silent(mono):
            drops["empty_or_silent"] += 1
            continue
        converted += sr != audio_io.SAMPLE_RATE or data.shape[1] != 1
        rel = f"audio/{phase}/{r['utt_id']}.flac"
        audio_io.write_audio(root / rel, mono)
        row = {k: r[k] for k in META}
        row.update(audio=rel, duration=round(mono.size / audio_io.SAMPLE_RATE, 4), text=text)
        if task["transcribed"]:
            row["text_raw"] = raw
        rows.append(row)
    return dict(rows=rows, drops=dict(drops), converted=converted)


def _image_shard(task: dict) -> dict:
    from avasr_cli.data import audio_io

    root = Path(task["root"])
    mapping: dict[str, str | None] = {}
    for r in task["rows"]:
        if r["name"] in mapping:
            continue
        if r["bytes"] is None:  # a null cell: as good as corrupt
            mapping[r["name"]] = None
            continue
        try:
            ext = audio_io.decode_image(r["bytes"])
        except audio_io.CorruptMedia:
            mapping[r["name"]] = None
            continue
        rel = f"images/{hashlib.sha256(r['bytes']).hexdigest()}.{ext}"
        if not (root / rel).is_file():
            audio_io.write_file(root / rel, r["bytes"])
        mapping[r["name"]] = rel
    return dict(names=[r["name"] for r in task["rows"]], map=mapping)


# ------------------------------------------------------------------------------------------------ phases
@dataclass
class Phase:
    """One stream of rows cut into shards. ``stream`` yields a row dict, or None for a row it filtered out."""

    name: str
    kind: str  # audio | image
    stream: Callable[[], Iterator[dict | None]]
    task: dict  # fields every task of this phase carries
    total: Callable[[], int | None] = lambda: None
    enough: Callable[[list[dict]], bool] = lambda prefix: False
    valid: Callable[[dict[int, dict]], dict[int, dict]] = lambda cached: cached  # the still usable ones
    prepare: Callable[[list[dict], int], list[dict]] = lambda rows, index: rows  # rows → task rows
    done: dict[int, dict] = field(default_factory=dict)
    decoded: int = 0


class Running:
    """A sum over a growing prefix of shards, each shard counted once (``enough`` runs after every shard)."""

    def __init__(self, value: Callable[[dict], float]):
        self.value, self.n, self.total = value, 0, 0.0

    def __call__(self, prefix: list[dict]) -> float:
        if len(prefix) < self.n:  # never happens within a run; recount to be safe
            self.n, self.total = 0, 0.0
        for shard in prefix[self.n :]:
            self.total += self.value(shard)
        self.n = len(prefix)
        return self.total


def _prefix(done: dict[int, dict]) -> list[dict]:
    out, i = [], 0
    while i in done:
        out.append(done[i])
        i += 1
    return out


def run_phase(root: Path, ph: Phase, shard_size: int, workers: int, rep: Reporter) -> list[dict]:
    """Finish ``ph`` (resuming from its finished shards) and return its shards in order."""
    from avasr_cli.data.audio_io import ordered_map

    pdir = root / "shards" / ph.name
    pdir.mkdir(parents=True, exist_ok=True)
    cached = {}
    for f in sorted(pdir.glob("[0-9]*.json")):
        with contextlib.suppress(OSError, json.JSONDecodeError):
            cached[int(f.stem)] = json.loads(f.read_text(encoding="utf-8"))
    ph.done.update(ph.valid(cached))
    end = read_json(pdir / "end.json")

    def finished() -> bool:
        prefix = _prefix(ph.done)
        return (end is not None and len(prefix) >= end["shards"]) or ph.enough(prefix)

    if finished():
        return _prefix(ph.done)[: end["shards"] if end else None]

    def tasks() -> Iterator[dict]:
        index, buf, read = 0, [], 0
        for row in ph.stream():
            read += 1
            if row is not None:
                buf.append(row)
            if len(buf) == shard_size:
                if index not in ph.done:
                    yield dict(ph.task, root=str(root), phase=ph.name, index=index, read=read,
                               rows=ph.prepare(buf, index))
                index, buf, read = index + 1, [], 0
                if ph.enough(_prefix(ph.done)):
                    return
        if buf:
            if index not in ph.done:
                yield dict(ph.task, root=str(root), phase=ph.name, index=index, read=read, rows=ph.prepare(buf, index))
            index += 1
        write_json_atomic(pdir / "end.json", {"shards": index})

    with rep.task(f"{ph.name}: decoding", total=ph.total()) as bar:
        bar.advance(sum(s.get("read", 0) for s in ph.done.values()))
        results = ordered_map(process_shard, tasks(), workers)
        try:
            for shard in results:
                ph.done[shard["index"]] = shard
                ph.decoded += 1
                bar.advance(shard["read"])
                if ph.enough(_prefix(ph.done)):
                    break
        finally:
            results.close()
    end = read_json(pdir / "end.json")
    return _prefix(ph.done)[: end["shards"] if end else None]


def read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
