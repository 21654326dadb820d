"""Offline speech synthesis with espeak-ng (the ``espeakng-loader`` wheel ships the library and its data).

The library is driven through ctypes in synchronous mode: a callback collects int16 samples at espeak's
native 22,050 Hz, which are resampled to 16 kHz float32 mono. One utterance takes a few milliseconds.

espeak-ng is process-global and keeps state between utterances (function-level statics such as the
pitch-flutter index), so the exact samples of an utterance depend on what the process synthesised
before; its noise generator (breathy voices) is seeded per call from ``seed``. The output is therefore
reproducible for the same sequence of calls in a fresh process; callers that need bit-exact audio (the
built-in corpus) synthesise fixed batches in fresh processes.

Voices are ``<lang>`` or ``<lang>+<variant>`` (e.g. ``kn+m1``, ``hi+f2``); :func:`list_variants` lists the
variants in the shipped ``espeak-ng-data/voices/!v``.
"""

from __future__ import annotations

import ctypes
import functools
import os
import threading
from pathlib import Path
from typing import TYPE_CHECKING

from avasr_cli.errors import ResourceError

if TYPE_CHECKING:
    import numpy as np

SAMPLE_RATE = 16000

_AUDIO_OUTPUT_SYNCHRONOUS = 2
_POS_CHARACTER = 1
_CHARS_UTF8 = 1
_PARAM = {"rate": 1, "volume": 2, "pitch": 3, "range": 4}
_EE_NOT_FOUND = 2
_INSTALL_HINT = "install it with `pip install espeakng-loader` (it ships libespeak-ng and its voice data)"

_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)


class _Engine:
    """The loaded library (one per process), its native rate and the buffer its callback fills."""

    def __init__(self) -> None:
        try:
            import espeakng_loader
        except ImportError as exc:
            raise ResourceError("the espeak-ng speech synthesiser is not installed", _INSTALL_HINT) from exc
        lib_path, self.data_path = espeakng_loader.get_library_path(), espeakng_loader.get_data_path()
        try:
            lib = ctypes.CDLL(lib_path)
        except OSError as exc:
            raise ResourceError(f"cannot load the espeak-ng library {lib_path} ({exc})", _INSTALL_HINT) from exc
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        lib.espeak_SetSynthCallback.argtypes = [_CALLBACK]
        lib.espeak_SetSynthCallback.restype = None
        lib.espeak_Synth.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int, ctypes.c_uint,
                                     ctypes.c_uint, ctypes.POINTER(ctypes.c_uint), ctypes.c_void_p]
        self.set_seed = getattr(lib, "espeak_ng_SetRandSeed", None)  # espeak-ng >= 1.51
        if self.set_seed is not None:
            self.set_seed.argtypes, self.set_seed.restype = [ctypes.c_long], None
        lib.espeak_Info.argtypes = [ctypes.POINTER(ctypes.c_char_p)]
        lib.espeak_Info.restype = ctypes.c_char_p
        rate = lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, self.data_path.encode(), 0)
        if rate <= 0:
            raise ResourceError(f"espeak-ng failed to initialise with data at {self.data_path}", _INSTALL_HINT)
        self.lib, self.native_rate, self.chunks = lib, rate, []
        self._callback = _CALLBACK(self._collect)  # keep a reference: the library holds the pointer
        lib.espeak_SetSynthCallback(self._callback)
        self.version = lib.espeak_Info(None).decode()

    def _collect(self, wav, n, events) -> int:
        if n > 0:
            self.chunks.append(ctypes.string_at(wav, n * 2))
        return 0  # 0 = continue


_lock = threading.Lock()
_engine: _Engine | None = None
_engine_pid: int | None = None


def _get_engine() -> _Engine:
    global _engine, _engine_pid
    if _engine is None or _engine_pid != os.getpid():
        _engine, _engine_pid = _Engine(), os.getpid()
    return _engine


def espeak_version() -> str:
    with _lock:
        return _get_engine().version


def data_path() -> Path:
    with _lock:
        return Path(_get_engine().data_path)


@functools.lru_cache(maxsize=None)
def list_variants() -> dict[str, str]:
    """Voice variants shipped with espeak-ng: name -> gender (``male``, ``female`` or ``unknown``)."""
    variants: dict[str, str] = {}
    for path in sorted((data_path() / "voices" / "!v").iterdir()):
        gender = "unknown"
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            words = line.split()
            if len(words) >= 2 and words[0] == "gender" and words[1].lower() in ("male", "female"):
                gender = words[1].lower()
                break
        variants[path.name] = gender
    return variants


def _check_voice(voice: str) -> None:
    lang, _, variant = voice.partition("+")
    if variant and variant not in list_variants():
        raise ResourceError(f"espeak-ng has no voice variant '{variant}' (asked for voice '{voice}')",
                            "pick one of the variants in espeak-ng-data/voices/!v, e.g. m1..m8 or f1..f5")
    if not lang:
        raise ResourceError(f"voice '{voice}' names no language", "use a voice such as 'kn', 'hi' or 'kn+m1'")


def synthesize(text: str, voice: str = "kn", *, rate: int = 175, pitch: int = 50, pitch_range: int = 50,
               seed: int = 0, sample_rate: int = SAMPLE_RATE) -> "np.ndarray":
    """Speak ``text`` (UTF-8, any script espeak-ng knows) and return float32 mono audio at ``sample_rate``.

    ``rate`` is in words per minute (80-450), ``pitch`` and ``pitch_range`` are 0-100 (espeak's scale).
    ``seed`` seeds espeak's noise generator (breathy variants such as f2 are otherwise random per process).
    """
    import numpy as np

    _check_voice(voice)
    data = text.encode("utf-8") + b"\0"
    with _lock:
        eng = _get_engine()
        if eng.lib.espeak_SetVoiceByName(voice.encode()) != 0:
            raise ResourceError(f"espeak-ng has no voice '{voice}'",
                                "use a language espeak-ng ships, e.g. 'kn' (Kannada) or 'hi' (Hindi)")
        for name, value in (("rate", rate), ("pitch", pitch), ("range", pitch_range)):
            eng.lib.espeak_SetParameter(_PARAM[name], int(value), 0)
        if eng.set_seed is not None:
            eng.set_seed(int(seed) & 0x7FFFFFFF)
        eng.chunks = []
        status = eng.lib.espeak_Synth(data, len(data), 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None)
        raw, eng.chunks = b"".join(eng.chunks), []
        native = eng.native_rate
    if status != 0:
        raise ResourceError(f"espeak-ng failed to synthesise with voice '{voice}' (status {status})",
                            "check that the text is UTF-8 and the voice exists")
    audio = np.frombuffer(raw, dtype=np.int16).astype(np.float32) / 32768.0
    return resample(audio, native, sample_rate)


def resample(audio: "np.ndarray", orig_sr: int, target_sr: int) -> "np.ndarray":
    import numpy as np

    if orig_sr == target_sr or audio.size == 0:
        return audio.astype(np.float32, copy=False)
    try:
        import soxr

        return soxr.resample(audio, orig_sr, target_sr, quality="HQ").astype(np.float32, copy=False)
    except ImportError:
        from math import gcd

        from scipy.signal import resample_poly

        g = gcd(orig_sr, target_sr)
        return resample_poly(audio, target_sr // g, orig_sr // g).astype(np.float32)
