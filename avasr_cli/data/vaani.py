"""The Vaani source: ``ARTPARK-IISc/Vaani`` (image-prompted audio, images in the ``images`` config) and
``ARTPARK-IISc/Vaani-transcription-part`` (transcribed audio with train/validation/test), read through
``datasets`` from the hub (streaming) or from a local snapshot directory, decoded into a shared cache.

Datasets
    ``--dataset`` / ``--transcribed-dataset`` take a hub id (``ARTPARK-IISc/Vaani``, ``id@revision`` pins a
    commit) or a local snapshot directory (what ``hf download --repo-type dataset`` leaves). Config names
    are discovered at run time: on the hub with ``get_dataset_config_names``; in a local directory every
    folder holding parquet files is a config named after the folder (a ``train``/``validation``/``test``
    folder, or a file name starting with one of those words, names the split; ``data/`` alone is
    ``default``). A config whose name is the language (case and punctuation ignored) is used alone;
    otherwise every config but ``images`` is read (only those naming one of ``--districts`` when any
    does) and rows are kept when their ``language`` column is the language and, with ``--districts``,
    their ``district`` column is one of them. Columns that a subset lacks are treated as empty.

Rules
    * speaker: the ``speakerID`` column when present, else parsed from the audio file name: Vaani names
      ``IISc_VaaniProject_<K>_<State>_<District>_<speaker>_…`` give ``<District>_<speaker>``; other names
      give the file stem without its last ``_`` field (``spk12_0003.wav`` → ``spk12``). Both keys are kept
      for the leak check, so a dataset with the column and one without still match.
    * utterance id: the audio file stem (the two datasets share file names; that is how a dev/test
      utterance is recognised in the alignment set).
    * splits: the official validation/test splits become dev/test; when a split is missing its speakers are
      carved from train by a seeded hash of the speaker id (10 % test, 5 % dev). Train rows of dev/test
      speakers are dropped; alignment rows of dev/test speakers or utterances, or that repeat a train
      utterance, are dropped. Each drop is counted in the data card.
    * audio: decoded with soundfile, clips longer than ``--max-duration`` or empty/silent dropped,
      down-mixed and resampled to 16 kHz (soxr), written as 16-bit FLAC.
    * text: :func:`clean_transcript`, NFC; empty → dropped; wrong script (:func:`is_in_script`) → dropped;
      the raw transcript is kept as ``text_raw``.
    * images: the ``images`` config row whose ``image.path`` has the file name of ``referenceImage``;
      stored once as ``images/<sha256>.<ext>``; a pair whose image is unnamed, absent or corrupt is dropped.
    * ``--max-train-hours`` / ``--max-align-hours`` keep the first rows in stream order up to that many hours.

Cache (``$AVASR_HOME/corpora/vaani-<lang>-<key>``, key = language, dataset refs + revisions, or local
file sizes and times, districts, max duration, seed, shard size)::

    layout.json               configs and splits found
    shards/<phase>/<i>.json   rows of one finished shard (the resume marker, written last, atomically)
    shards/<phase>/end.json   the stream ended after that many shards
    audio/<phase>/<utt_id>.flac, images/<sha256>.<ext>

Phases are ``dev``, ``test``, ``train`` (transcribed), ``align`` and ``images``; each streams rows in
shards of ``shard_size`` and decodes them in ``workers`` processes. A rerun skips finished shards, and a
finished corpus is reused without touching the hub. The token is passed to ``datasets`` only; it is never
written anywhere.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import time
import unicodedata
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

from avasr_cli.errors import AvasrError, InputError
from avasr_cli.progress import Reporter
from avasr_cli.run import avasr_home, write_json_atomic

CACHE_VERSION = 1
DEFAULT_DATASET = "ARTPARK-IISc/Vaani"
DEFAULT_TRANSCRIBED = "ARTPARK-IISc/Vaani-transcription-part"
SPLIT_NAMES = {"train": "train", "validation": "dev", "valid": "dev", "dev": "dev", "test": "test"}
CARVE = (("test", 0.10), ("dev", 0.05))  # fraction of speakers, when the official split is missing
META = ("utt_id", "speaker", "speaker_keys", "gender", "district", "state", "config", "split", "image")
_VAANI_NAME = re.compile(r"^IISc_VaaniProject_[A-Za-z]+_([^_]+)_([^_]+)_([^_]+)_")
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


# ------------------------------------------------------------------------------------------------ names
def norm(name: Any) -> str:
    return re.sub(r"[^0-9a-z]", "", unicodedata.normalize("NFKC", str(name or "")).lower())


def parse_ref(ref: str, revision: str | None) -> tuple[str, str | None]:
    """``id@rev`` pins a revision (beats ``--revision``); local paths are returned as given."""
    if "@" in ref and not Path(ref).expanduser().exists():
        ref, rev = ref.rsplit("@", 1)
        return ref, rev or revision
    return ref, revision


def speaker_keys(speaker_col: Any, name: str) -> tuple[str, list[str]]:
    """The speaker id (column, else parsed from the file name) and every key it may match under."""
    stem = Path(name).stem if name else ""
    parsed = None
    if m := _VAANI_NAME.match(stem):
        parsed = f"{m.group(2)}_{m.group(3)}"
    elif "_" in stem:
        parsed = stem.rsplit("_", 1)[0]
    elif stem:
        parsed = stem
    col = str(speaker_col).strip() if speaker_col not in (None, "") else ""
    speaker = col or parsed or "unknown"
    return speaker, sorted({k for k in (col, parsed) if k})


def utt_id_of(name: str, blob: bytes | None) -> str:
    stem = _UNSAFE.sub("_", Path(name).stem).strip("._") if name else ""
    return stem or "utt-" + hashlib.sha1(blob or b"").hexdigest()[:16]


def _blob(value: Any) -> tuple[bytes | None, str]:
    """(bytes, file name) of an undecoded Audio/Image cell."""
    if isinstance(value, dict):
        return value.get("bytes"), os.path.basename(str(value.get("path") or ""))
    if isinstance(value, (bytes, bytearray)):
        return bytes(value), ""
    return None, ""


# ------------------------------------------------------------------------------------------------ datasets
class VaaniDataset:
    """One hub id or local snapshot directory, read through ``datasets`` in streaming mode."""

    def __init__(self, ref: str, revision: str | None, token: str | None):
        ref, self.revision = parse_ref(ref, revision)
        path = Path(ref).expanduser()
        self.local = path.is_dir()
        if not self.local and (ref.startswith(("/", ".", "~")) or ref.count("/") != 1):
            raise InputError(f"dataset {ref!r} is neither a local directory nor a hub id (owner/name)",
                             "pass a hub id such as ARTPARK-IISc/Vaani or the folder `hf download` wrote")
        self.ref = str(path.resolve()) if self.local else ref
        self._token = token
        self._layout: dict[str, dict[str, list[str]]] | None = None
        self._opened: dict[str, dict] = {}

    def describe(self) -> dict:
        return dict(ref=self.ref, revision=None if self.local else self.revision, local=self.local)

    def fingerprint(self) -> str:
        if not self.local:
            return f"{self.ref}@{self.revision or 'main'}"
        stats = [(str(Path(f).relative_to(self.ref)), os.path.getsize(f), os.path.getmtime(f))
                 for splits in self.layout().values() for files in splits.values() for f in files]
        return hashlib.sha256(json.dumps(sorted(stats)).encode()).hexdigest()

    def layout(self) -> dict[str, dict[str, list[str]]]:
        """Local snapshots: {config: {split: [parquet files]}}."""
        if self._layout is None:
            layout: dict[str, dict[str, list[str]]] = {}
            root = Path(self.ref)
            for f in sorted(root.rglob("*.parquet")):
                parts = list(f.relative_to(root).parts[:-1])
                if any(p.startswith(".") for p in parts):
                    continue
                split = parts.pop() if parts and norm(parts[-1]) in SPLIT_NAMES else None
                if split is None:
                    m = re.match(r"(train|validation|valid|dev|test)(?=[-_.])", f.name, re.IGNORECASE)
                    split = m.group(1).lower() if m else "train"
                config = parts[-1] if parts and parts[-1] != "data" else "default"
                layout.setdefault(config, {}).setdefault(split, []).append(str(f))
            self._layout = layout
        return self._layout

    def configs(self) -> list[str]:
        import datasets

        if self.local:
            return sorted(self.layout())
        with self.errors():
            return list(datasets.get_dataset_config_names(self.ref, revision=self.revision, token=self._token))

    def open(self, config: str) -> dict:
        """{split: IterableDataset} with audio/image columns left undecoded (bytes + path)."""
        import datasets

        if config not in self._opened:
            with self.errors():
                if self.local:
                    found = datasets.load_dataset("parquet", data_files=self.layout()[config], streaming=True)
                else:
                    found = datasets.load_dataset(self.ref, config, streaming=True, revision=self.revision,
                                                  token=self._token)
                self._opened[config] = {split: _undecoded(ds) for split, ds in found.items()}
        return self._opened[config]

    def num_rows(self, config: str, split: str) -> int | None:
        try:
            if self.local:
                import pyarrow.parquet as pq

                return sum(pq.ParquetFile(f).metadata.num_rows for f in self.layout()[config][split])
            return int(self.open(config)[split].info.splits[split].num_examples)
        except Exception:
            return None

    def rows(self, config: str, split: str) -> Iterator[dict]:
        iterator = iter(self.open(config)[split])
        while True:
            with self.errors():
                row = next(iterator, None)
            if row is None:
                return
            yield row

    @contextlib.contextmanager
    def errors(self) -> Iterator[None]:
        """Map ``datasets``/hub failures to one-line :class:`InputError`s (the token never appears)."""
        try:
            yield
        except AvasrError:
            raise
        except Exception as exc:
            raise _access_error(self, exc) from None


def _undecoded(ds):
    from datasets import Audio, Image

    features = ds.features or {}
    for column, kind in (("audio", Audio), ("image", Image)):
        if isinstance(features.get(column), kind):
            ds = ds.cast_column(column, kind(decode=False))
    return ds


def _access_error(ds: VaaniDataset, exc: Exception) -> InputError:
    msg = f"{type(exc).__name__}: {exc}".splitlines()[0][:300]
    if ds._token:
        msg = msg.replace(ds._token, "***")
    if ds.local:
        return InputError(f"cannot read the local dataset {ds.ref} ({msg})",
                          "point --dataset/--transcribed-dataset at a complete `hf download` snapshot")
    from huggingface_hub import get_token
    from huggingface_hub.errors import GatedRepoError, HfHubHTTPError, RepositoryNotFoundError

    status = getattr(getattr(exc, "response", None), "status_code", None)
    text = str(exc).lower()
    gated = (isinstance(exc, (GatedRepoError, RepositoryNotFoundError)) or status in (401, 403)
             or "gated" in text or "authenticat" in text or type(exc).__name__ == "DatasetNotFoundError")
    if gated:
        why = "your token was refused" if (ds._token or get_token()) else "no Hugging Face token was found"
        return InputError(f"access to {ds.ref} was refused: {why}",
                          f"accept the dataset terms at https://huggingface.co/datasets/{ds.ref} while logged in, "
                          "then run `hf auth login` or set HF_TOKEN (or pass --token)")
    if isinstance(exc, (ConnectionError, OSError, HfHubHTTPError)) or "offline" in text or "connect" in text:
        return InputError(f"cannot read {ds.ref} from the Hugging Face Hub ({msg})",
                          f"check the network (and HF_HUB_OFFLINE), or download a snapshot with `hf download "
                          f"{ds.ref} --repo-type dataset --local-dir DIR` and pass the folder instead of the id")
    return InputError(f"reading {ds.ref} failed ({msg})", "pin a known revision with --revision, or use a local snapshot")


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
        if r["bytes"] is None or r["name"] in mapping:
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


class _Running:
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
    end = _read_json(pdir / "end.json")

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
    end = _read_json(pdir / "end.json")
    return _prefix(ph.done)[: end["shards"] if end else None]


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None


# ------------------------------------------------------------------------------------------------ corpus
@dataclass
class VaaniCorpus:
    dir: Path
    splits: dict[str, list[dict]]  # absolute paths
    card: dict
    reused: bool


def corpus_key(cfg, audio: VaaniDataset, transcribed: VaaniDataset) -> str:
    blob = json.dumps(dict(lang=norm(cfg.lang), audio=audio.fingerprint(), transcribed=transcribed.fingerprint(),
                           districts=sorted(norm(d) for d in cfg.districts), max_duration=cfg.max_duration,
                           seed=cfg.seed, shard_size=cfg.shard_size, version=CACHE_VERSION), sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def select_configs(configs: list[str], lang: str, districts: tuple[str, ...]) -> tuple[list[str], bool]:
    """(configs to read, whether they are the language's own configs)."""
    usable = [c for c in configs if norm(c) not in ("images", "image")]
    own = [c for c in usable if norm(c) == norm(lang)]
    if own:
        return own, True
    wanted = [c for c in usable if any(norm(d) and norm(d) in norm(c) for d in districts)]
    return (wanted or usable), False


def prepare_vaani(cfg, rep: Reporter | None = None, token: str | None = None) -> VaaniCorpus:
    """Decode (or reuse) the Vaani corpus for ``cfg`` and return its rows per split."""
    import fcntl

    from avasr_cli.data.text import script_for_lang
    from avasr_cli.errors import ConfigError

    rep = rep or Reporter()
    audio = VaaniDataset(cfg.dataset, cfg.revision, token)
    transcribed = VaaniDataset(cfg.transcribed_dataset, cfg.revision, token)
    root = avasr_home() / "corpora" / f"vaani-{norm(cfg.lang) or 'x'}-{corpus_key(cfg, audio, transcribed)}"
    layout = _layout(root, cfg, audio, transcribed)  # before creating anything: a refused token leaves no trace
    try:
        script = script_for_lang(cfg.lang)
    except ConfigError:
        script = None
        rep.warn(f"no script known for {cfg.lang!r}: wrong-script rows cannot be detected and are kept")
    start = time.time()
    with open(root / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another process preparing the same corpus: wait for it
        for stray in root.glob("**/.*.tmp"):
            stray.unlink(missing_ok=True)
        rep.log(f"Vaani {cfg.lang}: cache {root}")
        builder = _Builder(cfg, rep, root, audio, transcribed, layout, script is not None)
        splits, card = builder.build()
    card.update(kind="vaani", dir=str(root), key=root.name, datasets=dict(audio=audio.describe(),
                transcribed=transcribed.describe()), configs=layout, script=script or "unknown (check skipped)",
                seconds=round(time.time() - start, 2))
    absolute = {s: [_absolute(root, r) for r in rows] for s, rows in splits.items()}
    return VaaniCorpus(root, absolute, card, reused=builder.decoded == 0)


def _layout(root: Path, cfg, audio: VaaniDataset, transcribed: VaaniDataset) -> dict:
    """Configs (and whether they are per-language) of both datasets; cached so a finished corpus needs no hub."""
    cached = _read_json(root / "layout.json")
    if cached is not None:
        return cached
    t_configs, t_own = select_configs(transcribed.configs(), cfg.lang, cfg.districts)
    a_all = audio.configs()
    a_configs, a_own = select_configs(a_all, cfg.lang, cfg.districts)
    layout = dict(transcribed=dict(configs=t_configs, by_language=t_own,
                                   splits=sorted({s for c in t_configs for s in transcribed.open(c)})),
                  audio=dict(configs=a_configs, by_language=a_own),
                  images=[c for c in a_all if norm(c) in ("images", "image")])
    write_json_atomic(root / "layout.json", layout)  # creates root
    return layout


def _absolute(root: Path, row: dict) -> dict:
    out = dict(audio_filepath=str(root / row["audio"]), duration=row["duration"], text=row["text"])
    if "text_raw" in row:
        out["text_raw"] = row["text_raw"]
    if row.get("image_file"):
        out.update(image_filepath=str(root / row["image_file"]), image_sha256=Path(row["image_file"]).stem)
    out.update(utt_id=row["utt_id"], speaker=row["speaker"], lang=row["lang"], gender=row["gender"],
               district=row["district"], state=row["state"])
    return out


def _carve(speaker: str, seed: int, missing: set[str]) -> str:
    u = int(hashlib.sha256(f"{seed}:{speaker}".encode()).hexdigest()[:8], 16) / 16**8
    edge = 0.0
    for split, fraction in CARVE:
        edge += fraction
        if u < edge:
            return split if split in missing else "train"
    return "train"


class _Builder:
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
        lay, districts = self.layout[part], {norm(d) for d in self.cfg.districts}
        lang = norm(self.cfg.lang)

        def stream() -> Iterator[dict | None]:
            for config in lay["configs"]:
                for split in sorted(ds.open(config)):
                    if official is not None and SPLIT_NAMES.get(norm(split), "train") not in official:
                        continue
                    for row in ds.rows(config, split):
                        if not lay["by_language"] and row.get("language") and norm(row["language"]) != lang:
                            yield None
                            continue
                        if districts and row.get("district") and norm(row["district"]) not in districts:
                            yield None
                            continue
                        blob, name = _blob(row.get("audio"))
                        speaker, keys = speaker_keys(row.get("speakerID"), name)
                        yield dict(utt_id=utt_id_of(name, blob), bytes=blob, speaker=speaker, speaker_keys=keys,
                                   gender=str(row.get("gender") or "unknown").strip().lower(),
                                   district=str(row.get("district") or ""), state=str(row.get("state") or ""),
                                   config=config, split=SPLIT_NAMES.get(norm(split), "train"),
                                   image=os.path.basename(str(row.get("referenceImage") or "").strip()),
                                   text_raw=row.get("transcript"))

        return stream

    def _total(self, ds: VaaniDataset, part: str, official: set[str] | None) -> Callable[[], int | None]:
        """Rows to read (for the progress bar's ETA): parquet metadata locally; on the hub only for a single
        config (opening every district config up front would cost minutes)."""
        configs = self.layout[part] if part == "images" else self.layout[part]["configs"]

        def total() -> int | None:
            if not ds.local and len(configs) > 1:
                return None
            counts = [ds.num_rows(c, s) for c in configs for s in ds.open(c)
                      if official is None or SPLIT_NAMES.get(norm(s), "train") in official]
            return None if None in counts else sum(counts)

        return total

    def _audio_phase(self, name: str, ds, part: str, official, transcribed: bool, enough=None) -> list[dict]:
        def valid(cached: dict[int, dict]) -> dict[int, dict]:  # a shard whose files were deleted is redone
            return {i: s for i, s in cached.items() if all((self.root / r["audio"]).is_file() for r in s["rows"])}

        ph = Phase(name, "audio", self._stream(ds, part, official), dict(self.base, kind="audio", transcribed=transcribed),
                   total=self._total(ds, part, official), valid=valid)
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

        train_seconds = _Running(lambda s: sum(r["duration"] for r in s["rows"] if route(r) == "train"))

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

        align_seconds = _Running(lambda s: sum(r["duration"] for r in s["rows"] if align_reason(r) is None))

        def align_enough(prefix: list[dict]) -> bool:
            return cfg.max_align_hours is not None and align_seconds(prefix) >= cfg.max_align_hours * 3600

        for r in self._audio_phase("align", self.audio, "audio", None, False, align_enough):
            if reason := align_reason(r):
                assembly[reason] += 1
            else:
                rows.setdefault("align", []).append(r)
        rows["align"] = _truncate(self._dedupe(rows.get("align", []), "align_duplicate_utterance"),
                                  cfg.max_align_hours)
        self._attach_images(rows)
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
                    speaker_rule="speakerID column, else <District>_<speaker> from IISc_VaaniProject_* file "
                                 "names, else the file stem without its last _field",
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

    # images -------------------------------------------------------------------------------------------
    def _attach_images(self, rows: dict[str, list[dict]]) -> None:
        needed = {r["image"] for split_rows in rows.values() for r in split_rows if r["image"]}
        mapping = self._images(needed) if needed else {}
        counts = self.drops.setdefault("images", Counter())
        for split, split_rows in rows.items():
            kept = []
            for r in split_rows:
                rel = mapping.get(r["image"]) if r["image"] else None
                if rel:
                    r["image_file"] = rel
                elif split == "align":
                    counts["align_image_missing" if r["image"] not in mapping else "align_image_corrupt"] += 1
                    continue
                kept.append(r)
            rows[split] = kept
        self.stats["images"] = dict(needed=len(needed), found=sum(1 for n in needed if mapping.get(n)),
                                    stored=len({v for v in mapping.values() if v}))

    def _images(self, needed: set[str]) -> dict[str, str | None]:
        configs = self.layout["images"]
        if not configs:
            self.rep.warn(f"{self.audio.ref} has no images config: every alignment pair lacks its image")
            return {}
        claimed: set[str] = set()
        mapping: dict[str, str | None] = {}
        duplicates: Counter = Counter()

        def valid(cached: dict[int, dict]) -> dict[int, dict]:
            # a shard stays usable when every needed name in it was mapped (by it or another shard) and its files
            # exist; a shard finished when fewer names were needed is redone
            mapped = {n for s in cached.values() for n, rel in s["map"].items()
                      if rel is None or (self.root / rel).is_file()}
            usable = {i: s for i, s in cached.items()
                      if all(n in mapped for n in s["names"] if n in needed) and set(s["map"]) <= mapped}
            claimed.update(n for s in usable.values() for n in s["map"])
            return usable

        def stream() -> Iterator[dict | None]:
            for config in configs:
                for split in sorted(self.audio.open(config)):
                    for row in self.audio.rows(config, split):
                        blob, name = _blob(row.get("image"))
                        name = name or os.path.basename(str(row.get("referenceImage") or row.get("path") or ""))
                        yield dict(name=name, bytes=blob)

        def prepare(buf: list[dict], index: int) -> list[dict]:
            out = []
            for r in buf:
                if r["name"] in needed:
                    if r["name"] in claimed:
                        duplicates[r["name"]] += 1
                        out.append(dict(name=r["name"], bytes=None))
                    else:
                        claimed.add(r["name"])
                        out.append(r)
                else:
                    out.append(dict(name=r["name"], bytes=None))
            return out

        found: set[str] = set()
        found_in = _Running(lambda s: found.update(n for n in s["map"] if n in needed) or 0)

        def enough(prefix: list[dict]) -> bool:
            found_in(prefix)
            return len(found) == len(needed)

        ph = Phase("images", "image", stream, dict(kind="image"), valid=valid, prepare=prepare, enough=enough,
                   total=self._total(self.audio, "images", None))
        shards = run_phase(self.root, ph, self.cfg.shard_size, self.workers, self.rep)
        self.decoded += ph.decoded
        for s in shards:
            for k, v in s["map"].items():
                mapping.setdefault(k, v)
        self.stats["duplicate_image_names"] = len(duplicates)
        return mapping


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
