"""Where an interpretability report's time goes, against the floor of the model's own forwards.

For a trained checkpoint (any kind `predict` knows): ``interpret_classifier`` on ``--images`` random
images with (1) curves only, (2) curves + ROAD, (3) curves + sanity cascade, and (4) the same number of
plain batched no-grad forwards as the curves make (maps x (2 x steps + 2) x images). Last line: JSON.

    python scripts/bench/interpret_floor.py --checkpoint runs/demo/classifier/best.ckpt --size 96
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from medseg_weak.interpret.measure import DEFAULT_METHODS, interpret_classifier
from medseg_weak.quality.predict import load_grader


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--size", type=int, default=96)
    parser.add_argument("--images", type=int, default=16)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args()
    torch.manual_seed(0)
    grader = load_grader(args.checkpoint)
    model = grader.model
    x = torch.rand(args.images, grader.in_channels, args.size, args.size)
    labels = [grader.classes[0]] * args.images
    out = {}
    for name, kw in (
        ("curves", {"sanity": False, "road_percentiles": ()}),
        ("curves_road", {"sanity": False}),
        ("curves_sanity", {"road_percentiles": ()}),
    ):
        start = time.perf_counter()
        interpret_classifier(model, x, labels, steps=args.steps, batch_size=args.batch_size, **kw)
        out[name] = round(time.perf_counter() - start, 2)
    maps = len(DEFAULT_METHODS) + 2  # the methods and the random and centre baselines
    n = maps * (2 * args.steps + 2) * args.images
    start = time.perf_counter()
    with torch.no_grad():
        for i in range(0, n, args.batch_size):
            model(torch.rand(min(args.batch_size, n - i), *x.shape[1:]))
    out["floor_forwards"] = n
    out["floor"] = round(time.perf_counter() - start, 2)
    out["curves_over_floor"] = round(out["curves"] / out["floor"], 3)
    for key in ("curves", "curves_road", "curves_sanity", "floor"):
        print(f"{key}: {out[key]} s")
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
