"""The Vaani source as a whole (:func:`prepare_vaani`), read through ``datasets`` from the hub
(streaming) or from a local snapshot directory; its parts are the other modules of this package.

Order of work (nothing is written before step 4, so a refused token or a refused plan leaves no trace)
    1. list both datasets' configs and choose what to read (:func:`select_configs`);
    2. read one row of each dataset (a gated refusal may only show when data is read);
    3. size the job from the files and print the plan; refuse an uncapped large phase or a small disk;
    4. decode ``dev``, ``test``, ``train``, ``align``, then the images the kept alignment rows name.

Rules
    * speaker: one canonical key (see :mod:`~avasr_cli.data.vaani.select`); the leak check also matches
      the file name's own key and the bare column id, so a dataset with the ``speakerID`` column and one
      without still match.
    * utterance id: the audio file stem (the two datasets share file names; that is how a dev/test
      utterance is recognised in the alignment set).
    * splits: the official validation/test splits become dev/test; when a split is missing its speakers are
      carved from train by a seeded hash of the speaker id (10 % test, 5 % dev; unknown speakers stay in
      train). Train rows of dev/test speakers are dropped; alignment rows of dev/test speakers or
      utterances, or that repeat a train utterance, are dropped. Each drop is counted in the data card.
    * audio: decoded with soundfile, clips longer than ``--max-duration`` or empty/silent dropped,
      down-mixed and resampled to 16 kHz (soxr), written as 16-bit FLAC; the duration is measured from the
      decoded audio (older revisions and the transcription part have no ``duration`` column).
    * text: :func:`~avasr_cli.data.text.clean_transcript` (tags go, the words they wrap stay), NFC;
      empty → dropped; wrong script (:func:`~avasr_cli.data.text.is_in_script`) → dropped; the raw
      transcript is kept as ``text_raw``.
    * images: the ``images`` row whose ``image.path`` has the file name of ``referenceImage``; stored once as
      ``images/<sha256>.<ext>``; a pair whose image is unnamed, absent or corrupt is dropped.
    * ``--max-train-hours`` / ``--max-align-hours`` keep the first rows in stream order up to that many hours.

Cache (``$AVASR_HOME/corpora/vaani-<lang>-<key>``, key = language, dataset refs + revisions, or local
file sizes and times, districts, max duration, seed, shard size)::

    layout.json               configs read, splits and sizes found (written once the plan is accepted)
    shards/<phase>/<i>.json   rows of one finished shard (the resume marker, written last, atomically)
    shards/<phase>/end.json   the stream ended after that many shards
    audio/<phase>/<utt_id>.flac, images/<sha256>.<ext>

A rerun skips finished shards, and a finished corpus is reused without touching the hub. The token is
passed to ``datasets``/``huggingface_hub`` only; it is never written anywhere.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path

from avasr_cli.data.vaani.hub import VaaniDataset, parse_ref
from avasr_cli.data.vaani.select import UNKNOWN_SPEAKER, is_images, norm, select_configs, speaker_keys
from avasr_cli.data.vaani.shards import read_json
from avasr_cli.progress import Reporter
from avasr_cli.run import avasr_home, write_json_atomic

__all__ = ["CACHE_VERSION", "DEFAULT_DATASET", "DEFAULT_TRANSCRIBED", "UNKNOWN_SPEAKER", "VaaniCorpus",
           "VaaniDataset", "corpus_key", "parse_ref", "prepare_vaani", "select_configs", "speaker_keys"]

CACHE_VERSION = 2  # 2: words inside tag pairs kept, placeholder speakers, state-qualified speaker keys
DEFAULT_DATASET = "ARTPARK-IISc/Vaani"
DEFAULT_TRANSCRIBED = "ARTPARK-IISc/Vaani-transcription-part"


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


def prepare_vaani(cfg, rep: Reporter | None = None, token: str | None = None) -> VaaniCorpus:
    """Decode (or reuse) the Vaani corpus for ``cfg`` and return its rows per split."""
    import fcntl

    from avasr_cli.data.text import script_for_lang
    from avasr_cli.data.vaani.build import Builder
    from avasr_cli.data.vaani.plan import make_plan
    from avasr_cli.errors import ConfigError

    rep = rep or Reporter()
    audio = VaaniDataset(cfg.dataset, cfg.revision, token)
    transcribed = VaaniDataset(cfg.transcribed_dataset, cfg.revision, token)
    root = avasr_home() / "corpora" / f"vaani-{norm(cfg.lang) or 'x'}-{corpus_key(cfg, audio, transcribed)}"
    layout, fresh = _layout(root, cfg, audio, transcribed)
    plan = make_plan(layout, cfg, root, rep)
    if fresh:
        write_json_atomic(root / "layout.json", layout)  # creates root: the first thing written
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
        builder = Builder(cfg, rep, root, audio, transcribed, layout, script is not None)
        splits, card = builder.build()
    card.update(kind="vaani", dir=str(root), key=root.name, datasets=dict(audio=audio.describe(),
                transcribed=transcribed.describe()), configs=layout, plan=plan,
                script=script or "unknown (check skipped)", seconds=round(time.time() - start, 2))
    absolute = {s: [_absolute(root, r) for r in rows] for s, rows in splits.items()}
    return VaaniCorpus(root, absolute, card, reused=builder.decoded == 0)


def _layout(root: Path, cfg, audio: VaaniDataset, transcribed: VaaniDataset) -> tuple[dict, bool]:
    """(configs read, splits and sizes of both datasets; whether they were just found). Cached in
    ``layout.json`` so that a finished corpus needs no hub; found fresh, both datasets' access is checked."""
    from avasr_cli.data.vaani.plan import image_bytes, measure

    cached = read_json(root / "layout.json")
    if cached is not None:
        return cached, False
    t_sel = select_configs(transcribed.ref, transcribed.configs(), cfg.lang, cfg.districts)
    a_all = audio.configs()
    a_sel = select_configs(audio.ref, a_all, cfg.lang, cfg.districts)
    transcribed.check_access(t_sel.configs[0])
    audio.check_access(a_sel.configs[0])
    images = [c for c in a_all if is_images(c)]
    parts = {"transcribed": (transcribed, t_sel), "audio": (audio, a_sel)}
    layout = {part: dict(configs=sel.configs, by_language=sel.by_language, estimate=sel.estimate)
              for part, (_, sel) in parts.items()}
    layout["transcribed"]["splits"] = sorted({s for c in t_sel.configs for s in transcribed.open(c)})
    layout["images"] = images
    layout["sizes"] = dict({part: measure(ds, sel.estimate) for part, (ds, sel) in parts.items()},
                           image_bytes=image_bytes(audio, images),
                           exact={part: ds.local and sel.by_language and (not cfg.districts or sel.estimate != sel.configs)
                                  for part, (ds, sel) in parts.items()})
    return layout, True


def _absolute(root: Path, row: dict) -> dict:
    out = dict(audio_filepath=str(root / row["audio"]), duration=row["duration"], text=row["text"])
    if "text_raw" in row:
        out["text_raw"] = row["text_raw"]
    if row.get("image_file"):
        out.update(image_filepath=str(root / row["image_file"]), image_sha256=Path(row["image_file"]).stem)
    out.update(utt_id=row["utt_id"], speaker=row["speaker"], lang=row["lang"], gender=row["gender"],
               district=row["district"], state=row["state"])
    return out
