"""``avasr prepare`` streams (issue 21): rows flow from the source through the checks, the shard writer and
the manifest writer without the stage holding them; its Python memory is the same at 1 k and 8 k clips.

The source here is a stand-in registered in ``SOURCES``: a :class:`Rows` stream of ``n`` alignment clips,
all pointing at one real 0.05 s WAV (so packing the shards reads and writes real audio), and a few train,
dev and test rows. The real sources are covered by test_prepare.py, test_byo_manifest.py, test_vaani*.py.
"""

import json
import tracemalloc

import numpy as np
import pytest
import soundfile as sf

from avasr_cli.data.manifest import Rows, read_manifest
from avasr_cli.run import RunDir
from avasr_cli.stages import prepare as prepare_mod
from avasr_cli.stages.prepare import PrepareConfig, SourceData, check_disjoint, run_prepare


def _stream_source(n: int, wav, passes: list):
    def rows(split: str, count: int):
        def make():
            passes.append(split)
            for i in range(count):
                yield dict(audio_filepath=str(wav), duration=0.05, text="" if split == "align" else "a b",
                           image_filepath=str(wav), image_sha256=f"{i % 97:064x}", utt_id=f"{split}-{i:07d}",
                           speaker=f"{split}-spk{i % 5}", lang="kannada", gender="female")
        return Rows(make)

    def source(cfg, rep, token=None, verify=False):
        splits = {"align": rows("align", n), "train": rows("train", 20), "dev": rows("dev", 10),
                  "test": rows("test", 10)}
        return SourceData(splits, wav.parent, False, {"corpus": {"kind": "stream test"}})
    return source


@pytest.fixture
def wav(tmp_path):
    path = tmp_path / "clip.wav"
    sf.write(path, (np.sin(np.arange(800) / 5) * 3000).astype(np.int16), 16000, subtype="PCM_16")
    return path


def _prepare_peak(tmp_path, monkeypatch, wav, n: int, layout: str, passes: list | None = None) -> tuple[int, RunDir]:
    passes = [] if passes is None else passes
    monkeypatch.setitem(prepare_mod.SOURCES, "stream", _stream_source(n, wav, passes))
    run = RunDir(tmp_path / f"run-{n}-{layout}")
    cfg = PrepareConfig(source="stream", audio_layout=layout, shard_clips=500)
    tracemalloc.start()
    try:
        run_prepare(run, cfg)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return peak, run


def test_prepare_memory_does_not_grow_with_the_clips(tmp_path, monkeypatch, wav):
    small, _ = _prepare_peak(tmp_path, monkeypatch, wav, 1000, "shards")
    passes: list = []
    large, run = _prepare_peak(tmp_path, monkeypatch, wav, 8000, "shards", passes)
    assert passes.count("align") == 3  # the checks, the shards' content key, the packing; the manifest reads the shards
    rows = read_manifest(run.manifest("align"))
    assert len(rows) == 8000 and rows[0]["utt_id"] == "align-0000000" and rows[-1]["utt_id"] == "align-0007999"
    assert {r["shard_id"] for r in rows} == set(range(16))
    # 8x the clips: a held list of rows would be ~8x (several MiB); a stream is flat (8 bytes of id hash each)
    assert large < 1.3 * small, f"peak traced memory {small / 2**20:.2f} MiB at 1k, {large / 2**20:.2f} MiB at 8k"


def test_files_layout_streams_too(tmp_path, monkeypatch, wav):
    _, run = _prepare_peak(tmp_path, monkeypatch, wav, 300, "files")
    card = json.loads((run.data / "data_card.json").read_text())
    assert card["counts"]["align"] == 300 and card["audio_files"]["align"] == 1  # every row names one file
    assert card["disjointness"]["passed"]


def test_duplicate_ids_are_found_in_a_stream_and_confirmed_on_the_ids():
    def rows(ids):
        return Rows(lambda: (dict(utt_id=i, speaker="s") for i in ids))

    check = check_disjoint({"align": rows(["a", "b", "c"]), "train": rows(["c", "d"]), "dev": rows([]),
                            "test": rows(["a"])})
    assert check["duplicate_utt_ids"] == 2 and not check["passed"]
    # a 64-bit hash collision is confirmed on the ids before anything is called a duplicate

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(prepare_mod, "_id_hash", lambda utt_id: 7)  # every id "collides"
        check = check_disjoint({"align": rows(["x", "y"]), "train": rows([]), "dev": rows([]), "test": rows([])})
    assert check["duplicate_utt_ids"] == 0 and check["passed"]
