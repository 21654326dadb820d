"""espeak-ng through ctypes: Kannada and Hindi speech at 16 kHz, offline, in milliseconds."""

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from avasr_cli.data import tts
from avasr_cli.errors import ResourceError

KN = "ಮೂರು ಕೆಂಪು ವೃತ್ತಗಳು ಮತ್ತು ಒಂದು ನೀಲಿ ಚೌಕ"
HI = "तीन लाल गोले और एक नीला वर्ग"


@pytest.mark.parametrize("voice,text", [("kn", KN), ("hi", HI), ("kn+m1", KN), ("hi+f2", HI)])
def test_speech_is_16khz_and_not_silent(voice, text):
    audio = tts.synthesize(text, voice)
    assert audio.dtype == np.float32 and audio.ndim == 1
    seconds = audio.size / tts.SAMPLE_RATE
    assert 0.8 < seconds < 6.0, seconds  # a short sentence at 16 kHz, not 22.05 kHz
    assert np.abs(audio).max() <= 1.0
    assert float(np.sqrt(np.mean(audio**2))) > 0.02


def test_voice_variant_rate_and_pitch_change_the_audio():
    base = tts.synthesize(KN, "kn+m1", rate=175)
    fast = tts.synthesize(KN, "kn+m1", rate=300)
    assert fast.size < 0.8 * base.size
    female = tts.synthesize(KN, "kn+f2", rate=175)
    assert female.size != base.size or not np.array_equal(female, base)
    high = tts.synthesize(KN, "kn+m1", rate=175, pitch=90, pitch_range=80)
    assert not np.array_equal(high[: base.size], base[: high.size])


def test_variants_are_listed_with_gender():
    variants = tts.list_variants()
    assert variants["m1"] == "male" and variants["f2"] == "female"
    assert tts.espeak_version()


@pytest.mark.parametrize("voice", ["kn+nosuchvariant", "xx-nolang"])
def test_missing_voice_is_a_resource_error_with_hint(voice):
    with pytest.raises(ResourceError) as info:
        tts.synthesize("ಒಂದು", voice)
    assert info.value.hint


def test_synthesis_takes_milliseconds():
    tts.synthesize(HI, "hi")  # load the library
    start = time.perf_counter()
    for _ in range(20):
        tts.synthesize(HI, "hi+m3")
    assert (time.perf_counter() - start) / 20 < 0.1


def test_same_calls_in_fresh_processes_give_identical_audio():
    """Breathy variants draw noise from espeak's generator: ``seed`` makes them reproducible."""
    code = ("import hashlib; from avasr_cli.data import tts; h = hashlib.sha256()\n"
            "for v in ('kn+f2', 'hi+f5', 'kn+m1'):\n"
            "    h.update(tts.synthesize('ಎರಡು ಹಳದಿ ನಕ್ಷತ್ರಗಳು', v, seed=7).tobytes())\n"
            "print(h.hexdigest())")
    env = {**os.environ, "PYTHONPATH": str(Path(tts.__file__).resolve().parents[2])}
    runs = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env,
                           timeout=60).stdout for _ in range(3)}
    assert len(runs) == 1
