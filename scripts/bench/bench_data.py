"""Benchmark the data layer: uncached vs cached epochs, and one full-size mammogram.

Side by side in one run:
  * uncached epoch: decode DICOM + preprocess every image (the naive path);
  * MONAI PersistentDataset epoch (warm), the library path, for reference;
  * our ArrayCache epoch (warm);
  * decode + preprocess of one full-size (about 4,500 x 3,000, 16-bit) synthetic mammogram.
Ends with one JSON line of the figures.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from medseg_weak.config import SynthConfig
from medseg_weak.data.cache import ArrayCache
from medseg_weak.data.dataset import PreprocessedDataset, preprocess_record
from medseg_weak.data.io import read_image
from medseg_weak.data.manifest import load_manifest
from medseg_weak.data.preprocess import preprocess_mammogram
from medseg_weak.data.synthetic import generate


def epoch(dataset) -> float:
    start = time.perf_counter()
    for i in range(len(dataset)):
        dataset[i]
    return time.perf_counter() - start


def monai_epoch_times(manifest, size: int, cache_dir: Path) -> tuple[float, float]:
    from monai.data import PersistentDataset
    from monai.transforms import Transform

    records = list(manifest.records)

    class LoadPreprocess(Transform):  # PersistentDataset caches only MONAI Transforms (not plain callables)
        def __call__(self, index: int) -> dict:
            arrays, _ = preprocess_record(manifest, records[int(index)], "mammo", size)
            return arrays

    ds = PersistentDataset(data=list(range(len(records))), transform=LoadPreprocess(), cache_dir=cache_dir)
    return epoch(ds), min(epoch(ds) for _ in range(3))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n-per-hospital", type=int, default=32)
    parser.add_argument("--height", type=int, default=384)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--full-height", type=int, default=4500)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        cfg = SynthConfig(kind="mammo", n_per_hospital=args.n_per_hospital, hospitals=4, height=args.height)
        manifest = load_manifest(generate(tmp / "data", cfg, seed=0))
        n = len(manifest)

        uncached = epoch(PreprocessedDataset(manifest, "mammo", args.size, cache=None))
        cached = PreprocessedDataset(manifest, "mammo", args.size, cache=ArrayCache(tmp / "cache"))
        cold = epoch(cached)
        warm = min(epoch(cached) for _ in range(3))
        monai_cold, monai_warm = monai_epoch_times(manifest, args.size, tmp / "monai")

        full = generate(
            tmp / "full", SynthConfig(kind="mammo", n_per_hospital=1, hospitals=1, height=args.full_height)
        )
        full_path = load_manifest(full).image_path(load_manifest(full).records[0])
        decode_times, pre_times = [], []
        for _ in range(3):
            t0 = time.perf_counter()
            image = read_image(full_path)
            t1 = time.perf_counter()
            preprocess_mammogram(image, 512)
            t2 = time.perf_counter()
            decode_times.append(t1 - t0)
            pre_times.append(t2 - t1)

    figures = {
        "images": n,
        "uncached_epoch_s": round(uncached, 3),
        "cold_cache_epoch_s": round(cold, 3),
        "warm_cache_epoch_s": round(warm, 4),
        "monai_persistent_cold_s": round(monai_cold, 3),
        "monai_persistent_warm_s": round(monai_warm, 4),
        "speedup_cached_vs_uncached": round(uncached / warm, 1),
        "speedup_cached_vs_monai_persistent": round(monai_warm / warm, 2),
        "full_size_shape": list(image.pixels.shape),
        "full_size_decode_s": round(statistics.median(decode_times), 3),
        "full_size_preprocess_s": round(statistics.median(pre_times), 3),
    }
    print(f"{n} images at {args.height} px -> {args.size} px")
    print(f"uncached epoch      {uncached:8.3f} s   (decode + preprocess every image)")
    print(f"cache, first epoch  {cold:8.3f} s   (fills the cache)")
    print(f"cache, warm epoch   {warm:8.4f} s   -> {uncached / warm:.1f}x faster than uncached")
    print(
        f"MONAI Persistent    {monai_warm:8.4f} s warm ({monai_cold:.3f} s cold) "
        f"-> ours {monai_warm / warm:.2f}x faster"
    )
    print(
        f"full-size {image.pixels.shape} 16-bit: decode {figures['full_size_decode_s']} s, "
        f"preprocess {figures['full_size_preprocess_s']} s"
    )
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
