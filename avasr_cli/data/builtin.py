"""The built-in corpus: procedural pictures of coloured shapes and synthetic speech describing them.

Everything is a function of :class:`CorpusConfig` (language, seed, split sizes, corpus version) and the
espeak-ng version. A corpus is generated once into ``$AVASR_HOME/corpora/builtin-<lang>-<key>`` and shared
by every run directory asking for the same config:

    audio/<utt_id>.wav        16 kHz mono 16-bit PCM
    images/<sha256>.png       224x224 RGB, named by content (scenes repeat in the align set)
    chunks/<i>.jsonl          rows of a finished chunk (resume points)
    corpus.jsonl              every row (relative paths), then
    complete.json             written last: the corpus is usable only when this exists

Speakers are (espeak voice variant, rate, pitch, pitch range). Dev and test use their own voice variants,
never heard in train or align. Synthesis runs in fresh interpreters (``python -m avasr_cli.data.builtin``),
one per fixed chunk of utterances, because espeak-ng carries state from one utterance to the next (see
:mod:`tts`): that makes the audio bit-identical whatever the number of workers or what the calling process
did before.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import math
import os
import time
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from avasr_cli.data.audio_io import write_file
from avasr_cli.progress import Reporter
from avasr_cli.run import avasr_home, write_json_atomic, write_jsonl_atomic

if TYPE_CHECKING:
    import numpy as np

CORPUS_VERSION = 2  # 2: a reserved share of scenes and fresh speakers for the pretraining pool
CHUNK = 100  # utterances per worker process (fixed: the audio must not depend on the number of workers)
IMAGE_SIZE = 224
SPLITS = ("align", "train", "dev", "test")
# One scene type (the groups a sentence describes) in RESERVED_EVERY belongs to the pretraining pool only:
# pool sentences never occur in align, train, dev or test of any built-in corpus, and vice versa.
RESERVED_EVERY = 5


@dataclass(frozen=True)
class Language:
    name: str
    code: str  # espeak-ng voice
    numbers: tuple[str, ...]  # 1..4
    colours: dict[str, tuple[str, str]]  # colour -> (with one object, with several)
    shapes: dict[str, tuple[str, str]]  # shape -> (singular, plural)
    conj: str
    frame: tuple[str, str]  # "in the picture there is/are {}": singular, plural


LANGUAGES: dict[str, Language] = {
    "kannada": Language(
        "kannada", "kn", ("ಒಂದು", "ಎರಡು", "ಮೂರು", "ನಾಲ್ಕು"),
        {c: (w, w) for c, w in dict(red="ಕೆಂಪು", blue="ನೀಲಿ", green="ಹಸಿರು", yellow="ಹಳದಿ", black="ಕಪ್ಪು",
                                     white="ಬಿಳಿ").items()},
        dict(circle=("ವೃತ್ತ", "ವೃತ್ತಗಳು"), square=("ಚೌಕ", "ಚೌಕಗಳು"), triangle=("ತ್ರಿಕೋನ", "ತ್ರಿಕೋನಗಳು"),
             star=("ನಕ್ಷತ್ರ", "ನಕ್ಷತ್ರಗಳು")),
        "ಮತ್ತು", ("ಚಿತ್ರದಲ್ಲಿ {} ಇದೆ", "ಚಿತ್ರದಲ್ಲಿ {} ಇವೆ")),
    "hindi": Language(
        "hindi", "hi", ("एक", "दो", "तीन", "चार"),
        dict(red=("लाल", "लाल"), blue=("नीला", "नीले"), green=("हरा", "हरे"), yellow=("पीला", "पीले"),
             black=("काला", "काले"), white=("सफ़ेद", "सफ़ेद")),
        dict(circle=("गोला", "गोले"), square=("वर्ग", "वर्ग"), triangle=("त्रिकोण", "त्रिकोण"), star=("तारा", "तारे")),
        "और", ("चित्र में {} है", "चित्र में {} हैं")),
}
ALIASES = {lang.code: name for name, lang in LANGUAGES.items()}

RGB = dict(red=(215, 35, 35), blue=(35, 75, 215), green=(35, 155, 55), yellow=(240, 205, 25), black=(20, 20, 20),
           white=(245, 245, 245))
BACKGROUNDS = ((128, 128, 128), (190, 170, 130), (95, 115, 140), (170, 155, 195), (140, 105, 80))
MALE_VOICES = ("m1", "m2", "m3", "m4", "m5", "m6", "m7", "m8", "Andy", "Denis", "Diogo", "Henrique", "Hugo",
               "Marco", "antonio", "michel", "miguel", "sandro", "travis", "victor")
FEMALE_VOICES = ("f1", "f2", "f3", "f4", "f5", "Alicia", "Andrea", "Annie", "anika", "aunty", "belinda", "linda",
                 "steph", "grandma")
HELD_OUT = {"test": 2, "dev": 1}  # voice variants per gender kept for each evaluation split
SPEAKERS_PER_VOICE = 2


@dataclass(frozen=True)
class CorpusConfig:
    lang: str = "kannada"
    seed: int = 0
    num_align: int = 800
    num_train: int = 300
    num_dev: int = 60
    num_test: int = 120
    num_pretrain: int = 0  # untranscribed pool for self-supervised pretraining (its own speakers and sentences)
    version: int = CORPUS_VERSION

    def sizes(self) -> dict[str, int]:
        sizes = {"align": self.num_align, "train": self.num_train, "dev": self.num_dev, "test": self.num_test,
                 "pretrain": self.num_pretrain}
        return {k: v for k, v in sizes.items() if v}

    def key(self, espeak: str) -> str:
        blob = json.dumps({**dataclasses.asdict(self), "espeak": espeak, "chunk": CHUNK}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:12]


@dataclass
class Corpus:
    dir: Path
    rows: list[dict]  # paths relative to dir
    info: dict  # complete.json
    reused: bool


def describe(lang: Language, groups: list[tuple[int, str, str]], framed: bool) -> str:
    """The sentence for ``groups`` of (count, colour, shape), NFC-normalised."""
    phrases = [f"{lang.numbers[n - 1]} {lang.colours[c][n > 1]} {lang.shapes[s][n > 1]}" for n, c, s in groups]
    text = f" {lang.conj} ".join(phrases)
    if framed:
        text = lang.frame[len(groups) > 1 or groups[0][0] > 1].format(text)
    return unicodedata.normalize("NFC", text)


# ------------------------------------------------------------------------------------------------ plan
def plan(cfg: CorpusConfig) -> list[dict]:
    """Every utterance as a plain dict (speaker, text, scene, seed): cheap, deterministic, no audio yet."""
    import numpy as np

    lang = LANGUAGES[cfg.lang]
    speakers = _speakers(lang, np.random.default_rng([cfg.seed, 1]))
    rng = np.random.default_rng([cfg.seed, 2])
    items: list[dict] = []
    n_scenes = 0
    for split, n in cfg.sizes().items():
        if split == "align":  # each align scene is described twice, by (usually) different speakers
            scene_of = [n_scenes + int(i) // 2 for i in rng.permutation(n)]
        else:
            scene_of = [n_scenes + i for i in range(n)]
        scenes = {s: _scene(rng, s, list(lang.shapes), pool=split == "pretrain") for s in sorted(set(scene_of))}
        n_scenes += len(scenes)
        for i in range(n):
            scene = scenes[scene_of[i]]
            spk = speakers[split][int(rng.integers(len(speakers[split])))]
            items.append(dict(utt_id=f"{lang.code}-{split}-{i:05d}", split=split, index=len(items), speaker=spk,
                              scene=scene, text=describe(lang, scene["groups"], scene["framed"]), seed=cfg.seed))
    return items


def _speakers(lang: Language, rng) -> dict[str, list[dict]]:
    """Speakers per split; dev and test get voice variants of their own (HELD_OUT per gender)."""
    from avasr_cli.data import tts

    shipped = tts.list_variants()
    voices: dict[str, list[str]] = {"train": [], "dev": [], "test": []}
    for pool in (MALE_VOICES, FEMALE_VOICES):
        pool = [pool[i] for i in rng.permutation(len(pool)) if pool[i] in shipped]
        for split, n in HELD_OUT.items():
            voices[split] += [pool.pop(0) for _ in range(min(n, len(pool) - 1))]
        voices["train"] += pool
    speakers = {split: [dict(id=f"{lang.code}-{v}-{k}", voice=f"{lang.code}+{v}", gender=shipped[v],
                             rate=int(rng.integers(170, 231)), pitch=int(rng.integers(30, 71)),
                             range=int(rng.integers(25, 86)))
                        for v in sorted(vs) for k in range(SPEAKERS_PER_VOICE)]
                for split, vs in voices.items()}
    speakers["align"] = speakers["train"]
    # the pool's speakers: train voices (dev/test voices are never heard before evaluation) with their own
    # rate and pitch, so no pool speaker is an align/train/dev/test speaker
    speakers["pretrain"] = [dict(id=f"{lang.code}-{v}-pool{k}", voice=f"{lang.code}+{v}", gender=shipped[v],
                                 rate=int(rng.integers(170, 231)), pitch=int(rng.integers(30, 71)),
                                 range=int(rng.integers(25, 86)))
                            for v in sorted(voices["train"]) for k in range(SPEAKERS_PER_VOICE)]
    return speakers


def is_reserved(groups) -> bool:
    """Whether a scene type belongs to the pretraining pool (a fixed hash of its groups)."""
    key = json.dumps([list(g) for g in groups]).encode()
    return int(hashlib.sha256(key).hexdigest()[:8], 16) % RESERVED_EVERY == 0


def _scene(rng, index: int, shapes: list[str], pool: bool = False) -> dict:
    """1-4 objects of one colour and shape; sometimes a second group of 1-3 that differs in colour or shape.
    Scene types are drawn again until they fall in the pool's share (``pool``) or outside it."""
    colours = list(RGB)

    def group(most: int) -> tuple[int, str, str]:
        return int(rng.integers(1, most + 1)), colours[rng.integers(len(colours))], shapes[rng.integers(len(shapes))]

    while True:
        groups = [group(4)]
        if rng.random() < 0.3:
            second = group(3)
            while second[1:] == groups[0][1:]:
                second = group(3)
            groups.append(second)
        if is_reserved(groups) == pool:
            break
    framed = len(groups) == 1 and bool(rng.random() < 0.5)  # "in the picture there is ..." (short ones only)
    return dict(index=index, groups=groups, framed=framed, bg=int(rng.integers(len(BACKGROUNDS))))


# ------------------------------------------------------------------------------------------------ render
def render_scene(scene: dict, seed: int) -> bytes:
    """A 224x224 PNG of the scene's objects at random, non-overlapping places (drawn at 2x, then reduced)."""
    import numpy as np
    from PIL import Image, ImageDraw

    rng = np.random.default_rng([seed, 4, scene["index"]])
    size = 2 * IMAGE_SIZE
    top = np.array(BACKGROUNDS[scene["bg"]], dtype=np.float32) * rng.uniform(0.85, 1.15)
    bottom = np.array(BACKGROUNDS[scene["bg"]], dtype=np.float32) * rng.uniform(0.85, 1.15)
    ramp = np.linspace(0.0, 1.0, size, dtype=np.float32)[:, None, None]
    grad = np.broadcast_to(top + (bottom - top) * ramp, (size, size, 3))
    img = Image.fromarray(np.clip(grad, 0, 255).astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(img)
    objects = [(c, s) for n, c, s in scene["groups"] for _ in range(n)]
    objects = [objects[i] for i in rng.permutation(len(objects))]
    lo, hi = (40, 72) if len(objects) <= 2 else (30, 56) if len(objects) <= 4 else (24, 44)
    placed: list[tuple[float, float, float]] = []
    for colour, shape in objects:
        r = float(rng.uniform(lo, hi))
        for attempt in range(400):
            if attempt and attempt % 100 == 0:
                r *= 0.85
            x, y = rng.uniform(r + 6, size - r - 6, size=2)
            if all(math.hypot(x - px, y - py) > r + pr + 8 for px, py, pr in placed):
                break
        placed.append((x, y, r))
        fill = tuple(int(v) for v in np.clip(np.array(RGB[colour]) + rng.integers(-12, 13, size=3), 0, 255))
        turn = math.radians(rng.uniform(-18, 18))
        if shape == "circle":
            draw.ellipse((x - r, y - r, x + r, y + r), fill=fill)
            continue
        if shape == "square":
            pts = [(r * 1.2, math.pi / 4 + k * math.pi / 2) for k in range(4)]
        elif shape == "triangle":
            pts = [(r, -math.pi / 2 + k * 2 * math.pi / 3) for k in range(3)]
        else:  # star
            pts = [(r if k % 2 == 0 else r * 0.45, -math.pi / 2 + k * math.pi / 5) for k in range(10)]
        draw.polygon([(x + d * math.cos(a + turn), y + d * math.sin(a + turn)) for d, a in pts], fill=fill)
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
    lead, trail = (int(rng.uniform(0.05, 0.25) * sr) for _ in range(2))
    audio = np.concatenate([np.zeros(lead, np.float32), speech, np.zeros(trail, np.float32)])
    n_fft = 1 << (audio.size - 1).bit_length()  # a power of two: odd lengths make the FFT 20x slower
    spec = np.fft.rfft(rng.standard_normal(n_fft))
    spec /= np.maximum(np.arange(spec.size), 1.0) ** (rng.uniform(0.0, 1.5) / 2)  # white .. reddish noise
    noise = np.fft.irfft(spec, n_fft)[: audio.size]
    snr_db = rng.uniform(10.0, 30.0)
    noise *= math.sqrt(float(np.mean(speech**2)) / 10 ** (snr_db / 10) / max(float(np.mean(noise**2)), 1e-12))
    return np.clip(audio + noise, -1.0, 1.0).astype(np.float32)


def render_chunk(root: Path, items: list[dict]) -> list[dict]:
    """Write the images and audio of ``items`` under ``root``; return their corpus rows."""
    import soundfile as sf

    for sub in ("audio", "images"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    rows = []
    for item in items:
        png = render_scene(item["scene"], item["seed"])
        sha = hashlib.sha256(png).hexdigest()
        image = f"images/{sha}.png"
        if not (root / image).exists():
            write_file(root / image, png)
        audio = render_audio(item)
        buf = io.BytesIO()
        sf.write(buf, audio, 16000, subtype="PCM_16", format="WAV")
        write_file(root / "audio" / f"{item['utt_id']}.wav", buf.getvalue())
        spk = item["speaker"]
        rows.append(dict(utt_id=item["utt_id"], split=item["split"], audio=f"audio/{item['utt_id']}.wav",
                         duration=round(audio.size / 16000, 4), text=item["text"], image=image, image_sha256=sha,
                         speaker=spk["id"], gender=spk["gender"], voice=spk["voice"]))
    os.sync()  # one flush per chunk instead of an fsync per file; the chunk's marker is written after this
    return rows


def _run_chunk_process(root: Path, items: list[dict]) -> list[dict]:
    """Render one chunk in a fresh interpreter (``python -m avasr_cli.data.builtin``): fresh espeak-ng state,
    and unlike multiprocessing it never re-imports the caller's ``__main__``."""
    import subprocess
    import sys

    import avasr_cli

    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(Path(avasr_cli.__file__).parent.parent),
                                                    env.get("PYTHONPATH")) if p)
    proc = subprocess.run([sys.executable, "-m", "avasr_cli.data.builtin"], input=json.dumps(
        {"root": str(root), "items": items}, ensure_ascii=False), capture_output=True, text=True, env=env)
    try:
        reply = json.loads(proc.stdout.strip().splitlines()[-1])
    except (IndexError, json.JSONDecodeError):
        raise RuntimeError(f"corpus worker failed (exit {proc.returncode}): {proc.stderr.strip()[-2000:]}") from None
    if "error" in reply:
        from avasr_cli import errors

        cls = getattr(errors, reply["error"]["type"], errors.AvasrError)
        raise cls(reply["error"]["message"], reply["error"]["hint"])
    return reply["rows"]


def _worker_main() -> None:
    import sys

    from avasr_cli.errors import AvasrError

    task = json.loads(sys.stdin.read())
    try:
        rows = render_chunk(Path(task["root"]), task["items"])
    except AvasrError as exc:
        print(json.dumps({"error": {"type": type(exc).__name__, "message": exc.message, "hint": exc.hint}}))
        sys.exit(3)
    print(json.dumps({"rows": rows}, ensure_ascii=False))


# ------------------------------------------------------------------------------------------------ cache
def corpus_dir(cfg: CorpusConfig) -> Path:
    from avasr_cli.data import tts

    return avasr_home() / "corpora" / f"builtin-{cfg.lang}-{cfg.key(tts.espeak_version())}"


def load_corpus(root: Path) -> Corpus | None:
    """The finished corpus at ``root``, or None when it is absent or unfinished."""
    try:
        info = json.loads((root / "complete.json").read_text(encoding="utf-8"))
        lines = (root / "corpus.jsonl").read_text(encoding="utf-8").splitlines()
        rows = [json.loads(line) for line in lines if line.strip()]
    except (OSError, json.JSONDecodeError):
        return None
    if len(rows) != info.get("utterances") or not _files_present(root, rows):
        return None  # files deleted from the cache: generate_corpus redoes the chunks that lost some
    return Corpus(root, rows, info, reused=True)


def generate_corpus(cfg: CorpusConfig, rep: Reporter | None = None, workers: int | None = None) -> Corpus:
    """Return the cached corpus for ``cfg``, generating (or finishing) it first when needed."""
    import fcntl
    from concurrent.futures import ThreadPoolExecutor, as_completed

    from avasr_cli.data import tts

    rep = rep or Reporter()
    root = corpus_dir(cfg)
    if (found := load_corpus(root)) is not None:
        return found
    root.mkdir(parents=True, exist_ok=True)
    with open(root / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another process generating the same corpus: wait for it
        if (found := load_corpus(root)) is not None:
            return found
        start = time.time()
        for stray in [*root.glob("audio/.*.tmp"), *root.glob("images/.*.tmp")]:  # left by a killed worker
            stray.unlink(missing_ok=True)
        items = plan(cfg)
        chunks = [items[i : i + CHUNK] for i in range(0, len(items), CHUNK)]
        done = {i: _read_chunk(root, i) for i in range(len(chunks))}
        todo = [i for i in range(len(chunks)) if done[i] is None]
        _check_space(root, sum(len(chunks[i]) for i in todo) * 100_000)  # ~70 kB of WAV + ~10 kB of PNG each
        workers = max(1, min(workers or min(2, os.cpu_count() or 1), len(todo)))
        resumed = f", resuming after {len(chunks) - len(todo)} finished chunks" if len(todo) < len(chunks) else ""
        rep.log(f"generating the built-in {cfg.lang} corpus in {root} "
                f"({len(items)} utterances, {workers} worker(s){resumed})")
        with rep.task("synthesising", total=len(items)) as task, ThreadPoolExecutor(workers) as pool:
            task.advance(sum(len(c) for i, c in enumerate(chunks) if done[i] is not None))
            futures = {pool.submit(_run_chunk_process, root, chunks[i]): i for i in todo}
            try:
                for future in as_completed(futures):
                    index, rows = futures[future], future.result()
                    write_jsonl_atomic(root / "chunks" / f"{index:04d}.jsonl", rows)
                    done[index] = rows
                    task.advance(len(rows))
            finally:
                for future in futures:
                    future.cancel()
        rows = [row for i in range(len(chunks)) for row in done[i]]
        write_jsonl_atomic(root / "corpus.jsonl", rows)
        info = dict(config=dataclasses.asdict(cfg), key=root.name, espeak_version=tts.espeak_version(),
                    utterances=len(rows), images=len({r["image_sha256"] for r in rows}),
                    seconds=round(time.time() - start, 2), created=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
        write_json_atomic(root / "complete.json", info)
    return Corpus(root, rows, info, reused=False)


def _read_chunk(root: Path, index: int) -> list[dict] | None:
    """The rows of a finished chunk whose files are all present, else None (the chunk is redone)."""
    try:
        text = (root / "chunks" / f"{index:04d}.jsonl").read_text(encoding="utf-8")
        rows = [json.loads(line) for line in text.splitlines() if line.strip()]
    except (OSError, json.JSONDecodeError):
        return None
    return rows if rows and _files_present(root, rows) else None


def _check_space(root: Path, nbytes: int) -> None:
    import shutil

    from avasr_cli.errors import ResourceError

    free = shutil.disk_usage(root).free
    if free < nbytes:
        raise ResourceError(f"the built-in corpus needs about {nbytes >> 20} MiB in {root}, {free >> 20} MiB are free",
                            "free some space, point AVASR_HOME at a larger disk, or lower --num-align")


def _files_present(root: Path, rows: list[dict]) -> bool:
    return all((root / r["audio"]).is_file() and (root / r["image"]).is_file() for r in rows)


if __name__ == "__main__":
    _worker_main()
