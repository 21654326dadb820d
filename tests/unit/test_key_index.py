"""The feature store's index in numpy arrays (avasr_cli/vision/key_index.py), against the dict it replaced."""

import hashlib
import tracemalloc

import numpy as np
import pytest

from avasr_cli.vision.key_index import KeyIndex


def sha(i: int) -> str:
    return hashlib.sha256(str(i).encode()).hexdigest()


def test_it_answers_as_the_dict_with_setdefault_did():
    rng = np.random.default_rng(0)
    index, ref = KeyIndex(), {}
    # shards of random keys with repeats inside the index (an image in two shards) and digests that end in
    # zero bytes (numpy's S dtype drops trailing NULs when it reads an item back)
    pool = [sha(i) for i in range(300)] + ["00" * 31 + "ab", "ab" + "00" * 31, "ab" + "00" * 30 + "01"]
    for shard in range(12):
        keys = list(dict.fromkeys(rng.choice(pool, size=40).tolist()))
        index.add(keys, shard)
        for row, k in enumerate(keys):
            ref.setdefault(k, (shard, row))
        if shard % 3 == 0:  # reads between adds merge what is pending
            assert len(index) == len(ref)
    queries = pool + [sha(10_000), "not-a-sha", "zz" * 32, None]
    found, shard, row = index.locate(queries)
    for q, f, s, r in zip(queries, found, shard, row):
        assert f == (q in ref) and (not f or (s, r) == ref[q]), q
    assert sorted(index.keys()) == sorted(ref) and index.keys() == sorted(ref, key=ref.get)
    assert all(k in index for k in ref) and "not-a-sha" not in index


def test_dropping_a_shard_lets_a_later_copy_be_found():
    index = KeyIndex()
    index.add([sha(1), sha(2)], 0)
    index.add([sha(2), sha(3)], 1)
    assert index.locate([sha(2)])[1].tolist() == [0]
    index.drop_shard(0)
    assert len(index) == 1  # sha(1) gone; sha(2)'s later copy is added back by the store (it reads keys.json)
    index.add([sha(2), sha(3)], 1)
    found, shard, row = index.locate([sha(1), sha(2), sha(3)])
    assert found.tolist() == [False, True, True] and shard.tolist() == [-1, 1, 1] and row.tolist() == [-1, 0, 1]


def test_a_key_that_is_no_sha256_is_refused_when_added():
    with pytest.raises(ValueError, match="is not a sha256"):
        KeyIndex().add(["abc"], 0)


def test_a_hundred_thousand_images_take_40_bytes_each_not_a_dicts_250():
    keys = [sha(i) for i in range(100_000)]
    tracemalloc.start()
    index = KeyIndex()
    for shard in range(0, 100_000, 1000):
        index.add(keys[shard : shard + 1000], shard // 1000)
    assert len(index) == 100_000
    held, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert index.nbytes() == 40 * 100_000 and held < 50 * 100_000

    tracemalloc.start()
    ref = {}
    for i, k in enumerate(keys):
        ref.setdefault(k, (i // 1000, i % 1000))
    dict_held, _ = tracemalloc.get_traced_memory()  # the dict (the key strings exist already, as above)
    tracemalloc.stop()
    assert dict_held > 2 * held


@pytest.mark.parametrize("key", [" " + "ab" * 31 + " ", "CD" * 32, "ab" * 31 + "0", "ab" * 32 + "\n"])
def test_only_lower_case_sha256_hex_is_a_key(key):
    """bytes.fromhex skips spaces: ' ' + 'ab'*31 + ' ' would be a 31-byte digest, padded to the key of the
    real image 'ab'*31 + '00' (found by a review); upper case would be a second spelling of one image."""
    index = KeyIndex()
    index.add(["ab" * 31 + "00", "cd" * 32], 0)
    with pytest.raises(ValueError, match="is not a sha256"):
        KeyIndex().add([key], 0)
    assert index.locate([key])[0].tolist() == [False] and key not in index


def test_a_shard_number_past_int32_is_refused():
    with pytest.raises(ValueError, match="outside"):
        KeyIndex().add([sha(1)], 2**31)
