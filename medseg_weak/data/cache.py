"""On-disk cache of decoded + preprocessed arrays, keyed by file content and preprocessing config.

Decoding a DICOM and finding the breast costs far more than reading a small cache entry; after the
first epoch no DICOM is decoded again. Keys hash the *content* (not the path or mtime), so a file
replaced in place is recomputed, and a renamed copy reuses its entry. Hashing content on every access
would re-read every file, so a stat index (size + mtime_ns -> content hash, like git's index)
remembers the hash of files that have not changed since they were last hashed.
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


class ArrayCache:
    """A folder of entries, each holding arrays plus a small JSON-able ``meta`` dict."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.hits = 0
        self.misses = 0
        self._digests: dict[tuple[str, int, int], str] = {}

    def content_digest(self, path: Path) -> str:
        """Content hash of ``path``, reusing the stat index when size and mtime are unchanged."""
        st = os.stat(path)
        stat_key = (os.path.abspath(path), st.st_size, st.st_mtime_ns)
        if stat_key in self._digests:
            return self._digests[stat_key]
        index = self.root / "stat" / (hashlib.sha1(stat_key[0].encode()).hexdigest() + ".json")
        try:
            entry = json.loads(index.read_text())
            if entry["size"] == st.st_size and entry["mtime_ns"] == st.st_mtime_ns:
                self._digests[stat_key] = entry["sha256"]
                return entry["sha256"]
        except (OSError, ValueError, KeyError):
            pass
        digest = file_digest(path)
        atomic_write_text(
            index, json.dumps({"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": digest})
        )
        self._digests[stat_key] = digest
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
