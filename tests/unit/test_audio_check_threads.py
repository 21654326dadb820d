"""check_audio_files reads headers on a thread pool; soundfile's first use must happen in the calling thread.

cffi builds soundfile's C types lazily on first use and, on a GIL build of CPython, cffi 2.x does that
without a lock: CI saw `avasr evaluate` abort (exit 134, "realize_c_type_or_func_lock_held: Assertion
... failed") when the pool's threads all made that first use at once. The race itself cannot be forced
from a test, so this test holds the order that rules it out: the first header read of a check is done in
the calling thread, and only then do the pool's threads read."""

import concurrent.futures as cf
import threading

import numpy as np
import pytest
import soundfile as sf

from avasr_cli.data import manifest as manifest_mod
from avasr_cli.errors import InputError


def _clips(tmp_path, n):
    rows = []
    for i in range(n):
        path = tmp_path / f"c{i}.wav"
        sf.write(path, np.zeros(1600, dtype="float32"), 16000)
        rows.append({"audio_filepath": str(path), "duration": 0.1, "text": "x"})
    return rows


def test_the_first_header_is_read_in_the_calling_thread_before_the_pool_starts(tmp_path, monkeypatch):
    rows = _clips(tmp_path, 24)
    calls: list[tuple[str, bool]] = []
    real_info = sf.info

    def recording_info(path, *args, **kwargs):
        calls.append((str(path), threading.current_thread() is threading.main_thread()))
        return real_info(path, *args, **kwargs)

    monkeypatch.setattr(sf, "info", recording_info)
    manifest_mod.check_audio_files(tmp_path / "m.jsonl", rows)
    calls = [c for c in calls if not c[0].startswith("<_io.BytesIO")]  # soundfile_ready's, in memory
    assert len(calls) == 24 and sorted(p for p, _ in calls) == sorted(r["audio_filepath"] for r in rows)
    assert calls[0] == (rows[0]["audio_filepath"], True), "the first header read must be the caller's own"


def test_a_bad_first_clip_is_reported_before_any_thread_starts(tmp_path, monkeypatch):
    rows = _clips(tmp_path, 3)
    (tmp_path / "c0.wav").write_bytes(b"not audio")
    started = []
    real_init = cf.ThreadPoolExecutor.__init__

    def recording_init(self, *args, **kwargs):
        started.append(1)
        real_init(self, *args, **kwargs)

    monkeypatch.setattr(cf.ThreadPoolExecutor, "__init__", recording_init)
    with pytest.raises(InputError, match=r"m\.jsonl:1: cannot decode audio .*c0\.wav"):
        manifest_mod.check_audio_files(tmp_path / "m.jsonl", rows)
    assert started == []


def test_a_failing_open_is_made_in_the_calling_thread_before_the_pool_starts(tmp_path, monkeypatch):
    """A good first clip builds the types a good header needs, not those of a failing open (its error
    number and message): with one good clip and many bad ones, the pool's threads would still be first to
    fail. Before the pool starts, a soundfile call must have failed in the calling thread (review finding)."""
    rows = _clips(tmp_path, 6)
    for i in range(1, 6):
        (tmp_path / f"c{i}.wav").write_bytes(b"not audio")
    monkeypatch.setattr(manifest_mod, "_soundfile_ready", False)
    events: list[tuple[str, bool, bool]] = []
    real_info = sf.info

    def recording_info(source, *args, **kwargs):
        main = threading.current_thread() is threading.main_thread()
        try:
            out = real_info(source, *args, **kwargs)
        except Exception:
            events.append(("info", main, True))
            raise
        events.append(("info", main, False))
        return out

    real_init = cf.ThreadPoolExecutor.__init__

    def recording_init(self, *args, **kwargs):
        events.append(("pool", True, False))
        real_init(self, *args, **kwargs)

    monkeypatch.setattr(sf, "info", recording_info)
    monkeypatch.setattr(cf.ThreadPoolExecutor, "__init__", recording_init)
    with pytest.raises(InputError, match=r"m\.jsonl:2: cannot decode audio"):
        manifest_mod.check_audio_files(tmp_path / "m.jsonl", rows)
    before_pool = events[: events.index(("pool", True, False))]
    assert ("info", True, True) in before_pool and ("info", True, False) in before_pool
