"""Pictures and speech of the built-in corpus: a 224×224 PNG per scene and a 16 kHz clip per utterance.

Both are functions of the plan item and the corpus seed alone. Speech is synthesised by espeak-ng
(:mod:`avasr_cli.data.tts`), which keeps state between utterances in one process; chunks of utterances
are therefore rendered in fresh interpreters (:mod:`avasr_cli.data.builtin.__main__`), so that the audio
is bit-identical whatever the number of workers.
"""

from __future__ import annotations

import io
import math
from typing import TYPE_CHECKING

from avasr_cli.data.builtin.scenes import BACKGROUNDS, COLOURS_RGB

if TYPE_CHECKING:
    import numpy as np

IMAGE_SIZE = 224
SIZE_SCALE = {None: 1.0, "big": 1.45, "small": 0.6}


# ------------------------------------------------------------------------------------------------ shapes
def _poly(x: float, y: float, pts, turn: float) -> list[tuple[float, float]]:
    return [(x + d * math.cos(a + turn), y + d * math.sin(a + turn)) for d, a in pts]


def _regular(r: float, n: int, start: float = -math.pi / 2) -> list[tuple[float, float]]:
    return [(r, start + k * 2 * math.pi / n) for k in range(n)]


def _xy(x: float, y: float, pts, turn: float) -> list[tuple[float, float]]:
    """Points given as (dx, dy) offsets, turned by ``turn`` about (x, y)."""
    c, s = math.cos(turn), math.sin(turn)
    return [(x + dx * c - dy * s, y + dx * s + dy * c) for dx, dy in pts]


def draw_shape(draw, shape: str, x: float, y: float, r: float, fill, turn: float, background) -> None:
    """One object of ``shape`` centred at (x, y) with radius about ``r``."""
    dark = tuple(max(0, int(v * 0.55)) for v in fill)
    if shape == "circle":
        draw.ellipse((x - r, y - r, x + r, y + r), fill=fill)
    elif shape == "square":
        draw.polygon(_poly(x, y, _regular(r * 1.15, 4, math.pi / 4), turn), fill=fill)
    elif shape == "triangle":
        draw.polygon(_poly(x, y, _regular(r, 3), turn), fill=fill)
    elif shape == "star":
        draw.polygon(_poly(x, y, [(r if k % 2 == 0 else r * 0.45, -math.pi / 2 + k * math.pi / 5) for k in range(10)],
                           turn), fill=fill)
    elif shape == "hexagon":
        draw.polygon(_poly(x, y, _regular(r, 6, 0.0), turn), fill=fill)
    elif shape == "diamond":
        draw.polygon(_xy(x, y, [(0, -r), (r * 0.62, 0), (0, r), (-r * 0.62, 0)], turn), fill=fill)
    elif shape == "rectangle":
        draw.polygon(_xy(x, y, [(-r, -r * 0.5), (r, -r * 0.5), (r, r * 0.5), (-r, r * 0.5)], turn), fill=fill)
    elif shape == "heart":
        pts = [(16 * math.sin(t) ** 3, -(13 * math.cos(t) - 5 * math.cos(2 * t) - 2 * math.cos(3 * t) - math.cos(4 * t)))
               for t in (k * 2 * math.pi / 40 for k in range(40))]
        draw.polygon(_xy(x, y, [(px * r / 16, py * r / 16) for px, py in pts], turn), fill=fill)
    elif shape == "moon":  # a crescent: a disc with a disc of background cut out of it
        draw.ellipse((x - r, y - r, x + r, y + r), fill=fill)
        ox, oy = _xy(0, 0, [(r * 0.45, -r * 0.2)], turn)[0]
        draw.ellipse((x + ox - r * 0.85, y + oy - r * 0.85, x + ox + r * 0.85, y + oy + r * 0.85), fill=background)
    elif shape == "cross":
        w = r * 0.33
        draw.polygon(_xy(x, y, [(-w, -r), (w, -r), (w, -w), (r, -w), (r, w), (w, w), (w, r), (-w, r), (-w, w),
                                (-r, w), (-r, -w), (-w, -w)], turn), fill=fill)
    elif shape == "arrow":
        w = r * 0.22
        draw.polygon(_xy(x, y, [(-r, -w), (r * 0.2, -w), (r * 0.2, -r * 0.55), (r, 0), (r * 0.2, r * 0.55),
                                (r * 0.2, w), (-r, w)], turn), fill=fill)
    elif shape == "ring":
        draw.ellipse((x - r, y - r, x + r, y + r), fill=fill)
        draw.ellipse((x - r * 0.55, y - r * 0.55, x + r * 0.55, y + r * 0.55), fill=background)
    elif shape == "flower":
        for k in range(6):
            a = turn + k * math.pi / 3
            px, py = x + 0.55 * r * math.cos(a), y + 0.55 * r * math.sin(a)
            draw.ellipse((px - r * 0.42, py - r * 0.42, px + r * 0.42, py + r * 0.42), fill=fill)
        draw.ellipse((x - r * 0.3, y - r * 0.3, x + r * 0.3, y + r * 0.3), fill=(250, 220, 60) if fill[0] < 200 or
                     fill[1] < 150 else dark)
    elif shape == "leaf":
        pts = [(r * math.cos(t), 0.45 * r * math.sin(t) * abs(math.cos(t / 2)) * 1.6)
               for t in (k * 2 * math.pi / 30 for k in range(30))]
        draw.polygon(_xy(x, y, pts, turn - math.pi / 5), fill=fill)
        draw.line(_xy(x, y, [(-r, 0), (r, 0)], turn - math.pi / 5), fill=dark, width=max(1, int(r / 10)))
    elif shape == "house":
        draw.polygon([(x - r * 0.75, y - r * 0.05), (x + r * 0.75, y - r * 0.05), (x + r * 0.75, y + r * 0.85),
                      (x - r * 0.75, y + r * 0.85)], fill=fill)
        draw.polygon([(x - r, y), (x, y - r * 0.9), (x + r, y)], fill=dark)
        draw.rectangle((x - r * 0.18, y + r * 0.35, x + r * 0.18, y + r * 0.85), fill=background)
    elif shape == "tree":
        draw.rectangle((x - r * 0.15, y + r * 0.2, x + r * 0.15, y + r), fill=(110, 70, 35))
        draw.polygon([(x - r * 0.8, y + r * 0.35), (x, y - r), (x + r * 0.8, y + r * 0.35)], fill=fill)
    elif shape == "fish":
        draw.ellipse((x - r * 0.75, y - r * 0.42, x + r * 0.55, y + r * 0.42), fill=fill)
        draw.polygon([(x + r * 0.45, y), (x + r, y - r * 0.45), (x + r, y + r * 0.45)], fill=fill)
        draw.ellipse((x - r * 0.5, y - r * 0.14, x - r * 0.3, y + r * 0.06), fill=dark)
    elif shape == "boat":
        draw.polygon([(x - r, y + r * 0.25), (x + r, y + r * 0.25), (x + r * 0.6, y + r * 0.7), (x - r * 0.6, y + r * 0.7)],
                     fill=fill)
        draw.line([(x, y + r * 0.25), (x, y - r)], fill=dark, width=max(1, int(r / 12)))
        draw.polygon([(x + r * 0.06, y - r * 0.95), (x + r * 0.7, y + r * 0.1), (x + r * 0.06, y + r * 0.1)], fill=dark)
    else:
        raise ValueError(f"unknown shape {shape!r}")


def _regions(layout: str, n_groups: int, size: int) -> list[tuple[float, float, float, float]]:
    """The box (x0, y0, x1, y1) each group's objects are placed in."""
    full, half = (0.0, 0.0, float(size), float(size)), size / 2
    if layout == "middle":
        return [(size * 0.2, size * 0.2, size * 0.8, size * 0.8)]
    if layout == "left-right":
        return [(0.0, 0.0, half, float(size)), (half, 0.0, float(size), float(size))]
    if layout == "top-bottom":
        return [(0.0, 0.0, float(size), half), (0.0, half, float(size), float(size))]
    return [full] * n_groups


# ------------------------------------------------------------------------------------------------ render
def render_scene(scene: dict, seed: int) -> bytes:
    """A 224×224 PNG of the scene's objects at random, non-overlapping places in their region (drawn at 2×,
    then reduced) on a vertical gradient of the background colour."""
    import numpy as np
    from PIL import Image, ImageDraw

    rng = np.random.default_rng([seed, 4, scene["index"]])
    size = 2 * IMAGE_SIZE
    base = np.array(BACKGROUNDS[scene["bg"]][1], dtype=np.float32)
    top, bottom = base * rng.uniform(0.9, 1.1), base * rng.uniform(0.9, 1.1)
    ramp = np.linspace(0.0, 1.0, size, dtype=np.float32)[:, None, None]
    grad = np.broadcast_to(top + (bottom - top) * ramp, (size, size, 3))
    img = Image.fromarray(np.clip(grad, 0, 255).astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(img)
    groups = scene["groups"]
    regions = _regions(scene.get("layout", "free"), len(groups), size)
    total = sum(g[0] for g in groups)
    lo, hi = (44, 70) if total <= 2 else (32, 54) if total <= 4 else (24, 42)
    objects = [(gi, g) for gi, g in enumerate(groups) for _ in range(g[0])]
    objects = [objects[i] for i in rng.permutation(len(objects))]
    placed: list[tuple[float, float, float]] = []
    for gi, (count, size_word, colour, shape) in objects:
        x0, y0, x1, y1 = regions[gi]
        r = float(rng.uniform(lo, hi)) * SIZE_SCALE[size_word]
        r = min(r, (min(x1 - x0, y1 - y0) - 16) / 2)
        for attempt in range(400):
            if attempt and attempt % 100 == 0:
                r *= 0.85
            x, y = rng.uniform(x0 + r + 6, x1 - r - 6), rng.uniform(y0 + r + 6, y1 - r - 6)
            if all(math.hypot(x - px, y - py) > r + pr + 8 for px, py, pr in placed):
                break
        placed.append((x, y, r))
        fill = tuple(int(v) for v in np.clip(np.array(COLOURS_RGB[colour]) + rng.integers(-12, 13, size=3), 0, 255))
        turn = math.radians(rng.uniform(-18, 18))
        background = tuple(int(v) for v in np.clip(top + (bottom - top) * (y / size), 0, 255))
        draw_shape(draw, shape, x, y, r, fill, turn, background)
    buf = io.BytesIO()
    img.reduce(2).save(buf, format="PNG")
    return buf.getvalue()


def render_audio(item: dict) -> "np.ndarray":
    """Speak the item's text with its speaker, then jitter rate/pitch, add silences and coloured noise."""
    import numpy as np

    from avasr_cli.data import tts

    spk, rng = item["speaker"], np.random.default_rng([item["seed"], 3, item["index"]])
    rate = int(round(spk["rate"] * rng.uniform(0.9, 1.1)))
    pitch = int(np.clip(spk["pitch"] + rng.integers(-4, 5), 0, 100))
    speech = tts.synthesize(item["text"], spk["voice"], rate=rate, pitch=pitch, pitch_range=spk["range"],
                            seed=int(rng.integers(2**31)))
    speech *= rng.uniform(0.3, 0.9) / max(float(np.abs(speech).max()), 1e-6)
    sr = tts.SAMPLE_RATE
    lead, trail = (int(rng.uniform(0.05, 0.2) * sr) for _ in range(2))
    audio = np.concatenate([np.zeros(lead, np.float32), speech, np.zeros(trail, np.float32)])
    n_fft = 1 << (audio.size - 1).bit_length()  # a power of two: odd lengths make the FFT 20x slower
    spec = np.fft.rfft(rng.standard_normal(n_fft))
    spec /= np.maximum(np.arange(spec.size), 1.0) ** (rng.uniform(0.0, 1.5) / 2)  # white .. reddish noise
    noise = np.fft.irfft(spec, n_fft)[: audio.size]
    snr_db = rng.uniform(10.0, 30.0)
    noise *= math.sqrt(float(np.mean(speech**2)) / 10 ** (snr_db / 10) / max(float(np.mean(noise**2)), 1e-12))
    return np.clip(audio + noise, -1.0, 1.0).astype(np.float32)


def wav_bytes(audio: "np.ndarray") -> bytes:
    import soundfile as sf

    buf = io.BytesIO()
    sf.write(buf, audio, 16000, subtype="PCM_16", format="WAV")
    return buf.getvalue()
