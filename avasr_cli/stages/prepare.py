"""``avasr prepare``: build the split manifests (align, train, dev, test) and a data card in the run directory.

A *source* is a function ``(cfg, rep, token=None) -> SourceData`` producing manifest rows per split; this
stage only checks them (speaker-disjoint evaluation splits, unique utterance ids) and writes them. Sources:

* ``builtin``: procedural images + espeak-ng speech (:mod:`avasr_cli.data.builtin`), the default because it
  works offline and without an account;
* ``vaani``: ``ARTPARK-IISc/Vaani`` + ``ARTPARK-IISc/Vaani-transcription-part`` from the hub or a local
  snapshot (:mod:`avasr_cli.data.vaani`); gated, so it needs a token;
* ``manifest``: bring-your-own NeMo manifests (:mod:`avasr_cli.data.byo`).

The Hugging Face token is a separate argument of :func:`run_prepare`, never a config field: the config is
saved in run.json and the data card.
"""

from __future__ import annotations

import dataclasses
import hashlib
import time
from array import array
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

from avasr_cli.data.manifest import SPLITS, SourceData
from avasr_cli.data.vaani.select import UNKNOWN_SPEAKER
from avasr_cli.errors import ConfigError, InputError, not_a_file
from avasr_cli.progress import Reporter
from avasr_cli.run import RunDir, write_json_atomic, write_jsonl_atomic

MAX_UTTERANCES = 1_000_000


@dataclass(frozen=True)
class PrepareConfig:
    lang: str = "kannada"
    source: str = "builtin"
    seed: int = 0
    num_align: int = 800
    num_train: int = 300
    num_dev: int = 80
    num_test: int = 160
    # vaani
    dataset: str = "ARTPARK-IISc/Vaani"
    transcribed_dataset: str = "ARTPARK-IISc/Vaani-transcription-part"
    revision: str | None = None
    districts: tuple[str, ...] = ()
    max_align_hours: float | None = None
    max_train_hours: float | None = None
    all: bool = False  # decode a phase above the large-job threshold without a cap (avasr_cli.data.vaani.plan)
    # vaani and manifest
    max_duration: float = 20.0
    workers: int = 2
    shard_size: int = 256
    # every source: one audio file per clip, or NeMo tarred shards of shard_clips clips (avasr_cli.data.shards)
    audio_layout: str = "files"
    shard_clips: int = 1000
    # manifest
    train: str = ""
    dev: str = ""
    test: str = ""
    align: str = ""

    def __post_init__(self) -> None:
        from avasr_cli.data.builtin import ALIASES

        lang = self.lang.strip().lower()
        object.__setattr__(self, "lang", ALIASES.get(lang, lang))
        object.__setattr__(self, "source", self.source.strip().lower())
        districts = self.districts.split(",") if isinstance(self.districts, str) else self.districts
        object.__setattr__(self, "districts", tuple(d.strip() for d in districts if d and d.strip()))

    def validate(self) -> "PrepareConfig":
        """Raise one :class:`ConfigError` listing every problem."""
        from avasr_cli.data.builtin import LANGUAGES

        problems, hints = [], []
        if self.source == "builtin" and self.lang not in LANGUAGES:
            problems.append(f"unknown --lang '{self.lang}' (supported: {', '.join(sorted(LANGUAGES))})")
        elif not self.lang:
            problems.append("--lang is empty")
        if self.source not in SOURCES:
            problems.append(f"unknown --source '{self.source}' (available: {', '.join(SOURCES)})")
        if self.seed < 0:
            problems.append(f"--seed must be >= 0, got {self.seed}")
        for split in SPLITS:
            n = getattr(self, f"num_{split}")
            if not 1 <= n <= MAX_UTTERANCES:
                problems.append(f"--num-{split} must be between 1 and {MAX_UTTERANCES:,}, got {n}")
        for name in ("max_align_hours", "max_train_hours"):
            if getattr(self, name) is not None and not getattr(self, name) > 0:
                problems.append(f"--{name.replace('_', '-')} must be > 0, got {getattr(self, name)}")
        if not 0 < self.max_duration <= 600:
            problems.append(f"--max-duration must be in (0, 600] seconds, got {self.max_duration}")
        if not 1 <= self.workers <= 256:
            problems.append(f"--workers must be between 1 and 256, got {self.workers}")
        if not 1 <= self.shard_size <= 100_000:
            problems.append(f"shard_size must be between 1 and 100,000, got {self.shard_size}")
        if self.audio_layout not in ("files", "shards"):
            problems.append(f"--audio-layout must be files or shards, got {self.audio_layout!r}")
        if not 1 <= self.shard_clips <= 1_000_000:
            problems.append(f"--shard-clips must be between 1 and 1,000,000, got {self.shard_clips}")
        if self.source == "vaani":
            for name in ("dataset", "transcribed_dataset"):
                if not getattr(self, name).strip():
                    problems.append(f"--{name.replace('_', '-')} is empty")
        if self.all and self.source != "vaani":
            problems.append("--all only applies to --source vaani")
        given = [s for s in SPLITS if getattr(self, s)]
        if self.source == "manifest":
            for split in SPLITS:
                path = getattr(self, split)
                if not path:
                    problems.append(f"--{split} is required with --source manifest")
                elif why := not_a_file(Path(path).expanduser()):
                    problems.append(f"--{split} {path} {why}")
            hints.append("give a NeMo manifest (.jsonl) for each of --train, --dev, --test and --align")
        elif given:
            problems.append(f"--{'/--'.join(given)} only apply to --source manifest")
        if problems:
            raise ConfigError("; ".join(problems), " ".join(hints) or "see `avasr prepare --help`")
        return self


@dataclass
class PrepareResult:
    lang: str
    source: str
    corpus_dir: str
    reused_cache: bool
    counts: dict[str, int] = field(default_factory=dict)
    hours: dict[str, float] = field(default_factory=dict)
    speakers: dict[str, int] = field(default_factory=dict)  # known speakers (rows of unknown speaker not counted)
    unknown_speaker_rows: dict[str, int] = field(default_factory=dict)
    manifests: dict[str, str] = field(default_factory=dict)
    data_card: str = ""
    speaker_group_unit: str = "speaker"  # what a row's speaker_group is: "voice" (built-in) or "speaker"
    seconds: float = 0.0


def vaani_source(cfg: PrepareConfig, rep: Reporter, token: str | None = None, verify: bool = False) -> SourceData:
    from avasr_cli.data.vaani import prepare_vaani

    corpus = prepare_vaani(cfg, rep, token=token)
    empty = [s for s, rows in corpus.splits.items() if not rows]
    if empty:
        raise InputError(f"Vaani {cfg.lang}: no usable utterances left in {', '.join(empty)} "
                         f"(dropped: {corpus.card['dropped']}; configs: {corpus.card['configs']})",
                         "check --lang and --districts against the dataset's configs and language column, "
                         "or raise --max-align-hours/--max-train-hours")
    return SourceData(corpus.splits, corpus.dir, corpus.reused, dict(corpus=corpus.card))


def manifest_source(cfg: PrepareConfig, rep: Reporter, token: str | None = None, verify: bool = False) -> SourceData:
    from avasr_cli.data.byo import prepare_manifests

    corpus = prepare_manifests(cfg, rep)
    return SourceData(corpus.splits, corpus.dir, corpus.reused, dict(corpus=corpus.card))


def builtin_source(cfg: PrepareConfig, rep: Reporter, token: str | None = None, verify: bool = False) -> SourceData:
    from avasr_cli.data.builtin.source import builtin_source as source

    return source(cfg, rep, verify=verify)


SOURCES: dict[str, Callable[..., SourceData]] = {"builtin": builtin_source, "vaani": vaani_source,
                                                 "manifest": manifest_source}


def check_disjoint(splits: dict[str, Iterable[dict]]) -> dict:
    """Dev and test speakers must not occur in train or align; no utterance id may occur twice. Rows of
    unknown speaker cannot be checked: they are counted, not matched.

    One streamed pass: memory is the speaker sets and 8 bytes per utterance (a 64-bit hash of its id,
    sorted to find repeats; a repeated hash is confirmed on the ids themselves in a second pass over just
    those, so a hash collision is never reported as a duplicate)."""
    import numpy as np

    speakers: dict[str, set] = {s: set() for s in splits}
    unknown = {s: 0 for s in splits}
    hashes = array("Q")
    for split, rows in splits.items():
        for r in rows:
            if r["speaker"] == UNKNOWN_SPEAKER:
                unknown[split] += 1
            else:
                speakers[split].add(r["speaker"])
            hashes.append(_id_hash(r["utt_id"]))
    seen = speakers.get("train", set()) | speakers.get("align", set())
    leaks = {s: sorted(speakers.get(s, set()) & seen) for s in ("dev", "test")}
    ids = np.frombuffer(hashes, dtype=np.uint64) if hashes else np.zeros(0, np.uint64)
    ids = np.sort(ids)
    repeated = set(ids[1:][ids[1:] == ids[:-1]].tolist())
    duplicates = 0
    if repeated:  # confirm on the ids: only the few sharing a hash are held
        same = [r["utt_id"] for rows in splits.values() for r in rows if _id_hash(r["utt_id"]) in repeated]
        duplicates = len(same) - len(set(same))
    return dict(speaker_disjoint=not any(leaks.values()), leaked_speakers=leaks, unique_utt_ids=duplicates == 0,
                duplicate_utt_ids=duplicates, unknown_speaker_rows=unknown,
                passed=not any(leaks.values()) and duplicates == 0)


def _id_hash(utt_id) -> int:
    return int.from_bytes(hashlib.blake2b(str(utt_id).encode("utf-8"), digest_size=8).digest(), "little")


def run_prepare(run: RunDir, cfg: PrepareConfig, rep: Reporter | None = None, *, token: str | None = None,
                verify: bool = False) -> PrepareResult:
    """Build the manifests. ``token`` (Hugging Face, vaani only) is passed to ``datasets`` and nowhere else;
    without it ``datasets`` falls back to HF_TOKEN or the stored ``hf auth login`` token. ``verify``
    (``prepare --force``): the built-in corpus's shards are checked against their checksums before reuse."""
    from avasr_cli import __version__

    rep = rep or Reporter()
    start = time.time()
    cfg.validate()
    data = SOURCES[cfg.source](cfg, rep, token=token, verify=verify)
    check = check_disjoint(data.splits)
    if not check["passed"]:
        raise InputError(f"the {cfg.source} source broke the split rules: {check}",
                         "dev/test speakers must not appear in train or align; utterance ids must be unique")
    result = PrepareResult(lang=cfg.lang, source=cfg.source, corpus_dir=str(data.corpus_dir),
                           reused_cache=data.reused_cache)
    if cfg.audio_layout == "shards":
        data.splits = _pack(data, cfg, rep)
    from avasr_cli.data.shards import files_on_disk

    files = {s: files_on_disk(data.splits[s]) for s in SPLITS}
    for split in SPLITS:  # streamed to the manifest, one row at a time
        path = run.manifest(split)
        write_jsonl_atomic(path, map(_with_group, data.splits[split]))
        result.manifests[split] = str(path)
    from avasr_cli.data.card import build_card

    counted = build_card({s: run.manifest(s) for s in SPLITS}, cfg.lang, UNKNOWN_SPEAKER)
    for split in SPLITS:
        result.counts[split] = counted["counts"][split]
        result.hours[split] = counted["hours"][split]
        result.speakers[split] = counted["speakers"][split]
        result.unknown_speaker_rows[split] = counted["unknown_speaker_rows"][split]
    rep.log(f"wrote {sum(result.counts.values())} utterances ({sum(result.hours.values()):.2f} h) to {run.data}")
    card_path = run.data / "data_card.json"
    result.data_card = str(card_path)
    result.seconds = round(time.time() - start, 2)
    result.speaker_group_unit = data.card.pop("speaker_group_unit", "speaker")
    write_json_atomic(card_path, dict(
        source=cfg.source, lang=cfg.lang, config=dataclasses.asdict(cfg), **counted,
        speaker_group_unit=result.speaker_group_unit,
        disjointness=check, versions=_versions(__version__),
        audio_layout=cfg.audio_layout, audio_files=files,
        audio_files_per_10k_clips={s: round(files[s] * 10_000 / result.counts[s], 1) if result.counts[s] else 0.0
                                   for s in SPLITS}, **data.card))
    return result


def _with_group(row: dict) -> dict:
    """The unit a bootstrap resamples: a source's own group (a voice), else the speaker."""
    if "speaker_group" in row:
        return row
    return dict(row, speaker_group=row["speaker"])


def _pack(data: SourceData, cfg: PrepareConfig, rep: Reporter) -> dict[str, Iterable[dict]]:
    """Each split's audio into NeMo tarred shards next to the corpus (reused when the rows are the same)."""
    from avasr_cli.data.shards import ShardRows, content_key, pack_split

    out = {}
    for split in SPLITS:
        rows = data.splits[split]
        if isinstance(rows, ShardRows):  # the source wrote shards itself (the built-in corpus)
            out[split] = rows
            continue
        key = content_key(rows, cfg.shard_clips)  # a streamed pass: the shards' name says what they hold
        dest = Path(data.corpus_dir) / "shards" / f"{split}-{key}"
        with rep.task(f"packing {split} audio into shards", unit="clip") as task:
            out[split] = pack_split(rows, dest, cfg.shard_clips, key=key, progress=task.advance)
    return out


def _versions(avasr_version: str) -> dict[str, str]:
    import platform
    from importlib import metadata

    versions = {"avasr": avasr_version, "python": platform.python_version()}
    for dist in ("numpy", "pillow", "soundfile", "soxr", "espeakng-loader", "datasets"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    return versions
