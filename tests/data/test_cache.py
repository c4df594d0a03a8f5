import os

import numpy as np

from medseg_weak.data.cache import ArrayCache, file_digest


def _compute(value):
    calls = []

    def compute():
        calls.append(1)
        return {"a": np.full((3, 2), value, dtype=np.float32), "m": np.eye(2, dtype=bool)}, {"flipped": True}

    return compute, calls


def test_hit_after_miss_returns_same_arrays(tmp_path):
    src = tmp_path / "img.bin"
    src.write_bytes(b"pixels")
    cache = ArrayCache(tmp_path / "cache")
    key = cache.key([src, None], {"size": 64})
    compute, calls = _compute(1.5)
    first = cache.get_or_compute(key, compute)
    second = cache.get_or_compute(key, compute)
    assert len(calls) == 1 and cache.hits == 1 and cache.misses == 1
    np.testing.assert_array_equal(first[0]["a"], second[0]["a"])
    assert second[0]["m"].dtype == bool and second[1] == {"flipped": True}


def test_key_follows_content_and_config(tmp_path):
    a, b = tmp_path / "a.bin", tmp_path / "b.bin"
    a.write_bytes(b"same")
    b.write_bytes(b"same")
    cache = ArrayCache(tmp_path / "cache")
    assert cache.key([a], {"size": 64}) == cache.key([b], {"size": 64})  # a renamed copy reuses the entry
    assert cache.key([a], {"size": 64}) != cache.key([a], {"size": 128})
    before = cache.key([a], {"size": 64})
    a.write_bytes(b"changed in place")
    os.utime(a, ns=(1, 1))  # even with a different mtime the content decides
    assert ArrayCache(tmp_path / "cache").key([a], {"size": 64}) != before


def test_stat_index_avoids_rehashing(tmp_path, monkeypatch):
    src = tmp_path / "img.bin"
    src.write_bytes(b"pixels")
    _age(src)  # written just now it would be racy (same timestamp tick as its index entry)
    ArrayCache(tmp_path / "cache").key([src], {})
    import medseg_weak.data.cache as cache_mod

    def boom(path):
        raise AssertionError("content was hashed again")

    monkeypatch.setattr(cache_mod, "file_digest", boom)
    ArrayCache(tmp_path / "cache").key([src], {})  # a new process: the on-disk stat index answers


def test_damaged_entry_is_recomputed(tmp_path):
    cache = ArrayCache(tmp_path / "cache")
    compute, calls = _compute(2.0)
    cache.get_or_compute("k" * 64, compute)
    entry = next((tmp_path / "cache" / "entries").rglob("*.bin"))
    entry.write_bytes(b"garbage")
    arrays, _ = cache.get_or_compute("k" * 64, compute)
    assert len(calls) == 2 and arrays["a"][0, 0] == 2.0


def test_file_digest_matches_hashlib(tmp_path):
    import hashlib

    src = tmp_path / "big.bin"
    data = os.urandom(3 << 20)
    src.write_bytes(data)
    assert file_digest(src) == hashlib.sha256(data).hexdigest()


def test_pack_round_trip_keeps_dtypes_shapes_and_is_writable():
    from medseg_weak.data.cache import pack, unpack

    arrays = {
        "f": np.arange(12, dtype=np.float32).reshape(3, 4),
        "b": np.array([[True, False]]),
        "u": np.arange(6, dtype=np.uint16).reshape(1, 2, 3),
        "empty": np.zeros((0, 2), np.uint8),
    }
    out, meta = unpack(pack(arrays, {"crop_box": [1, 2, 3, 4]}))
    assert meta == {"crop_box": [1, 2, 3, 4]}
    for name, array in arrays.items():
        np.testing.assert_array_equal(out[name], array)
        assert out[name].dtype == array.dtype and out[name].flags.writeable


def _age(path, seconds=3600):
    """Give ``path`` an mtime well in the past: a file written long before the cache saw it (not racy)."""
    st = os.stat(path)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns - seconds * 10**9))
    return os.stat(path).st_mtime_ns


def test_rewrite_with_same_size_and_restored_mtime_is_recomputed(tmp_path):
    """What ``cp -p``, ``rsync -t`` and ``tar -x`` do: new bytes, same size, the old mtime put back."""
    src = tmp_path / "img.bin"
    src.write_bytes(b"pixels-1")
    mtime = _age(src)
    before = ArrayCache(tmp_path / "cache").key([src], {})
    src.write_bytes(b"pixels-2")
    os.utime(src, ns=(mtime, mtime))
    assert os.stat(src).st_size == 8 and os.stat(src).st_mtime_ns == mtime
    assert ArrayCache(tmp_path / "cache").key([src], {}) != before  # a new process: the on-disk index
    cache = ArrayCache(tmp_path / "cache")
    first = cache.key([src], {})
    src.write_bytes(b"pixels-3")
    os.utime(src, ns=(mtime, mtime))
    assert cache.key([src], {}) != first  # the same process: the in-memory index


def test_replaced_file_with_same_stat_times_is_recomputed(tmp_path):
    """A file replaced by another (new inode: ``tar -x``, an editor's save) with identical times and size."""
    src, other = tmp_path / "img.bin", tmp_path / "other.bin"
    src.write_bytes(b"pixels-1")
    other.write_bytes(b"pixels-2")
    mtime = _age(src)
    os.utime(other, ns=(mtime, mtime))
    cache = ArrayCache(tmp_path / "cache")
    before = cache.key([src], {})
    os.replace(other, src)
    assert cache.key([src], {}) != before


def test_racy_entry_is_hashed_again(tmp_path, monkeypatch):
    """An entry recorded in the tick of the file's mtime may predate a same-tick rewrite: never trusted."""
    import medseg_weak.data.cache as cache_mod

    src = tmp_path / "img.bin"
    src.write_bytes(b"pixels")
    future = os.stat(src).st_mtime_ns + 3600 * 10**9  # mtime >= the index entry's: racy, like git's index
    os.utime(src, ns=(future, future))
    calls = []
    real = cache_mod.file_digest
    monkeypatch.setattr(cache_mod, "file_digest", lambda path: calls.append(path) or real(path))
    cache = ArrayCache(tmp_path / "cache")
    for _ in range(3):
        cache.key([src], {})
    ArrayCache(tmp_path / "cache").key([src], {})
    assert len(calls) == 4
    _age(src, 2 * 3600)  # once the file is older than its entry, the entry is trusted
    cache.key([src], {})
    cache.key([src], {})
    ArrayCache(tmp_path / "cache").key([src], {})
    assert len(calls) == 5
