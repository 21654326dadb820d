"""``avasr prepare``: build the split manifests (align, train, dev, test) and a data card in the run directory.

A *source* is a function ``(cfg, rep) -> SourceData`` producing manifest rows per split; this stage only
checks them (speaker-disjoint evaluation splits, unique utterance ids) and writes them. Only the
``builtin`` source (procedural images + espeak-ng speech, see :mod:`avasr_cli.data.builtin`) exists so far.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from avasr_cli.data.manifest import SPLITS, total_hours
from avasr_cli.errors import ConfigError, InputError
from avasr_cli.progress import Reporter
from avasr_cli.run import RunDir, write_json_atomic, write_jsonl_atomic

PLANNED_SOURCES = ("vaani", "manifest")
MAX_UTTERANCES = 1_000_000


@dataclass(frozen=True)
class PrepareConfig:
    lang: str = "kannada"
    source: str = "builtin"
    seed: int = 0
    num_align: int = 800
    num_train: int = 300
    num_dev: int = 60
    num_test: int = 120

    def __post_init__(self) -> None:
        from avasr_cli.data.builtin import ALIASES

        lang = self.lang.strip().lower()
        object.__setattr__(self, "lang", ALIASES.get(lang, lang))
        object.__setattr__(self, "source", self.source.strip().lower())

    def validate(self) -> "PrepareConfig":
        """Raise one :class:`ConfigError` listing every problem."""
        from avasr_cli.data.builtin import LANGUAGES

        problems, hints = [], []
        if self.lang not in LANGUAGES:
            problems.append(f"unknown --lang '{self.lang}' (supported: {', '.join(sorted(LANGUAGES))})")
        if self.source in PLANNED_SOURCES:
            problems.append(f"source '{self.source}' is not available yet")
            hints.append("use --source builtin (procedural images with synthetic speech)")
        elif self.source not in SOURCES:
            problems.append(f"unknown --source '{self.source}' (available: {', '.join(SOURCES)})")
        if self.seed < 0:
            problems.append(f"--seed must be >= 0, got {self.seed}")
        for split in SPLITS:
            n = getattr(self, f"num_{split}")
            if not 1 <= n <= MAX_UTTERANCES:
                problems.append(f"--num-{split} must be between 1 and {MAX_UTTERANCES:,}, got {n}")
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
    speakers: dict[str, int] = field(default_factory=dict)
    manifests: dict[str, str] = field(default_factory=dict)
    data_card: str = ""
    seconds: float = 0.0


@dataclass
class SourceData:
    """What a source hands the stage: manifest rows per split (absolute paths) and facts for the data card."""

    splits: dict[str, list[dict]]
    corpus_dir: Path
    reused_cache: bool
    card: dict


def builtin_source(cfg: PrepareConfig, rep: Reporter) -> SourceData:
    from avasr_cli.data.builtin import CorpusConfig, generate_corpus

    corpus_cfg = CorpusConfig(lang=cfg.lang, seed=cfg.seed, num_align=cfg.num_align, num_train=cfg.num_train,
                              num_dev=cfg.num_dev, num_test=cfg.num_test)
    corpus = generate_corpus(corpus_cfg, rep)
    splits: dict[str, list[dict]] = {s: [] for s in SPLITS}
    for r in corpus.rows:
        row = dict(audio_filepath=str(corpus.dir / r["audio"]), duration=r["duration"],
                   text="" if r["split"] == "align" else r["text"])
        if r["split"] != "align":
            row["text_raw"] = r["text"]
        row.update(image_filepath=str(corpus.dir / r["image"]), image_sha256=r["image_sha256"], utt_id=r["utt_id"],
                   speaker=r["speaker"], lang=cfg.lang, gender=r["gender"])
        splits[r["split"]].append(row)
    card = dict(corpus=dict(kind="builtin", dir=str(corpus.dir), **corpus.info),
                voices={s: sorted({r["voice"] for r in corpus.rows if r["split"] == s}) for s in SPLITS})
    return SourceData(splits, corpus.dir, corpus.reused, card)


SOURCES: dict[str, Callable[[PrepareConfig, Reporter], SourceData]] = {"builtin": builtin_source}


def check_disjoint(splits: dict[str, list[dict]]) -> dict:
    """Dev and test speakers must not occur in train or align; no utterance id may occur twice."""
    speakers = {s: {r["speaker"] for r in rows} for s, rows in splits.items()}
    seen = speakers.get("train", set()) | speakers.get("align", set())
    leaks = {s: sorted(speakers.get(s, set()) & seen) for s in ("dev", "test")}
    ids = [r["utt_id"] for rows in splits.values() for r in rows]
    duplicates = len(ids) - len(set(ids))
    return dict(speaker_disjoint=not any(leaks.values()), leaked_speakers=leaks, unique_utt_ids=duplicates == 0,
                duplicate_utt_ids=duplicates, passed=not any(leaks.values()) and duplicates == 0)


def run_prepare(run: RunDir, cfg: PrepareConfig, rep: Reporter | None = None) -> PrepareResult:
    from avasr_cli import __version__

    rep = rep or Reporter()
    start = time.time()
    cfg.validate()
    data = SOURCES[cfg.source](cfg, rep)
    check = check_disjoint(data.splits)
    if not check["passed"]:
        raise InputError(f"the {cfg.source} source broke the split rules: {check}",
                         "dev/test speakers must not appear in train or align; utterance ids must be unique")
    result = PrepareResult(lang=cfg.lang, source=cfg.source, corpus_dir=str(data.corpus_dir),
                           reused_cache=data.reused_cache)
    for split in SPLITS:
        rows = data.splits[split]
        path = run.manifest(split)
        write_jsonl_atomic(path, rows)
        result.counts[split] = len(rows)
        result.hours[split] = round(total_hours(rows), 4)
        result.speakers[split] = len({r["speaker"] for r in rows})
        result.manifests[split] = str(path)
    rep.log(f"wrote {sum(result.counts.values())} utterances ({sum(result.hours.values()):.2f} h) to {run.data}")
    card_path = run.data / "data_card.json"
    result.data_card = str(card_path)
    result.seconds = round(time.time() - start, 2)
    write_json_atomic(card_path, dict(
        source=cfg.source, lang=cfg.lang, config=dataclasses.asdict(cfg), counts=result.counts, hours=result.hours,
        speakers=result.speakers, speaker_ids={s: sorted({r["speaker"] for r in data.splits[s]}) for s in SPLITS},
        utterances_by_gender={s: _count(r.get("gender", "unknown") for r in data.splits[s]) for s in SPLITS},
        disjointness=check, versions=_versions(__version__), **data.card))
    return result


def _count(values) -> dict[str, int]:
    out: dict[str, int] = {}
    for v in values:
        out[v] = out.get(v, 0) + 1
    return dict(sorted(out.items()))


def _versions(avasr_version: str) -> dict[str, str]:
    import platform
    from importlib import metadata

    versions = {"avasr": avasr_version, "python": platform.python_version()}
    for dist in ("numpy", "pillow", "soundfile", "soxr", "espeakng-loader"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    return versions
