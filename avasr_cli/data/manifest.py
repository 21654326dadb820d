"""NeMo JSON-lines manifests, read with line-by-line validation.

One JSON object per line. Fields avasr writes and reads:

=================  =========================================================================
audio_filepath     absolute path of a 16 kHz mono WAV/FLAC file (required)
duration           seconds (required)
text               transcript cleaned for ASR ("" on the untranscribed alignment set)
text_raw           transcript as the source gave it (audit only)
image_filepath     path of the prompting image (alignment set; also kept on transcribed splits)
image_sha256       content hash of that image (the feature store key)
utt_id             unique utterance id
speaker            speaker (or synthetic voice) id
lang               language name, e.g. ``kannada``
gender, district   optional metadata for breakdowns
=================  =========================================================================

Files are named ``<split>.jsonl`` (NeMo rejects a manifest named ``manifest.json``).
Bring-your-own manifests may name the image ``image_filepath``, ``image_path``, ``image`` or
``referenceImage``; :func:`image_field` finds it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator

from avasr_cli.errors import InputError, not_a_file

IMAGE_FIELDS = ("image_filepath", "image_path", "image", "referenceImage")
SPLITS = ("align", "train", "dev", "test")


class Rows:
    """A split's rows as a stream that can be read again: each ``iter()`` calls ``make`` for a fresh pass
    (over a file, a corpus, shards), so a prepare of a million clips never holds them all. A list is
    the other kind of split a source may hand over."""

    def __init__(self, make: Callable[[], Iterator[dict]]):
        self._make = make

    def __iter__(self) -> Iterator[dict]:
        return iter(self._make())


@dataclass
class SourceData:
    """What a source hands the stage: manifest rows per split (absolute paths) and facts for the data card.
    A split is a list or a :class:`Rows` stream, read again on each pass: the
    stage reads each split a few times (checks, shard packing, manifest) and never holds it."""

    splits: dict[str, Iterable[dict]]
    corpus_dir: Path
    reused_cache: bool
    card: dict


def image_field(row: dict) -> str | None:
    for key in IMAGE_FIELDS:
        if row.get(key):
            return key
    return None


def read_manifest(path: Path | str, *, require: Iterable[str] = ("audio_filepath", "duration")) -> list[dict]:
    """Read a manifest; any malformed line raises :class:`InputError` naming the file and line."""
    path = Path(path)
    if why := not_a_file(path):
        raise InputError(f"manifest {path} {why}", "run `avasr prepare` first, or check the path")
    rows: list[dict] = []
    with open(path, "rb") as fh:
        for lineno, raw in enumerate(fh, start=1):
            try:
                line = raw.decode("utf-8-sig" if lineno == 1 else "utf-8")  # a BOM, as Windows editors write
            except UnicodeDecodeError as exc:
                why = "a character cut short" if "end of data" in exc.reason else exc.reason
                raise InputError(f"{path}:{lineno}: line is not UTF-8 ({why} at byte {exc.start})",
                                 "re-encode the manifest as UTF-8, or rerun `avasr prepare --force` if avasr wrote it") from exc
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise InputError(f"{path}:{lineno}: not valid JSON ({exc.msg})",
                                 "each line must be one JSON object, NeMo manifest style") from exc
            if not isinstance(row, dict):
                raise InputError(f"{path}:{lineno}: expected a JSON object, got {type(row).__name__}",
                                 "each line must be one JSON object, NeMo manifest style")
            missing = [k for k in require if k not in row]
            if missing:
                raise InputError(f"{path}:{lineno}: missing field(s) {', '.join(missing)}",
                                 "NeMo manifests need audio_filepath and duration (and text for transcribed splits)")
            if "duration" in row and not isinstance(row["duration"], (int, float)):
                raise InputError(f"{path}:{lineno}: duration must be a number, got {row['duration']!r}",
                                 "write durations in seconds as numbers")
            wrong = [k for k in ("audio_filepath", "text") if k in row and not isinstance(row[k], str)]
            if wrong:
                raise InputError(f"{path}:{lineno}: {wrong[0]} must be a string, got {row[wrong[0]]!r}",
                                 "write paths and transcripts as JSON strings (in double quotes)")
            rows.append(row)
    return rows


def total_hours(rows: Iterable[dict]) -> float:
    return sum(float(r.get("duration", 0.0)) for r in rows) / 3600.0


def _float(value) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def check_audio_files(path: Path | str, rows: list[dict], sample_rate: int = 16_000) -> None:
    """Before training or transcribing: every row's audio exists, decodes (header), is ``sample_rate`` Hz
    mono and as long as the manifest's ``duration`` says (the manifest is the corpus's index: a file cut
    short by a failed copy is found here, not in the middle of an epoch).

    Reads only file headers (soundfile), so it is cheap next to the training it protects; an error names
    the manifest line and the audio file. (A FLAC cut short keeps a header that gives its full length: it
    fails when it is decoded, with an error naming it.) Rows that point into audio shards are checked
    against their shard index instead (:func:`avasr_cli.data.shards.check_shards`)."""
    from concurrent.futures import ThreadPoolExecutor

    from avasr_cli.data.shards import check_shards, is_sharded
    from avasr_cli.run import is_secondary_rank

    if is_secondary_rank():  # rank 0 checks before it starts the others (the same files, once)
        return
    check_shards(path, rows)
    files = [(lineno, row) for lineno, row in enumerate(rows, start=1) if not is_sharded(row)]
    # soundfile is first used here, in the calling thread, before any other: cffi builds soundfile's C types
    # on their first use, and cffi 2.x on a GIL build does that without a lock, so two threads doing it at
    # once can abort the whole process ("realize_c_type_or_func_lock_held: Assertion ... failed", exit 134,
    # seen in CI in `avasr evaluate`). Once built, the types are shared read-only and the threads are safe.
    # The first header read takes the path a good file takes; soundfile_ready() also takes a bad file's.
    soundfile_ready()
    if files and (problem := _audio_problem(path, *files[0], sample_rate)) is not None:
        raise problem
    with ThreadPoolExecutor(max_workers=16) as pool:  # headers only, but a shared file system is slow per file
        for start in range(1, len(files), 4096):  # the first bad line is reported, as in a sequential pass
            for problem in pool.map(lambda item: _audio_problem(path, *item, sample_rate), files[start : start + 4096]):
                if problem is not None:
                    raise problem


_soundfile_ready = False


def soundfile_ready() -> None:
    """Use soundfile once in this thread on the paths a header check takes, a good header and one that
    fails to open (its error number and message), so that threads started afterwards find cffi's types
    built (see :func:`check_audio_files`). Once per process; in memory, no file."""
    global _soundfile_ready
    if _soundfile_ready:
        return
    import io

    import numpy as np
    import soundfile as sf

    good = io.BytesIO()
    sf.write(good, np.zeros(16, dtype="float32"), 16000, format="WAV", subtype="PCM_16")
    good.seek(0)
    sf.info(good)
    try:
        sf.info(io.BytesIO(b"not audio"))
    except Exception as exc:  # soundfile.LibsndfileError: its message is built from the C error string
        str(exc)
    _soundfile_ready = True


def _audio_problem(path, lineno: int, row: dict, sample_rate: int) -> InputError | None:
    import soundfile as sf

    audio = Path(str(row["audio_filepath"])).expanduser()
    if not audio.is_absolute():
        audio = Path(path).parent / audio
    where = f"{path}:{lineno}"
    if why := not_a_file(audio):
        return InputError(f"{where}: audio file {audio} {why}",
                          "restore the file, or rerun `avasr prepare --force` to rebuild the manifests")
    try:
        info = sf.info(str(audio))
    except Exception as exc:  # LibsndfileError, RuntimeError ...
        return InputError(f"{where}: cannot decode audio {audio} ({exc})",
                          "replace the file, or rerun `avasr prepare --force` (it drops unreadable audio)")
    if info.frames == 0:
        return InputError(f"{where}: audio {audio} is empty (0 samples)",
                          "remove that line, or rerun `avasr prepare --force` (it drops empty audio)")
    seconds, recorded = info.frames / info.samplerate, _float(row.get("duration"))
    if recorded is not None and abs(seconds - recorded) > max(0.05, 0.02 * recorded):
        return InputError(f"{where}: audio {audio} holds {seconds:.2f} s but the manifest says {recorded:.2f} s "
                          "(cut short, or replaced by another file)",
                          "restore the file, or rerun `avasr prepare --force` to rebuild it and the manifests")
    if info.samplerate != sample_rate or info.channels != 1:
        return InputError(f"{where}: audio {audio} is {info.samplerate} Hz with {info.channels} channel(s); "
                          f"training needs {sample_rate // 1000} kHz mono",
                          "rerun `avasr prepare --force` (it converts audio to 16 kHz mono) instead of editing "
                          "the run's manifests by hand")
    return None
