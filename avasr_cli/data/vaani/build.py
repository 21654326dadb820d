"""Corpus building: the phases of a Vaani prepare and the rules that turn their rows into splits.

Phases run in this order: ``dev`` and ``test`` (the official splits of the transcription part), ``train``,
``align`` (main Vaani), then the images the kept alignment rows name. The rules (speakers, splits, caps,
the leak check) are listed in :mod:`avasr_cli.data.vaani.source`; every row dropped is counted by reason.
"""

from __future__ import annotations

import hashlib
import os
from collections import Counter
from typing import Any, Callable, Iterator

from avasr_cli.data.vaani.hub import VaaniDataset
from avasr_cli.data.vaani.images import attach_images
from avasr_cli.data.vaani.select import (SPLIT_NAMES, UNKNOWN_SPEAKER, blob_of, norm, row_filter, speaker_keys,
                                         utt_id_of)
from avasr_cli.data.vaani.shards import Phase, Running, run_phase

CARVE = (("test", 0.10), ("dev", 0.05))  # fraction of speakers, when the official split is missing


def _carve(speaker: str, seed: int, missing: set[str]) -> str:
    if speaker == UNKNOWN_SPEAKER:  # never carve by a speaker nobody knows: all of them would land together
        return "train"
    u = int(hashlib.sha256(f"{seed}:{speaker}".encode()).hexdigest()[:8], 16) / 16**8
    edge = 0.0
    for split, fraction in CARVE:
        edge += fraction
        if u < edge:
            return split if split in missing else "train"
    return "train"


class Builder:
    def __init__(self, cfg, rep, root, audio, transcribed, layout, script_check):
        self.cfg, self.rep, self.root, self.layout = cfg, rep, root, layout
        self.audio, self.transcribed = audio, transcribed
        self.workers = max(1, cfg.workers)
        self.base = dict(lang=cfg.lang, max_duration=cfg.max_duration, script_check=script_check)
        self.drops: dict[str, Counter] = {}
        self.decoded = 0
        self.stats: dict[str, Any] = {}

    # streams ------------------------------------------------------------------------------------------
    def _stream(self, ds: VaaniDataset, part: str, official: set[str] | None) -> Callable[[], Iterator]:
        lay = self.layout[part]
        keep = row_filter(lay["by_language"], self.cfg.lang, self.cfg.districts)

        def stream() -> Iterator[dict | None]:
            for config in lay["configs"]:
                for split in sorted(ds.open(config)):
                    if official is not None and SPLIT_NAMES.get(norm(split), "train") not in official:
                        continue
                    for row in ds.rows(config, split):
                        if not keep(row):
                            yield None
                            continue
                        blob, name = blob_of(row.get("audio"))
                        speaker, keys = speaker_keys(row.get("speakerID"), name)
                        yield dict(utt_id=utt_id_of(name, blob), bytes=blob, speaker=speaker, speaker_keys=keys,
                                   gender=str(row.get("gender") or "unknown").strip().lower(),
                                   district=str(row.get("district") or ""), state=str(row.get("state") or ""),
                                   config=config, split=SPLIT_NAMES.get(norm(split), "train"),
                                   image=os.path.basename(str(row.get("referenceImage") or "").strip()),
                                   text_raw=row.get("transcript"))

        return stream

    def _total(self, part: str, official: set[str] | None) -> Callable[[], int | None]:
        """Rows to read (for the progress bar's ETA), from the plan's sizes when they are of the configs read."""
        lay, sizes = self.layout[part], self.layout["sizes"][part]

        def total() -> int | None:
            if lay["estimate"] != lay["configs"]:
                return None
            counts = [v["rows"] for k, v in sizes.items() if official is None or k in official]
            return None if None in counts else sum(counts)

        return total

    def _audio_phase(self, name: str, ds, part: str, official, transcribed: bool, enough=None) -> list[dict]:
        def valid(cached: dict[int, dict]) -> dict[int, dict]:  # a shard whose files were deleted is redone
            return {i: s for i, s in cached.items() if all((self.root / r["audio"]).is_file() for r in s["rows"])}

        ph = Phase(name, "audio", self._stream(ds, part, official), dict(self.base, kind="audio", transcribed=transcribed),
                   total=self._total(part, official), valid=valid)
        if enough is not None:
            ph.enough = enough
        shards = run_phase(self.root, ph, self.cfg.shard_size, self.workers, self.rep)
        self.decoded += ph.decoded
        self.drops[name] = Counter()
        for s in shards:
            self.drops[name].update(s["drops"])
        self.stats.setdefault("resampled_or_downmixed", 0)
        self.stats["resampled_or_downmixed"] += sum(s.get("converted", 0) for s in shards)
        return [r for s in shards for r in s["rows"]]

    # splits -------------------------------------------------------------------------------------------
    def build(self) -> tuple[dict[str, list[dict]], dict]:
        cfg = self.cfg
        official = {SPLIT_NAMES.get(norm(s), "train") for s in self.layout["transcribed"]["splits"]}
        missing = {"dev", "test"} - official
        assembly = self.drops.setdefault("assembly", Counter())
        rows: dict[str, list[dict]] = {"dev": [], "test": [], "train": []}
        for split in ("dev", "test"):
            if split not in missing:
                rows[split] = self._audio_phase(split, self.transcribed, "transcribed", {split}, True)
        official_keys = {k for s in ("dev", "test") for r in rows[s] for k in r["speaker_keys"]}

        def route(r: dict) -> str | None:  # train, a carved eval split, or None (a dev/test speaker)
            target = _carve(r["speaker"], cfg.seed, missing) if missing else "train"
            return None if target == "train" and official_keys.intersection(r["speaker_keys"]) else target

        train_seconds = Running(lambda s: sum(r["duration"] for r in s["rows"] if route(r) == "train"))

        def train_enough(prefix: list[dict]) -> bool:
            return cfg.max_train_hours is not None and train_seconds(prefix) >= cfg.max_train_hours * 3600

        for r in self._audio_phase("train", self.transcribed, "transcribed", {"train"}, True, train_enough):
            target = route(r)
            if target is None:
                assembly["train_speaker_in_dev_test"] += 1
            else:
                rows[target].append(r)
        eval_keys = {k for s in ("dev", "test") for r in rows[s] for k in r["speaker_keys"]}
        if missing:  # a carved speaker known under a second key: keep it out of train too
            kept = [r for r in rows["train"] if not eval_keys.intersection(r["speaker_keys"])]
            assembly["train_speaker_in_dev_test"] += len(rows["train"]) - len(kept)
            rows["train"] = kept
        for split in ("test", "dev", "train"):
            rows[split] = self._dedupe(rows[split], f"{split}_duplicate_utterance")
        test_ids = {r["utt_id"] for r in rows["test"]}
        kept = [r for r in rows["dev"] if r["utt_id"] not in test_ids]  # in both official eval splits: test
        assembly["dev_utterance_also_in_test"] += len(rows["dev"]) - len(kept)
        rows["dev"] = kept
        rows["train"] = _truncate(rows["train"], cfg.max_train_hours)
        eval_ids = test_ids | {r["utt_id"] for r in rows["dev"]}
        train_ids = {r["utt_id"] for r in rows["train"]}

        def align_reason(r: dict) -> str | None:
            if eval_keys.intersection(r["speaker_keys"]):
                return "align_dev_test_speaker"
            if r["utt_id"] in eval_ids:
                return "align_dev_test_utterance"
            if r["utt_id"] in train_ids:
                return "align_repeats_train_utterance"
            return None

        align_seconds = Running(lambda s: sum(r["duration"] for r in s["rows"] if align_reason(r) is None))

        def align_enough(prefix: list[dict]) -> bool:
            return cfg.max_align_hours is not None and align_seconds(prefix) >= cfg.max_align_hours * 3600

        for r in self._audio_phase("align", self.audio, "audio", None, False, align_enough):
            if reason := align_reason(r):
                assembly[reason] += 1
            else:
                rows.setdefault("align", []).append(r)
        rows["align"] = _truncate(self._dedupe(rows.get("align", []), "align_duplicate_utterance"),
                                  cfg.max_align_hours)
        dropped, self.stats["images"], decoded = attach_images(
            rows, self.audio, self.layout["images"], self.root, self.cfg.shard_size, self.workers, self.rep)
        self.drops["images"], self.decoded = dropped, self.decoded + decoded
        for split_rows in rows.values():
            for r in split_rows:
                r["lang"] = cfg.lang
        heard = {k for s in ("align", "train") for r in rows[s] for k in r["speaker_keys"]}
        check = dict(rule="no dev/test speaker (under any of its keys) in train or align; no dev/test "
                          "utterance id in train or align",
                     leaked_speakers=sorted(heard & eval_keys),
                     overlapping_utterances=sorted({r["utt_id"] for s in ("align", "train") for r in rows[s]}
                                                   & eval_ids))
        check["passed"] = not check["leaked_speakers"] and not check["overlapping_utterances"]
        card = dict(dropped={k: dict(sorted((n, c) for n, c in v.items() if c)) for k, v in self.drops.items()},
                    eval_leak_check=check,
                    eval_splits={s: "carved from train by speaker hash" if s in missing else "official"
                                 for s in ("dev", "test")},
                    speaker_rule="<State>_<District>_<id> from IISc_VaaniProject_* file names, the speakerID "
                                 "column's id in the id place unless a placeholder (NA); else the column's id, else "
                                 "the file stem without its last _field, else unknown (never carved into dev/test, "
                                 "not matched by the leak check); the leak check also matches the file name's own "
                                 "key and the bare column id, case-folded",
                    shards_decoded_this_run=self.decoded, **self.stats)
        return {s: rows[s] for s in ("align", "train", "dev", "test")}, card

    def _dedupe(self, rows: list[dict], reason: str) -> list[dict]:
        seen, out = set(), []
        for r in rows:
            if r["utt_id"] in seen:
                self.drops["assembly"][reason] += 1
                continue
            seen.add(r["utt_id"])
            out.append(r)
        return out

def _truncate(rows: list[dict], hours: float | None) -> list[dict]:
    if hours is None:
        return rows
    out, total = [], 0.0
    for r in rows:
        if total >= hours * 3600:
            break
        out.append(r)
        total += r["duration"]
    return out
