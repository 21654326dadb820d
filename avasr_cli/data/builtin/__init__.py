"""The built-in corpus: procedural pictures of objects and synthetic speech describing them.

Everything is a function of :class:`CorpusConfig` (language, seed, split sizes, corpus version) and the
espeak-ng version. A corpus is generated once into ``$AVASR_HOME/corpora/builtin-<lang>-<key>`` and shared
by every run directory asking for the same config:

    audio/<utt_id>.wav        16 kHz mono 16-bit PCM
    images/<sha256>.png       224x224 RGB, named by content (scenes repeat in the align set)
    chunks/<i>.jsonl          rows of a finished chunk (resume points)
    corpus.jsonl              every row (relative paths), then
    complete.json             written last: the corpus is usable only when this exists

The parts: :mod:`.lexicon` (the words and their classes), :mod:`.scenes` (scenes, sentences, speakers,
the plan of every utterance), :mod:`.render` (pictures and speech). Synthesis runs in fresh interpreters
(``python -m avasr_cli.data.builtin``), one per fixed chunk of utterances, because espeak-ng carries state
from one utterance to the next (see :mod:`avasr_cli.data.tts`): that makes the audio bit-identical whatever
the number of workers or what the calling process did before.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

from avasr_cli.data.audio_io import write_file
from avasr_cli.data.builtin.lexicon import ALIASES, LANGUAGES, Language, word_classes
from avasr_cli.data.builtin.render import IMAGE_SIZE, render_audio, render_scene, wav_bytes
from avasr_cli.data.builtin.scenes import (CORPUS_VERSION, RESERVED_EVERY, SPLITS, CorpusConfig, describe,
                                           held_out_sentence, is_reserved, iter_plan, plan)
from avasr_cli.progress import Reporter
from avasr_cli.run import avasr_home, write_json_atomic, write_jsonl_atomic

CHUNK = 100  # utterances per worker process (fixed: the audio must not depend on the number of workers)


def corpus_key(cfg: CorpusConfig, espeak: str) -> str:
    blob = json.dumps({**dataclasses.asdict(cfg), "espeak": espeak, "chunk": CHUNK}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


@dataclass
class Corpus:
    dir: Path
    rows: list[dict]  # paths relative to dir
    info: dict  # complete.json
    reused: bool


# ------------------------------------------------------------------------------------------------ render
def render_chunk(root: Path, items: list[dict]) -> list[dict]:
    """Write the images and audio of ``items`` under ``root``; return their corpus rows."""
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
        write_file(root / "audio" / f"{item['utt_id']}.wav", wav_bytes(audio))
        spk = item["speaker"]
        rows.append(dict(utt_id=item["utt_id"], split=item["split"], audio=f"audio/{item['utt_id']}.wav",
                         duration=round(audio.size / 16000, 4), text=item["text"], image=image, image_sha256=sha,
                         speaker=spk["id"], gender=spk["gender"], voice=spk["voice"], group=spk["group"],
                         extra=item["extra"]["kind"]))
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


def worker_main() -> None:
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

    return avasr_home() / "corpora" / f"builtin-{cfg.lang}-{corpus_key(cfg, tts.espeak_version())}"


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



__all__ = ["ALIASES", "CHUNK", "CORPUS_VERSION", "Corpus", "CorpusConfig", "IMAGE_SIZE", "LANGUAGES", "Language",
           "RESERVED_EVERY", "SPLITS", "corpus_dir", "describe", "generate_corpus", "held_out_sentence", "is_reserved",
           "iter_plan", "load_corpus", "plan", "render_audio", "render_chunk", "render_scene", "word_classes"]
