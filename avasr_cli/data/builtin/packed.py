"""The built-in corpus written straight into shards (``prepare --audio-layout shards``): no file per clip.

The same plan, rendered by the same workers in the same chunks of :data:`~avasr_cli.data.builtin.CHUNK`
(so every WAV and PNG is byte-identical to the file layout's), but each worker writes its chunk into one
temporary tar and the parent appends the members, in plan order, to the split's NeMo tarred shards and
to image tars::

    $AVASR_HOME/corpora/builtin-<lang>-<key>/packed-<clips per shard>/
        <split>/audio_<i>.tar, manifest_<i>.json, index.json   one split's shards (avasr_cli.data.shards format)
        images/images_<j>.tar, manifest_<j>.json, index.json   every distinct picture once, <sha256>.png
        progress.json, complete.json                           the commits (resume points); written last

A shard is committed when full or when its split ends: its tar is flushed, its manifest written, the
image tar beside it closed, and ``progress.json`` rewritten with both and the plan range they cover. A
killed prepare continues at the last commit (the files past it are removed, the chunk holding that
position rendered again). A damaged shard of a finished corpus is rendered again alone, to the same bytes.

Memory: one chunk's plan and rows per worker in flight, one shard's rows, and 8 bytes of the sha256 of each
distinct picture (with the image tar holding it). Files: two per shard, two per image tar, one index per
split: about 4 per 1 k clips at 1,000 clips per shard.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from avasr_cli.data.builtin.scenes import SPLITS, CorpusConfig, held_out_sentence
from avasr_cli.progress import Reporter
from avasr_cli.run import write_json_atomic

PROGRESS, COMPLETE, IMAGES = "progress.json", "complete.json", "images"
LAYOUT = 1


@dataclass
class PackedCorpus:
    dir: Path  # a split's shards are in dir / split
    info: dict
    reused: bool


def packed_dir(cfg: CorpusConfig, clips_per_shard: int) -> Path:
    from avasr_cli.data.builtin import corpus_dir

    return corpus_dir(cfg) / f"packed-{clips_per_shard}"


def load_packed(root: Path) -> PackedCorpus | None:
    try:
        info = json.loads((root / COMPLETE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return PackedCorpus(root, info, reused=True)


def generate_packed(cfg: CorpusConfig, clips_per_shard: int, rep: Reporter | None = None,
                    workers: int | None = None, verify: bool = False) -> PackedCorpus:
    """Return the packed corpus for ``cfg``, generating (or resuming) it first when needed. A finished one
    is checked first (``verify``, as ``prepare --force`` asks: every tar's checksum too) and its damaged
    shards rendered again; one whose record of commits is lost is rendered again whole."""
    import fcntl

    rep = rep or Reporter()
    root = packed_dir(cfg, clips_per_shard)
    if not verify and (found := load_packed(root)) is not None:
        packer = _Packer(cfg, clips_per_shard, root, rep, workers)
        if packer.finished() and not packer.damaged() and packer.indexes_ok():
            return found
    root.mkdir(parents=True, exist_ok=True)
    with open(root / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another process packing the same corpus: wait for it
        packer = _Packer(cfg, clips_per_shard, root, rep, workers)
        if (found := load_packed(root)) is not None and packer.finished():
            if damaged := packer.damaged(full=verify):  # read-only data: render just the damaged ones again
                packer.repair(damaged)
            elif not packer.indexes_ok():
                packer.write_indexes()
            return found
        info = packer.run()
    return PackedCorpus(root, info, reused=False)


class _Packer:
    IMAGES = IMAGES
    def __init__(self, cfg: CorpusConfig, clips_per_shard: int, root: Path, rep: Reporter, workers: int | None):
        from avasr_cli.data.builtin import CHUNK

        self.cfg, self.size, self.root, self.rep = cfg, clips_per_shard, root, rep
        self.chunk = CHUNK
        self.total = sum(cfg.sizes().values())
        self.workers = max(1, workers or min(2, os.cpu_count() or 1))
        self.work = root / f".work-{os.getpid()}-{time.time_ns()}"  # its own: a killed run's workers may live on
        # commits, in plan order: {"split", "start", "end" (plan positions), "audio": shard record,
        # "images": record of the image tar closed with it, or None}
        self.commits: list[dict] = self._read_state()["commits"]
        self.position = self.commits[-1]["end"] if self.commits else 0  # plan rows [0, position) are committed
        # 8 bytes of a picture's sha256 → the image tar holding it (about 100 bytes a distinct picture as a
        # dict; two pictures sharing 64 bits of sha256, odds ~n²/2⁶⁵, would leave the second one unwritten)
        self.seen: dict[int, int] = {}
        self.audio = None  # (split, ShardFile) being written
        self.images = None
        self.voices: dict[str, set] = {s: set() for s in SPLITS}  # over the whole plan (a resumed run redraws it)
        self.wrong_side = 0

    # ---------------------------------------------------------------- state
    @property
    def shards(self) -> dict[str, list[dict]]:
        return {s: [c["audio"] for c in self.commits if c["split"] == s] for s in SPLITS}

    @property
    def image_shards(self) -> list[dict]:
        return [c["images"] for c in self.commits if c["images"]]

    def _read_state(self) -> dict:
        try:
            state = json.loads((self.root / PROGRESS).read_text(encoding="utf-8"))
            if state.get("layout") == LAYOUT and state.get("clips_per_shard") == self.size:
                return state
        except (OSError, ValueError):
            pass
        return {"commits": []}

    def _write_state(self) -> None:
        write_json_atomic(self.root / PROGRESS, {"layout": LAYOUT, "clips_per_shard": self.size,
                                                 "commits": self.commits})

    def _load_seen(self, before: int | None = None) -> None:
        """The pictures in the image tars of the commits before ``before`` (all of them by default)."""
        self.seen = {}
        for c in self.commits[:before]:
            shard = c["images"]
            if not shard:
                continue
            with open(self.root / IMAGES / shard["manifest"], encoding="utf-8") as fh:
                for line in fh:
                    self.seen[_short(json.loads(line)["image_sha256"])] = shard["shard_id"]

    def _tidy(self) -> None:
        """Remove what a killed run wrote past the last commit (uncommitted tars and manifests, chunk tars)."""
        for stale in self.root.glob(".work*"):
            shutil.rmtree(stale, ignore_errors=True)
        keep = {(s, n) for s, shards in self.shards.items() for sh in shards for n in (sh["tar"], sh["manifest"])}
        keep |= {(IMAGES, n) for sh in self.image_shards for n in (sh["tar"], sh["manifest"])}
        for sub in (*SPLITS, IMAGES):
            d = self.root / sub
            if d.is_dir():
                for p in d.iterdir():
                    if (sub, p.name) not in keep:
                        p.unlink() if p.is_file() or p.is_symlink() else shutil.rmtree(p, ignore_errors=True)
            d.mkdir(parents=True, exist_ok=True)
        self.work.mkdir()

    def _commit(self) -> None:
        """Close the open audio shard and image tar, then record them (the resume point)."""
        split, shard = self.audio
        start = self.commits[-1]["end"] if self.commits else 0
        commit = {"split": split, "start": start, "end": self.position, "audio": shard.close(), "images": None}
        if len(self.images):
            commit["images"] = self.images.close()
        else:
            self.images.abandon()
            (self.images.where / self.images.tar_name).unlink(missing_ok=True)
        self.audio = self.images = None
        self.commits.append(commit)
        self._write_state()

    def _open(self, split: str, sid: int, image_sid: int) -> None:
        from avasr_cli.data.shards import ShardFile

        self.audio = (split, ShardFile(self.root / split, self.root / split, sid))
        self.images = ShardFile(self.root / IMAGES, self.root / IMAGES, image_sid, prefix="images", name_field="image_filepath")

    def finished(self) -> bool:
        return bool(self.commits) and self.commits[-1]["end"] == self.total

    def damaged(self, full: bool = False) -> list[int]:
        """The commits whose audio shard or image tar is missing, of another size than recorded, whose
        manifest's checksum differs or whose tar headers do not parse; with ``full`` also those whose tar's
        checksum differs (checked before each reuse, and before a resume)."""
        from avasr_cli.data.shards import _shard_problem

        return [k for k, c in enumerate(self.commits)
                if _shard_problem(self.root / c["split"], c["audio"], full)
                or (c["images"] and _shard_problem(self.root / IMAGES, c["images"], full))]

    def indexes_ok(self) -> bool:
        try:
            return all(json.loads((self.root / sub / "index.json").read_text(encoding="utf-8")) == index
                       for sub, index in self._indexes().items())
        except (OSError, ValueError):
            return False

    def _indexes(self) -> dict[str, dict]:
        return {**{s: _index(self.shards[s], self.size) for s in SPLITS}, IMAGES: _index(self.image_shards, self.size)}

    def write_indexes(self) -> None:
        for sub, index in self._indexes().items():
            write_json_atomic(self.root / sub / "index.json", index)

    def repair(self, damaged: list[int]) -> None:
        from avasr_cli.data.builtin.packed_repair import repair

        repair(self, damaged)

    # ---------------------------------------------------------------- the pass
    def run(self) -> dict:
        from concurrent.futures import ThreadPoolExecutor

        from avasr_cli.data import tts
        from avasr_cli.data.builtin import _check_space, _chunks, _run_chunk_process

        start = time.time()
        if damaged := self.damaged():  # a commit lost or changed since: resume before the first such one
            self.commits = self.commits[:damaged[0]]
            self.position = self.commits[-1]["end"] if self.commits else 0
            self._write_state()
        self._tidy()
        self._load_seen()
        first = self.position // self.chunk
        _check_space(self.root, (self.total - self.position) * 100_000)
        resumed = f", resuming after {self.position} committed clips" if self.position else ""
        self.rep.log(f"generating the built-in {self.cfg.lang} corpus into shards in {self.root} "
                     f"({self.total} utterances, {self.workers} worker(s){resumed})")
        with self.rep.task("synthesising into shards", total=self.total) as task, \
                ThreadPoolExecutor(self.workers) as pool:
            task.advance(self.position)
            pending: list = []  # futures in plan order, at most 2 per worker
            try:
                for index, items in enumerate(_chunks(self.cfg)):
                    if index < first:  # committed: only its voices and sentences are counted again
                        for item in items:
                            self._tally(item["split"], item["speaker"]["voice"], item["text"])
                        continue
                    if len(pending) >= 2 * self.workers:
                        self._consume(*pending.pop(0), task)
                    tar = self.work / f"chunk-{index:06d}.tar"
                    pending.append((index, tar, pool.submit(_run_chunk_process, self.root, items, tar)))
                while pending:
                    self._consume(*pending.pop(0), task)
            finally:
                for _, _, future in pending:
                    future.cancel()
        if self.audio is not None:
            self._commit()
        if self.position != self.total:
            raise RuntimeError(f"packed {self.position} of {self.total} utterances into {self.root}")
        self.write_indexes()
        shutil.rmtree(self.work, ignore_errors=True)
        info = dict(config=dataclasses.asdict(self.cfg), key=self.root.parent.name, layout="shards",
                    clips_per_shard=self.size, espeak_version=tts.espeak_version(), utterances=self.total,
                    images=sum(s["clips"] for s in self.image_shards), seconds=round(time.time() - start, 2),
                    voices={s: sorted(v) for s, v in self.voices.items()}, sentence_rule_breaks=self.wrong_side,
                    created=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
        write_json_atomic(self.root / COMPLETE, info)
        return info

    def _tally(self, split: str, voice: str, text: str) -> None:
        """The data card's voices per split and the sentence rule, counted as the plan passes."""
        self.voices[split].add(voice)
        self.wrong_side += held_out_sentence(text) != (split in ("dev", "test"))

    def _consume(self, index: int, tar: Path, future, task, window: tuple[int, int] | None = None) -> None:
        """Append chunk ``index``'s rows past the committed position to the open shards (``window``: only
        those rows, into the shards being repaired)."""
        from avasr_cli.data.tars import members, read_at

        rows = future.result()
        where = members(tar, what="chunk tar")

        def member(name: str) -> bytes:
            return read_at(tar, *where[name], name)

        for k, r in enumerate(rows):
            pos = index * self.chunk + k
            if window is not None:
                if not window[0] <= pos < window[1]:
                    continue
            else:
                self._tally(r["split"], r["voice"], r["text"])
                if pos < self.position:
                    continue  # in a committed shard (a resumed run redraws the chunk it stopped in)
                if self.audio is not None and (self.audio[0] != r["split"] or len(self.audio[1]) >= self.size):
                    self._commit()
                if self.audio is None:
                    self._open(r["split"], len(self.shards[r["split"]]), len(self.commits))
            short = _short(r["image_sha256"])
            if short not in self.seen:
                self.seen[short] = self.images.sid
                self.images.add({"image_sha256": r["image_sha256"]}, r["image"], member(r["image"]))
            self.audio[1].add(_manifest_row(self.cfg.lang, r, self.root / IMAGES, self.seen[short]),
                              r["audio"], member(r["audio"]))
            if window is None:
                self.position = pos + 1
            task.advance(1)
        tar.unlink()


def _short(sha: str) -> int:
    return int(sha[:16], 16)


def _manifest_row(lang: str, r: dict, images: Path, image_shard: int) -> dict:
    """The manifest row of corpus row ``r`` (as the file layout's, with the picture named in its tar)."""
    row = dict(audio_filepath=r["audio"], duration=r["duration"], text="" if r["split"] == "align" else r["text"])
    if r["split"] != "align":
        row["text_raw"] = r["text"]
    row.update(image_filepath=r["image"], image_tar_filepath=str(images / f"images_{image_shard}.tar"),
               image_sha256=r["image_sha256"], utt_id=r["utt_id"], speaker=r["speaker"], speaker_group=r["group"],
               lang=lang, gender=r["gender"])
    return row


def _index(shards: list[dict], size: int) -> dict:
    """A directory's index.json (avasr_cli.data.shards format), from the commits' records."""
    from avasr_cli.data.shards import LAYOUT_VERSION

    key = hashlib.sha256(json.dumps([s["sha256"] for s in shards]).encode()).hexdigest()[:16]
    return {"format": LAYOUT_VERSION, "key": key, "clips": sum(s["clips"] for s in shards), "clips_per_shard": size,
            "shards": shards}
