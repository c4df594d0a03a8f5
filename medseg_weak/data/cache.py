"""On-disk cache of decoded + preprocessed arrays, keyed by file content and preprocessing config.

Decoding a DICOM and finding the breast costs far more than reading a small cache entry; after the
first epoch no DICOM is decoded again. Keys hash the *content* (not the path or mtime), so a file
replaced in place is recomputed, and a renamed copy reuses its entry. Hashing content on every access
would re-read every file, so a stat index remembers the hash of files that have not changed since they
were last hashed, with git's index rules:

* the stat key is (size, mtime_ns, ctime_ns, inode), not (size, mtime): ``cp -p``, ``rsync -t`` and
  ``tar -x`` write new bytes and put the old mtime back, but they cannot put back the ctime (the kernel
  sets it on every write or ``utime``), and a replaced file has a new inode;
* an entry is "racy" when the file's mtime is not older than the entry itself: the file may have been
  rewritten within the same timestamp tick after it was hashed, leaving every stat field unchanged.
  Such an entry is never trusted; the file is hashed again until its mtime predates its entry. The
  entry's age is the mtime of the entry's own file (as git uses the index file's), so both times come
  from the same filesystem clock: ``time.time_ns()`` runs ahead of the coarse clock that stamps files.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from medseg_weak.io_utils import atomic_write_bytes, atomic_write_text

CACHE_FORMAT = 1  # bump when the stored layout changes, to invalidate old entries


def file_digest(path: Path) -> str:
    """sha256 of a file's bytes, streamed so that large DICOMs do not need to fit in memory twice."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def config_digest(config: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:16]


StatKey = tuple[str, int, int, int, int]  # path, size, mtime_ns, ctime_ns, inode


def stat_key(path: Path) -> tuple[StatKey, int]:
    """The stat index key of ``path`` and its mtime_ns (which decides whether an entry is racy)."""
    st = os.stat(path)
    return (os.path.abspath(path), st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino), st.st_mtime_ns


class ArrayCache:
    """A folder of entries, each holding arrays plus a small JSON-able ``meta`` dict."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.hits = 0
        self.misses = 0
        self._digests: dict[StatKey, str] = {}  # only entries that are not racy

    def content_digest(self, path: Path) -> str:
        """Content hash of ``path``, reusing the stat index while the file's stat key is unchanged."""
        key, mtime_ns = stat_key(path)
        if key in self._digests:
            return self._digests[key]
        index = self.root / "stat" / (hashlib.sha1(key[0].encode()).hexdigest() + ".json")
        try:
            with open(index, "rb") as f:
                recorded_ns = os.fstat(f.fileno()).st_mtime_ns
                entry = json.loads(f.read())
            if tuple(entry["stat"]) == key[1:] and mtime_ns < recorded_ns:
                self._digests[key] = entry["sha256"]
                return entry["sha256"]
        except (OSError, ValueError, KeyError, TypeError):
            pass
        digest = file_digest(path)
        atomic_write_text(index, json.dumps({"stat": key[1:], "sha256": digest}))
        if mtime_ns < os.stat(index).st_mtime_ns:
            self._digests[key] = digest
        return digest

    def key(self, files: list[Path | None], config: Mapping[str, Any]) -> str:
        parts = [self.content_digest(f) if f is not None else "-" for f in files]
        parts.append(config_digest({**config, "_format": CACHE_FORMAT}))
        return hashlib.sha256("|".join(parts).encode()).hexdigest()

    def _path(self, key: str) -> Path:
        return self.root / "entries" / key[:2] / f"{key}.bin"

    def get_or_compute(
        self, key: str, compute: Callable[[], tuple[dict[str, np.ndarray], dict[str, Any]]]
    ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        path = self._path(key)
        if path.is_file():
            try:
                arrays, meta = unpack(path.read_bytes())
                self.hits += 1
                return arrays, meta
            except (OSError, ValueError, KeyError, TypeError):
                pass  # a damaged entry is recomputed and overwritten, never trusted
        self.misses += 1
        arrays, meta = compute()
        atomic_write_bytes(path, pack(arrays, meta))
        return arrays, meta


# Entry layout: MAGIC, 8-byte little-endian header length, JSON header, then the raw array bytes.
# Loading is one read plus zero-copy views; .npz (a zip of .npy files) spent most of a warm epoch
# parsing zip and .npy headers (measured in scripts/bench/bench_data.py).
MAGIC = b"MSWCACHE"


def pack(arrays: Mapping[str, np.ndarray], meta: Mapping[str, Any]) -> bytes:
    specs, blobs, offset = [], [], 0
    for name, array in arrays.items():
        data = np.ascontiguousarray(array).tobytes()
        specs.append({"name": name, "dtype": array.dtype.str, "shape": list(array.shape), "offset": offset})
        blobs.append(data)
        offset += len(data)
    header = json.dumps({"arrays": specs, "meta": meta}).encode()
    return b"".join([MAGIC, len(header).to_bytes(8, "little"), header, *blobs])


def unpack(data: bytes) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    if data[: len(MAGIC)] != MAGIC:
        raise ValueError("not a cache entry")
    start = len(MAGIC) + 8
    size = int.from_bytes(data[len(MAGIC) : start], "little")
    header = json.loads(data[start : start + size])
    body = bytearray(data[start + size :])  # writable, so torch.from_numpy needs no copy or warning
    arrays = {}
    for spec in header["arrays"]:
        dtype = np.dtype(spec["dtype"])
        count = int(np.prod(spec["shape"], dtype=np.int64))
        arrays[spec["name"]] = np.frombuffer(body, dtype, count, spec["offset"]).reshape(spec["shape"])
    return arrays, header["meta"]
