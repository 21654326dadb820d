"""Feature store: fp16 shards, memory-mapped lookups, atomic commits, keys."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from avasr_cli.errors import InputError
from avasr_cli.vision.store import FeatureStore, store_key, store_path

META = {"model_id": "m", "revision": "r1", "layer": -1, "pooling": "model", "patch_pool": 0, "dim": 4, "num_patches": 3}


def feats(n, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 4)).astype(np.float32), rng.normal(size=(n, 3, 4)).astype(np.float32)


def shas(n, start=0):
    return [f"{i:064x}" for i in range(start, start + n)]


def test_write_and_lookup_across_shards(tmp_path):
    store = FeatureStore.open_or_create(tmp_path, META)
    assert store.path == store_path(META, tmp_path) and len(store) == 0
    p1, t1 = feats(5, 1)
    p2, t2 = feats(3, 2)
    store.write_shard(shas(5), p1, t1)
    store.write_shard(shas(3, 5), p2, t2)
    assert len(store) == 8 and (store.dim, store.num_patches) == (4, 3)
    assert store.missing(shas(10)) == shas(2, 8)
    assert store.missing(shas(2, 8) + shas(2, 8)) == shas(2, 8)  # unique, in order

    want = [shas(1, 6)[0], shas(1, 0)[0], shas(1, 4)[0], shas(1, 7)[0]]
    pooled, patches = store.lookup(want)
    assert pooled.dtype == np.float16 and patches.dtype == np.float16
    assert pooled.shape == (4, 4) and patches.shape == (4, 3, 4)
    np.testing.assert_array_equal(pooled, np.stack([p2[1], p1[0], p1[4], p2[2]]).astype(np.float16))
    np.testing.assert_array_equal(patches[0], t2[1].astype(np.float16))

    # on disk: fp16 .npy read through memory maps
    shard = store.path / "shard-00000"
    assert np.load(shard / "pooled.npy").dtype == np.float16
    assert isinstance(store._mmap(0)[1], np.memmap)
    assert json.loads((shard / "keys.json").read_text()) == shas(5)
    assert json.loads((store.path / "store.json").read_text())["dtype"] == "float16"

    # a fresh reader sees the same
    again = FeatureStore.open(store.path)
    assert len(again) == 8
    np.testing.assert_array_equal(again.lookup(want)[0], pooled)
    assert again.lookup(want, patches=False)[1] is None
    with pytest.raises(KeyError):
        again.lookup(shas(1, 99))
    assert again.lookup([])[0].shape == (0, 4)


def test_key_separates_models_layers_and_pooling(tmp_path):
    keys = {store_key(META)}
    for field, value in (("model_id", "other"), ("revision", "r2"), ("layer", -2), ("pooling", "masked-mean"), ("patch_pool", 2)):
        keys.add(store_key({**META, field: value}))
    assert len(keys) == 6
    assert store_key({**META, "label": "anything", "dim": 4}) == store_key(META)  # not part of the key


def test_bad_shapes_and_dims_are_refused(tmp_path):
    store = FeatureStore.open_or_create(tmp_path, META)
    p, t = feats(2)
    with pytest.raises(ValueError):
        store.write_shard(shas(2), p[:, :3], t)
    with pytest.raises(ValueError):
        store.write_shard([shas(1)[0]] * 2, p, t)
    assert store.write_shard([], p[:0], t[:0]) is None
    assert not list(store.path.glob("shard-*")) and not list(store.path.glob(".tmp-*"))
    with pytest.raises(InputError, match="dim"):
        FeatureStore.open_or_create(tmp_path, {**META, "dim": 8})
    with pytest.raises(InputError):
        FeatureStore.open(tmp_path / "nowhere")


def test_fp16_overflow_is_clipped_not_inf(tmp_path):
    store = FeatureStore.open_or_create(tmp_path, META)
    p, t = feats(1)
    p[0, 0] = 1e6
    store.write_shard(shas(1), p, t)
    assert np.isfinite(store.lookup(shas(1))[0]).all()


def test_interrupted_write_leaves_no_shard(tmp_path, monkeypatch):
    store = FeatureStore.open_or_create(tmp_path, META)
    p, t = feats(2)
    store.write_shard(shas(2), p, t)

    def boom(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(np, "save", boom)
    with pytest.raises(KeyboardInterrupt):
        store.write_shard(shas(2, 2), p, t)
    monkeypatch.undo()
    assert sorted(x.name for x in store.path.iterdir()) == ["shard-00000", "store.json"]
    assert len(FeatureStore.open(store.path)) == 2


def test_stale_temp_dir_of_dead_writer_is_removed(tmp_path):
    import socket

    store = FeatureStore.open_or_create(tmp_path, META)
    dead = store.path / f".tmp-shard-{socket.gethostname()}-1-{2**22 + 12345}"
    live = store.path / f".tmp-shard-{socket.gethostname()}-2-{os.getpid()}"
    dead.mkdir()
    live.mkdir()
    FeatureStore.open(store.path)
    assert not dead.exists() and live.exists()


def test_two_writers_never_share_a_shard_number(tmp_path):
    a = FeatureStore.open_or_create(tmp_path, META)
    b = FeatureStore.open(a.path)
    p, t = feats(2)
    a.write_shard(shas(2), p, t)
    b.write_shard(shas(2, 2), p, t)  # b does not know a's shard yet: takes the next number
    assert sorted(x.name for x in a.path.glob("shard-*")) == ["shard-00000", "shard-00001"]
    assert len(FeatureStore.open(a.path)) == 4


# ------------------------------------------------------------------------------------------------ damage
def _two_shards(tmp_path):
    store = FeatureStore.open_or_create(tmp_path, META)
    store.write_shard(shas(5), *feats(5, 1))
    store.write_shard(shas(3, 5), *feats(3, 2))
    return store


def _truncate(p):
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])


def _garbage(p):
    p.write_bytes(np.random.default_rng(7).bytes(p.stat().st_size))


def _remove(p):
    p.unlink()


def _directory(p):
    p.unlink()
    p.mkdir()


def _drop_a_row(p):  # a valid .npy with one row fewer than keys.json names
    np.save(p, np.load(p)[:-1])


@pytest.mark.parametrize("name", ["pooled.npy", "patches.npy", "keys.json", "index.json"])
@pytest.mark.parametrize("damage", [_truncate, _garbage, _remove, _directory, _drop_a_row])
def test_a_damaged_shard_is_named_and_not_indexed(tmp_path, name, damage):
    store = _two_shards(tmp_path)
    shard = store.path / "shard-00000"
    if damage is _drop_a_row and not name.endswith(".npy"):
        pytest.skip("row counts are an array property")
    damage(shard / name)
    reopened = FeatureStore.open(store.path)
    assert list(reopened.damaged) == [str(shard)] and name in reopened.damaged[str(shard)]
    assert reopened.missing(shas(8)) == shas(5)  # the damaged shard's images count as missing, no others
    pooled, _ = reopened.lookup(shas(3, 5))  # the other shard reads as before
    np.testing.assert_array_equal(pooled, store.lookup(shas(3, 5))[0])
    assert reopened.remove_damaged() == [str(shard)] and not shard.exists()
    assert FeatureStore.open(store.path).damaged == {}


def test_verify_finds_a_flipped_byte_that_sizes_miss(tmp_path):
    store = _two_shards(tmp_path)
    target = store.path / "shard-00001" / "patches.npy"
    data = bytearray(target.read_bytes())
    data[-3] ^= 0xFF
    target.write_bytes(bytes(data))
    reopened = FeatureStore.open(store.path)
    assert reopened.damaged == {} and shas(3, 5)[0] in reopened  # same size, same header: not seen cheaply
    damaged = reopened.verify()
    assert damaged == {str(target.parent): "patches.npy does not match its checksum in index.json"}
    assert reopened.missing(shas(8)) == shas(3, 5)


def test_shards_written_before_index_json_still_open(tmp_path):
    store = _two_shards(tmp_path)
    for shard in store.path.glob("shard-*"):
        (shard / "index.json").unlink()
    assert len(FeatureStore.open(store.path).damaged) == 2  # this store writes index.json: its loss is damage
    record = json.loads((store.path / "store.json").read_text())
    del record["shard_index"]  # as a store made before index.json existed
    (store.path / "store.json").write_text(json.dumps(record))
    reopened = FeatureStore.open(store.path)
    assert reopened.damaged == {} and reopened.verify() == {} and len(reopened) == 8
    assert reopened.shards_of(shas(8)) == {"shard-00000": 5, "shard-00001": 3}


def test_a_keys_file_with_a_key_that_is_no_sha256_or_a_huge_shard_number_is_damaged(tmp_path):
    """A spaced key would decode to a shorter digest and alias a real image's: the shard is refused, and
    so is a shard number past what the index holds (found by a review: it crashed the first read)."""
    store = FeatureStore.open_or_create(tmp_path, META)
    real = "ab" * 31 + "00"
    store.write_shard([real], *feats(1, 1))
    spaced = store.write_shard(shas(1, 7), *feats(1, 2))
    (spaced / "keys.json").write_text(json.dumps([" " + "ab" * 31 + " "]))
    store.write_shard(shas(1, 9), *feats(1, 3)).rename(store.path / "shard-3000000000")
    again = FeatureStore.open(store.path)
    assert set(again.damaged) == {str(spaced), str(store.path / "shard-3000000000")}
    assert "is not a sha256" in again.damaged[str(spaced)] and "outside" in again.damaged[str(store.path / "shard-3000000000")]
    assert again.keys() == [real] and np.array_equal(again.lookup([real])[0], store.lookup([real])[0])
    with pytest.raises(KeyError, match="is not in feature store"):
        again.lookup([" " + "ab" * 31 + " "])
