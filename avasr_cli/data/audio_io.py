"""Audio and image decoding without torchcodec/FFmpeg, atomic writes, and a bounded process pool.

* :func:`decode_audio` reads bytes or a path with soundfile (WAV, FLAC, OGG, MP3 … whatever libsndfile
  reads) and returns float32 samples ``(frames, channels)``; anything it cannot read raises
  :class:`CorruptMedia`.
* :func:`to_16k_mono` averages the channels and resamples with soxr to 16 kHz.
* :func:`write_audio` writes 16-bit FLAC (or WAV) under a temporary name, then renames it.
* :func:`decode_image` opens *and fully decodes* an image with Pillow: a file that opens but fails to
  decode is corrupt.
* :func:`ordered_map` runs a module-level function over tasks in worker processes (``forkserver`` or
  ``spawn``, never ``fork``), at most ``2 × workers`` tasks in flight, results handed back in order.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable, Iterator

if TYPE_CHECKING:
    import numpy as np

SAMPLE_RATE = 16_000
MIN_SECONDS = 0.1  # shorter clips count as empty
SILENCE_PEAK = 1e-4  # peak amplitude below this (-80 dBFS) counts as silent


class CorruptMedia(Exception):
    """Audio or image bytes that cannot be decoded."""


def decode_audio(source: bytes | str | Path) -> tuple["np.ndarray", int]:
    """Samples as float32 ``(frames, channels)`` and the sample rate."""
    import soundfile as sf

    try:
        data, sr = sf.read(io.BytesIO(source) if isinstance(source, (bytes, bytearray)) else str(source),
                           dtype="float32", always_2d=True)
    except Exception as exc:  # soundfile raises LibsndfileError, RuntimeError, TypeError, EOFError …
        raise CorruptMedia(f"{type(exc).__name__}: {exc}") from None
    return data, int(sr)


def to_16k_mono(data: "np.ndarray", sr: int) -> "np.ndarray":
    import numpy as np

    mono = data.mean(axis=1, dtype=np.float32) if data.ndim == 2 else data.astype(np.float32)
    if sr != SAMPLE_RATE:
        import soxr

        mono = soxr.resample(mono, sr, SAMPLE_RATE, quality="HQ")
    return np.ascontiguousarray(mono, dtype=np.float32)


def is_empty_or_silent(mono: "np.ndarray", sr: int = SAMPLE_RATE) -> bool:
    import numpy as np

    return mono.size < MIN_SECONDS * sr or float(np.max(np.abs(mono))) < SILENCE_PEAK


def needs_conversion(path: str | Path) -> bool:
    """False when ``path`` is already a 16 kHz mono WAV or FLAC file (it can be used in place)."""
    import soundfile as sf

    try:
        info = sf.info(str(path))
    except Exception as exc:
        raise CorruptMedia(f"{type(exc).__name__}: {exc}") from None
    return not (info.samplerate == SAMPLE_RATE and info.channels == 1 and info.format in ("WAV", "FLAC"))


def audio_seconds(path: str | Path) -> float:
    import soundfile as sf

    info = sf.info(str(path))
    return info.frames / info.samplerate


def write_audio(dest: Path, mono: "np.ndarray", fmt: str = "FLAC") -> None:
    """Write 16 kHz mono 16-bit audio atomically (temporary name, then rename)."""
    import numpy as np
    import soundfile as sf

    buf = io.BytesIO()
    sf.write(buf, np.clip(mono, -1.0, 1.0), SAMPLE_RATE, subtype="PCM_16", format=fmt)
    write_file(dest, buf.getvalue())


def write_file(dest: Path, data: bytes) -> None:
    """Temporary name, then rename: a killed worker never leaves a half-written file behind. No fsync per
    file: callers flush once per shard (``os.sync``) before writing the shard's marker."""
    from avasr_cli.errors import ResourceError

    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.tmp")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, dest)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        if exc.errno == 28:  # ENOSPC
            raise ResourceError(f"disk full while writing {dest}",
                                "free some space or point AVASR_HOME at a larger disk") from exc
        raise


def os_sync() -> None:
    """Flush written files once per shard, before the shard's marker is written."""
    if hasattr(os, "sync"):
        os.sync()


def decode_image(data: bytes) -> str:
    """Fully decode an image; return its format's file extension (``jpg``, ``png`` …)."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as img:
            fmt = (img.format or "png").lower()
            img.load()
            if img.width < 1 or img.height < 1:
                raise ValueError("empty image")
    except Exception as exc:  # PIL raises UnidentifiedImageError, OSError (truncated), SyntaxError …
        raise CorruptMedia(f"{type(exc).__name__}: {exc}") from None
    return {"jpeg": "jpg", "mpo": "jpg"}.get(fmt, fmt)


# ------------------------------------------------------------------------------------------------ pool
def ordered_map(fn: Callable, tasks: Iterable, workers: int) -> Iterator:
    """``map(fn, tasks)`` over ``workers`` processes with at most ``2 * workers`` tasks in flight (bounded
    memory), yielding results in task order. ``workers <= 1`` runs in this process. ``fn`` must be a
    module-level function (it is pickled by name)."""
    if workers <= 1:
        for task in tasks:
            yield fn(task)
        return
    import multiprocessing as mp
    from collections import deque
    from concurrent.futures import ProcessPoolExecutor

    method = "forkserver" if "forkserver" in mp.get_all_start_methods() else "spawn"
    pending: deque = deque()
    with ProcessPoolExecutor(workers, mp_context=mp.get_context(method)) as pool:
        try:
            for task in tasks:
                pending.append(pool.submit(fn, task))
                while len(pending) >= 2 * workers:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:
            for future in pending:
                future.cancel()
