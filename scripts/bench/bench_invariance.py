"""Benchmark measure_invariance: our one streaming pass against a plain forward and against tmeasures.

timm resnet18 (random weights, eval mode), ``--n`` images at ``--size`` px, the rotation set
(``--steps`` angles from -30 to 30 degrees), layers layer1..layer4 and global_pool, normalized
variance with ``average_feature_maps``. Timed, median of ``--repeats`` runs after ``--warmup``
(round robin, so load from other processes hits all alike):

  (a) floor      -- the same N x T images, already transformed, through ``model(x)`` under no_grad in
                    batches of ``--batch``: what any invariance measure must pay;
  (b) ours       -- ``measure_invariance(model, x, rotation, layers, "normalized_variance")``: transforms,
                    hooks and float64 running statistics included;
  (c) tmeasures  -- ``NormalizedVarianceInvariance(AverageFeatureMaps())`` on the same work, when installed.

Ratios ours / floor (goal <= 1.3x), tmeasures / floor and tmeasures / ours, for CPU time (the process's
user + system seconds over all threads) and wall time, plus the largest relative difference of the
per-layer values between the two libraries. On a machine shared with other jobs the CPU-time ratios are
the headline: their load stretches wall time at random. ``--threads`` (default 1) is also exported as
OMP_NUM_THREADS before torch starts, because tmeasures runs its forwards in worker threads, which do not
see ``torch.set_num_threads``; with 2 threads on 2 busy cores, OpenMP spin-waits made every CPU-time
figure several times larger and the comparison meaningless. Ends with one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable

import numpy as np
import timm
import torch

from medseg_weak.invariance import make_transformation_set, measure_invariance
from medseg_weak.invariance.result import layer_mean
from medseg_weak.invariance.tmeasures_bridge import tmeasures_available, tmeasures_per_unit

LAYERS = ["layer1", "layer2", "layer3", "layer4", "global_pool"]
CLOCKS = ("cpu", "wall")


def timed(
    fns: dict[str, Callable[[], object]], device: torch.device, warmup: int, repeats: int
) -> dict[str, dict[str, float]]:
    """``{clock: {name: median seconds}}``, the functions taking turns within each repeat."""

    def once(fn: Callable[[], object]) -> tuple[float, float]:
        cpu, wall = time.process_time(), time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.process_time() - cpu, time.perf_counter() - wall

    for _ in range(warmup):
        for fn in fns.values():
            once(fn)
    samples: dict[str, list[tuple[float, float]]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            samples[name].append(once(fn))
    return {
        clock: {name: statistics.median(s[i] for s in runs) for name, runs in samples.items()}
        for i, clock in enumerate(CLOCKS)
    }


def bench(model: torch.nn.Module, x: torch.Tensor, args: argparse.Namespace) -> dict[str, object]:
    ts = make_transformation_set("rotation", low=-30, high=30, steps=args.steps)
    batches = [t(x[s : s + args.batch]) for s in range(0, len(x), args.batch) for t in ts]
    results: dict[str, object] = {}

    def floor() -> None:
        with torch.no_grad():
            for b in batches:
                model(b)

    def ours() -> None:
        results["ours"] = measure_invariance(model, x, ts, LAYERS, "normalized_variance", args.batch)

    def theirs() -> None:
        results["tmeasures"] = tmeasures_per_unit(model, x, ts, LAYERS, "normalized_variance", args.batch)

    fns: dict[str, Callable[[], object]] = {"floor": floor, "ours": ours}
    if tmeasures_available() and not args.no_tmeasures:
        fns["tmeasures"] = theirs
    clocks = timed(fns, x.device, args.warmup, args.repeats)

    out: dict[str, object] = {}
    for clock, times in clocks.items():
        out.update({f"{name}_{clock}_s": round(v, 4) for name, v in times.items()})
        out[f"ours_over_floor_{clock}"] = round(times["ours"] / times["floor"], 3)
        if "tmeasures" in times:
            out[f"tmeasures_over_floor_{clock}"] = round(times["tmeasures"] / times["floor"], 3)
            out[f"tmeasures_over_ours_{clock}"] = round(times["tmeasures"] / times["ours"], 3)
    mine = results["ours"]
    out["per_layer_ours"] = {k: round(v, 6) for k, v in mine.per_layer.items()}
    if "tmeasures" in results:
        theirs_units = results["tmeasures"]
        theirs_layers = {k: layer_mean(v) for k, v in theirs_units.items()}
        out["max_rel_diff_per_layer"] = float(
            f"{max(abs(mine.per_layer[k] - theirs_layers[k]) / abs(theirs_layers[k]) for k in LAYERS):.3g}"
        )
        out["max_abs_diff_per_unit"] = float(
            f"{max(float(np.max(np.abs(mine.per_unit[k] - theirs_units[k]))) for k in LAYERS):.3g}"
        )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n", type=int, default=16)
    parser.add_argument("--steps", type=int, default=9)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu", help="cpu, cuda, or auto (cuda when available)")
    parser.add_argument("--no-tmeasures", action="store_true")
    args = parser.parse_args()
    if os.environ.get("OMP_NUM_THREADS") != str(args.threads):  # see the module docstring
        env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
        os.execve(sys.executable, [sys.executable, *sys.argv], env)

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    device = torch.device(
        ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    )
    model = timm.create_model("resnet18", pretrained=False, num_classes=4).eval().to(device)
    gen = torch.Generator().manual_seed(args.seed)
    x = torch.rand(args.n, 3, args.size, args.size, generator=gen).to(device)

    commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    report: dict[str, object] = {
        "model": "timm resnet18 (random weights)",
        "device": str(device) + (f" ({torch.cuda.get_device_name()})" if device.type == "cuda" else ""),
        "n": args.n,
        "transformations": f"rotation -30..30 in {args.steps} steps",
        "size": args.size,
        "batch": args.batch,
        "threads": args.threads,
        "warmup": args.warmup,
        "repeats": args.repeats,
        "seed": args.seed,
        "layers": LAYERS,
        "torch": torch.__version__,
        "commit": commit,
    }
    r = bench(model, x, args)
    report.update(r)

    print(f"{report['model']} on {report['device']}, {args.threads} thread(s): {args.n} images x")
    print(f"{args.steps} rotations at {args.size} px, batch {args.batch}, median of {args.repeats} runs")
    print(f"  {'':<10} {'cpu s':>9} {'wall s':>9}")
    for name in ("floor", "ours", "tmeasures"):
        if f"{name}_cpu_s" in r:
            print(f"  {name:<10} {r[f'{name}_cpu_s']:>9.3f} {r[f'{name}_wall_s']:>9.3f}")
    for ratio in ("ours_over_floor", "tmeasures_over_floor", "tmeasures_over_ours"):
        if f"{ratio}_cpu" in r:
            label = ratio.replace("_over_", " / ")
            print(f"  {label:<20} cpu {r[f'{ratio}_cpu']:.3f}x   wall {r[f'{ratio}_wall']:.3f}x")
    print("  goal: ours / floor <= 1.3x")
    if "max_rel_diff_per_layer" in r:
        print(
            "  largest relative difference of per-layer values vs tmeasures: "
            f"{r['max_rel_diff_per_layer']:.3g}"
        )
    print(json.dumps(report, separators=(",", ":")))


if __name__ == "__main__":
    main()
