"""Benchmark the interpretability metrics: ours against a per-step loop and pytorch-grad-cam's classes.

tiny_cnn (``Classifier.create("tiny_cnn", 1, 4)``, random weights, eval mode) at ``--size`` px on the
CPU with ``--threads`` intra-op threads. Side by side in one run, same inputs, values compared:

  (1) deletion curve, ``--curve-images`` images x ``--steps`` steps:
        loop    -- one image and one step at a time (one forward per perturbed image);
        ours    -- ``perturbation_curves``: every image x step of a chunk in one forward.
  (2) ROAD MoRF + LeRF averaged over ``--percentiles``:
        library -- pytorch-grad-cam's ``ROADMostRelevantFirstAverage`` / ``ROADLeastRelevantFirstAverage``
                   (one forward per percentile);
        ours    -- ``road_scores`` (the library's imputer, all percentiles scored in batched forwards).
  (3) confidence change: pytorch-grad-cam's ``CamMultImageConfidenceChange`` vs ``confidence_change``.
  (4) the whole report: ``interpret_classifier`` + ``write_interpret_outputs`` for ``--images`` images x
      the five default methods (+ random and centre baselines) x ``--steps`` steps, sanity checks on.

Quantus is not compared: ``pip install quantus`` would add opencv-python next to the project's
opencv-python-headless (two packages writing the same ``cv2`` module) and pandas into the shared
venv. The machine is shared with other engineers: times are medians of ``--repeats`` round-robin
runs, and the load average is printed. Ends with one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from pytorch_grad_cam.metrics.cam_mult_image import CamMultImageConfidenceChange
from pytorch_grad_cam.metrics.road import ROADLeastRelevantFirstAverage, ROADMostRelevantFirstAverage
from pytorch_grad_cam.utils.model_targets import ClassifierOutputSoftmaxTarget

from medseg_weak.classify.model import Classifier
from medseg_weak.explain.cams import compute_cams
from medseg_weak.interpret import interpret_classifier, write_interpret_outputs
from medseg_weak.interpret.faithfulness import REPLACEMENTS, perturbation_curves, step_counts
from medseg_weak.interpret.faithfulness import confidence_change as our_confidence_change
from medseg_weak.interpret.road import road_scores


def timed(fns: dict[str, Callable[[], object]], repeats: int) -> tuple[dict[str, float], dict[str, object]]:
    """Median wall time per function (round robin, so load spikes hit all alike) and the last outputs."""
    samples: dict[str, list[float]] = {name: [] for name in fns}
    outputs: dict[str, object] = {}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            outputs[name] = fn()
            samples[name].append(time.perf_counter() - start)
    return {name: statistics.median(v) for name, v in samples.items()}, outputs


def loop_deletion(
    model: torch.nn.Module, images: torch.Tensor, maps: torch.Tensor, ids: torch.Tensor, steps: int
) -> torch.Tensor:
    """The naive reference: one image, one step, one forward."""
    out = torch.empty(len(images), steps + 1)
    for i in range(len(images)):
        x = images[i : i + 1]
        base = REPLACEMENTS.get("blur")(x).flatten(2)
        order = torch.argsort(-maps[i].flatten(), stable=True)
        for s, k in enumerate(step_counts(maps[i].numel(), steps).tolist()):
            perturbed = x.clone().flatten(2)
            perturbed[..., order[:k]] = base[..., order[:k]]
            with torch.no_grad():
                out[i, s] = model(perturbed.reshape_as(x)).softmax(1)[0, ids[i]]
    return out


def images_masks_regions(n: int, size: int, seed: int) -> tuple[torch.Tensor, np.ndarray, np.ndarray]:
    g = torch.Generator().manual_seed(seed)
    images = torch.rand(n, 1, size, size, generator=g)
    yy, xx = np.mgrid[:size, :size] / (size - 1)
    regions = np.broadcast_to(
        ((yy - 0.5) / 0.45) ** 2 + ((xx - 0.4) / 0.35) ** 2 <= 1, (n, size, size)
    ).copy()
    centres = np.random.default_rng(seed).uniform(0.3, 0.6, size=(n, 2))
    masks = np.stack([(yy - cy) ** 2 + (xx - cx) ** 2 <= 0.12**2 for cy, cx in centres])
    return images, masks, regions


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size", type=int, default=96)
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--curve-images", type=int, default=8)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--percentiles", type=int, nargs="+", default=[10, 30, 50, 70, 90])
    parser.add_argument("--report-percentiles", type=int, nargs="*", default=[10, 30, 50, 70, 90])
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-report", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    model = Classifier.create("tiny_cnn", 1, 4).eval()
    images, masks, regions = images_masks_regions(args.images, args.size, args.seed)
    few = images[: args.curve_images]
    with torch.no_grad():
        ids = model(few).argmax(1)
    maps = compute_cams(model, few, targets=ids)
    results: dict[str, object] = {}

    # (1) deletion curve
    times, out = timed(
        {
            "loop": lambda: loop_deletion(model, few, maps, ids, args.steps),
            "ours_b21": lambda: perturbation_curves(model, few, maps, ids, steps=args.steps, batch_size=21),
            "ours_b256": lambda: perturbation_curves(model, few, maps, ids, steps=args.steps, batch_size=256),
        },
        args.repeats,
    )
    diff = max(float((out["loop"] - out[k]).abs().max()) for k in ("ours_b21", "ours_b256"))
    results["deletion"] = {
        **_t(times),
        "loop_over_ours_b21": round(times["loop"] / times["ours_b21"], 2),
        "loop_over_ours_b256": round(times["loop"] / times["ours_b256"], 2),
        "max_abs_diff": diff,
    }
    loop, b21, b256 = times["loop"], times["ours_b21"], times["ours_b256"]
    print(
        f"deletion curve {len(few)} x {args.steps + 1}: loop {loop:.3f}s, ours {b21:.3f}s (21 per forward) / "
        f"{b256:.3f}s (256 per forward) -> {loop / b21:.2f}x / {loop / b256:.2f}x, max |diff| {diff:.2e}"
    )

    # (2) ROAD, same seed for the imputer's noise on both sides
    targets = [ClassifierOutputSoftmaxTarget(int(i)) for i in ids]
    cams_np = maps.numpy()

    def library_road() -> np.ndarray:
        torch.manual_seed(1)
        morf = ROADMostRelevantFirstAverage(args.percentiles)(few, cams_np, targets, model)
        lerf = ROADLeastRelevantFirstAverage(args.percentiles)(few, cams_np, targets, model)
        return np.stack([morf, lerf])

    def our_road() -> np.ndarray:
        torch.manual_seed(1)
        morf = road_scores(model, few, maps, ids, "morf", args.percentiles)
        lerf = road_scores(model, few, maps, ids, "lerf", args.percentiles)
        return np.stack([morf.mean(1).numpy(), lerf.mean(1).numpy()])

    times, out = timed({"library": library_road, "ours": our_road}, args.repeats)
    diff = float(np.abs(out["library"] - out["ours"]).max())
    results["road"] = {
        **_t(times),
        "library_over_ours": round(times["library"] / times["ours"], 2),
        "max_abs_diff": diff,
    }
    print(
        f"ROAD MoRF+LeRF x {len(args.percentiles)} percentiles: library {times['library']:.3f}s "
        f"ours {times['ours']:.3f}s -> {times['library'] / times['ours']:.2f}x, max |diff| {diff:.2e}"
    )

    # (3) confidence change
    times, out = timed(
        {
            "library": lambda: CamMultImageConfidenceChange()(few, cams_np, targets, model),
            "ours": lambda: our_confidence_change(model, few, maps, ids).numpy(),
        },
        args.repeats,
    )
    diff = float(np.abs(out["library"] - out["ours"]).max())
    results["confidence_change"] = {
        **_t(times), "library_over_ours": round(times["library"] / times["ours"], 2), "max_abs_diff": diff
    }  # fmt: skip
    print(f"confidence change: library {times['library']:.4f}s ours {times['ours']:.4f}s "
          f"-> {times['library'] / times['ours']:.2f}x, max |diff| {diff:.2e}")  # fmt: skip

    # (4) the whole report
    if not args.skip_report:
        labels = ["ABCD"[i % 4] for i in range(args.images)]
        domains = [f"H{i % 3}" for i in range(args.images)]
        start = time.perf_counter()
        result = interpret_classifier(
            model, images, labels, masks=masks, regions=regions, domains=domains, steps=args.steps,
            road_percentiles=args.report_percentiles, seed=args.seed, batch_size=args.batch_size,
        )  # fmt: skip
        measured = time.perf_counter() - start
        with tempfile.TemporaryDirectory() as tmp:
            start = time.perf_counter()
            files = write_interpret_outputs(result, Path(tmp))
            written = time.perf_counter() - start
        total = measured + written
        results["report"] = {
            "images": args.images,
            "methods": len(result.methods),
            "steps": args.steps,
            "road_percentiles": args.report_percentiles,
            "measure_s": round(measured, 2),
            "write_s": round(written, 2),
            "total_s": round(total, 2),
            "files": len(files),
            "under_2_minutes": total < 120,
            "flagged": result.flagged(),
            "sanity_failures": result.sanity_failures(),
        }
        print(f"report {args.images} images x {len(result.methods)} maps x {args.steps} steps: "
              f"metrics {measured:.1f}s + files {written:.1f}s = {total:.1f}s")  # fmt: skip

    results["config"] = {k: v for k, v in vars(args).items()}
    results["torch"] = torch.__version__
    results["load_average"] = [round(x, 2) for x in os.getloadavg()]
    results["git"] = _git_head()
    print(json.dumps(results))


def _t(times: dict[str, float]) -> dict[str, float]:
    return {f"{k}_s": round(v, 4) for k, v in times.items()}


def _git_head() -> str:
    try:
        return subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


if __name__ == "__main__":
    main()
