"""Repairing a finished packed corpus (:mod:`avasr_cli.data.builtin.packed`): each damaged commit's plan rows
are rendered again and its two tars rewritten in place, to the same bytes as before (deterministic
rendering, members in plan order, mtime 0); the other shards are not touched."""

from __future__ import annotations

import os
import shutil


def repair(packer, damaged: list[int]) -> None:
    """Render again just the plan rows of each damaged commit (indexes into ``packer.commits``; ``packer``:
    the corpus's :class:`~avasr_cli.data.builtin.packed._Packer`) and rewrite its two tars in place."""
    from concurrent.futures import ThreadPoolExecutor

    from avasr_cli.data.builtin import _chunks, _run_chunk_process

    IMAGES = packer.IMAGES
    packer.rep.log(f"repairing {len(damaged)} damaged shard(s) of {packer.root}")
    packer.work.mkdir(exist_ok=True)
    for k in damaged:
        c = packer.commits[k]
        image_sid = c["images"]["shard_id"] if c["images"] else len(packer.commits) + 10**6
        packer._load_seen(before=k)  # the pictures first shown earlier (damaged ones were repaired first)
        where = packer.work / f"repair-{k}"
        shutil.rmtree(where, ignore_errors=True)
        (where / c["split"]).mkdir(parents=True)
        (where / IMAGES).mkdir()
        from avasr_cli.data.shards import ShardFile

        packer.audio = (c["split"], ShardFile(where / c["split"], packer.root / c["split"], c["audio"]["shard_id"]))
        packer.images = ShardFile(where / IMAGES, packer.root / IMAGES, image_sid, prefix="images", name_field="image_filepath")
        first, last = c["start"] // packer.chunk, (c["end"] - 1) // packer.chunk
        with packer.rep.task(f"repairing shard {k}", total=c["end"] - c["start"]) as task, \
                ThreadPoolExecutor(packer.workers) as pool:
            futures = []
            for index, items in zip(range(last + 1), _chunks(packer.cfg)):
                if index >= first:
                    tar = where / f"chunk-{index:06d}.tar"
                    futures.append((index, tar, pool.submit(_run_chunk_process, packer.root, items, tar)))
            for index, tar, future in futures:
                packer._consume(index, tar, future, task, window=(c["start"], c["end"]))
        audio = packer.audio[1].close()
        if len(packer.images):
            images = packer.images.close()
        else:
            packer.images.abandon()
            images = None
        packer.audio = packer.images = None
        for record, sub in ((audio, c["split"]), (images, IMAGES)):
            if record is None:
                continue
            for name in (record["tar"], record["manifest"]):
                os.replace(where / sub / name, packer.root / sub / name)
        c["audio"], c["images"] = audio, images if c["images"] else None
        shutil.rmtree(where, ignore_errors=True)
        packer._write_state()
    shutil.rmtree(packer.work, ignore_errors=True)
    packer.write_indexes()
