"""Benchmark Grad-CAM: our fast path against pytorch-grad-cam and against a plain no-grad forward.

resnet18 (``Classifier.create("resnet18", 3, 4)``, random weights, eval mode), one batch of
``--batch`` images at ``--size`` px, on the CPU (``--threads`` intra-op threads) and, when CUDA is
available, on the GPU too (plus images/s at ``--gpu-size`` px). Timed, median of ``--repeats`` runs
after ``--warmup`` runs:

  (a) forward  -- ``model(x)`` under ``torch.no_grad()``: the floor any CAM method pays;
  (b) library  -- pytorch-grad-cam as its README uses it: ``with GradCAM(...) as cam: cam(x, targets)``
                  (forward with autograd, ``backward()`` through the whole network, numpy out);
  (c) ours     -- ``compute_cams(model, x, method="gradcam", targets=D)``: backbone under no_grad,
                  ``autograd.grad`` from the logits to the final feature map only, tensor out.

Ratios: ours / forward (goal <= 1.15x) and library / ours (goal >= 2.5x). Ends with one JSON line.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable

import torch
from pytorch_grad_cam import GradCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

from medseg_weak.classify.model import Classifier
from medseg_weak.explain.cams import compute_cams

DENSE_CLASS = 3  # the pipeline's use: the densest class's CAM for every image


def timed(
    fns: dict[str, Callable[[], object]], device: torch.device, warmup: int, repeats: int
) -> dict[str, float]:
    """Median wall time of each function in seconds.

    The functions take turns within each repeat (round robin), so load from other processes on a
    shared machine hits all of them alike instead of whichever block ran during a busy spell.
    CUDA work is synchronised before the clock stops.
    """

    def once(fn: Callable[[], object]) -> float:
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter() - start

    for _ in range(warmup):
        for fn in fns.values():
            once(fn)
    samples: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            samples[name].append(once(fn))
    return {name: statistics.median(values) for name, values in samples.items()}


def bench(model: Classifier, x: torch.Tensor, warmup: int, repeats: int) -> dict[str, float]:
    device = x.device
    targets = [ClassifierOutputTarget(DENSE_CLASS)] * len(x)

    def forward() -> torch.Tensor:
        with torch.no_grad():
            return model(x)

    def library() -> object:
        with GradCAM(model=model, target_layers=[model.cam_layer]) as cam:
            return cam(input_tensor=x, targets=targets)

    def ours() -> torch.Tensor:
        return compute_cams(model, x, method="gradcam", targets=DENSE_CLASS, batch_size=len(x))

    times = timed({"forward": forward, "library": library, "ours": ours}, device, warmup, repeats)
    model.zero_grad(set_to_none=True)  # the library's backward() left parameter gradients behind
    return {
        **{f"{k}_s": round(v, 4) for k, v in times.items()},
        "ours_over_forward": round(times["ours"] / times["forward"], 3),
        "library_over_ours": round(times["library"] / times["ours"], 3),
        "images_per_s_ours": round(len(x) / times["ours"], 1),
        "images_per_s_library": round(len(x) / times["library"], 1),
    }


def row(label: str, r: dict[str, float]) -> str:
    return (
        f"{label:<22} {r['forward_s']:>10.4f} {r['library_s']:>10.4f} {r['ours_s']:>10.4f} "
        f"{r['ours_over_forward']:>11.3f}x {r['library_over_ours']:>11.3f}x {r['images_per_s_ours']:>9.1f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--gpu-size", type=int, default=512)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    model = Classifier.create("resnet18", 3, 4).eval()
    x = torch.randn(args.batch, 3, args.size, args.size)

    report: dict[str, object] = {
        "model": "resnet18",
        "batch": args.batch,
        "size": args.size,
        "threads": args.threads,
        "repeats": args.repeats,
        "torch": torch.__version__,
    }
    results = {"cpu": bench(model, x, args.warmup, args.repeats)}
    if torch.cuda.is_available():
        gpu_model = model.cuda()
        results["cuda"] = bench(gpu_model, x.cuda(), args.warmup, args.repeats)
        big = torch.randn(args.batch, 3, args.gpu_size, args.gpu_size, device="cuda")
        results[f"cuda_{args.gpu_size}px"] = bench(gpu_model, big, args.warmup, args.repeats)
        report["gpu"] = torch.cuda.get_device_name()
    report.update(results)

    print(f"resnet18, batch {args.batch}, median of {args.repeats} after {args.warmup} warm-up runs")
    heads = ("forward s", "library s", "ours s")
    print(
        f"{'device / size':<22} "
        + " ".join(f"{h:>10}" for h in heads)
        + f" {'ours/fwd':>12} {'lib/ours':>12} {'img/s':>9}"
    )
    for name, r in results.items():
        label = f"{name} {args.size}px" if name in ("cpu", "cuda") else name
        print(row(label, r))
    print("goals: ours/forward <= 1.15x, library/ours >= 2.5x")
    print(json.dumps(report, separators=(",", ":")))


if __name__ == "__main__":
    main()
