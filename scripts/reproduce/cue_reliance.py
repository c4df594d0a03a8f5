"""Does a recipe make the classifier ignore the shortcut? Counterfactual evidence for the shared-marker
benchmark (issue 15), read from a finished `dg-benchmark` run.

The benchmark is drawn twice more with `synth.force_cue` on and off: every image exactly as drawn, with
and without the marker. For each (held-out hospital, recipe, seed) classifier (its best checkpoint,
training-domain selection) on the held-out hospital's images:

* reliance = mean over images of P(densest class | marker on) - P(... | marker off), times the sign of the
  training hospitals' majority (+1: the marker goes with dense breasts): > 0 means the model follows
  the training majority's shortcut, which is wrong on the held-out hospital; 0 = ignores the marker.

And the gradient conflict that gradient agreement is meant to resolve, per training hospital: the
derivative of the hospital's loss with respect to the marker's brightness (the input gradient summed
over each image's marker pixels, mean over the images that carry the marker), for an untrained ERM
model and the trained one. Hospitals whose cue sign differs should disagree in its sign.

    python scripts/reproduce/cue_reliance.py [--run runs/dg_shared]
Writes docs/results/<name>.{md,csv} (default cue_reliance).
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import io
import json
import time
from pathlib import Path

import numpy as np
import torch
from _common import RESULTS, ROOT, provenance

from medseg_weak.classify.module import ClassifierModule
from medseg_weak.config import load_config
from medseg_weak.data.cache import ArrayCache
from medseg_weak.data.datamodule import restrict_classes
from medseg_weak.data.dataset import PreprocessedDataset
from medseg_weak.data.manifest import load_manifest
from medseg_weak.data.synthetic import generate
from medseg_weak.data.synthetic.cue import resolve_cue_signs
from medseg_weak.data.synthetic.mammo import mammo_truths
from medseg_weak.quality.predict import predict
from medseg_weak.tables import Table


def counterfactual_sets(cfg, work: Path) -> dict[str, object]:
    sets = {}
    for state in ("on", "off"):
        synth = dataclasses.replace(cfg.synth, force_cue=state)
        path = generate(work / state, synth, seed=cfg.seed)
        sets[state] = restrict_classes(load_manifest(path), cfg.classifier.classes)
    return sets


def marker_gradients(module, dataset_on, dataset_off, indices) -> list[float]:
    """Per image: d loss / d (marker brightness) = the input gradient summed over its marker pixels."""
    net = module.model.eval()
    out = []
    for i in indices:
        on, off = dataset_on[i], dataset_off[i]
        marker = (on["image"] != off["image"]).float()
        x = on["image"][None].clone().requires_grad_(True)
        loss = torch.nn.functional.cross_entropy(net(x), torch.tensor([on["label"]]))
        (grad,) = torch.autograd.grad(loss, x)
        out.append(float((grad[0] * marker).sum()))
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", type=Path, default=Path("runs/dg_shared"))
    p.add_argument("--name", default="cue_reliance", help="results file stem under docs/results/")
    args = p.parse_args()
    start = time.time()
    run = ROOT / args.run
    cfg = load_config(run / "config.yaml")
    work = run / "cue"
    sets = counterfactual_sets(cfg, work)
    classes = cfg.classifier.classes or tuple(sets["on"].labels)
    dense = len(classes) - 1  # the densest class the classifier tells apart (D, or C for B vs C)
    domains = sorted({r.domain for r in sets["on"].records})
    signs = dict(zip(domains, resolve_cue_signs(cfg.synth.cue_sign, len(domains), cfg.synth.cue_mode)))
    caches = {state: ArrayCache(work / state / "cache") for state in sets}
    rows, values = [], []
    for ckpt in sorted((run / "dg").glob("*/*/seed*/best.ckpt")):
        domain, recipe, seed = ckpt.parts[-4], ckpt.parts[-3], int(ckpt.parts[-2][4:])
        majority = 1 if sum(signs[d] for d in domains if d != domain) > 0 else -1
        p_dense = {}
        for state, manifest in sets.items():
            held = manifest.subset(r for r in manifest.records if r.domain == domain)
            preds = predict(
                ckpt, held, image_size=cfg.data.image_size, cache_dir=caches[state].root, progress=False
            )
            p_dense[state] = preds.probs[:, dense]
        reliance = float(np.mean(p_dense["on"] - p_dense["off"])) * majority
        rows.append({"test_domain": domain, "recipe": recipe, "seed": seed, "reliance": reliance})
        values.append((recipe, domain, reliance))
    table = Table.from_values("cue reliance (toward the training majority)", values)

    # Gradient conflict on the marker, ERM, held out = the first hospital: per training hospital.
    held_out = domains[0]
    erm = run / "dg" / held_out / "erm" / f"seed{cfg.seed}"
    datasets = {
        state: PreprocessedDataset(manifest, cfg.data.kind, cfg.data.image_size, caches[state], domains)
        for state, manifest in sets.items()
    }
    drawn = load_manifest(run / "data" / "manifest.csv")  # the benchmark the classifiers trained on
    truths = mammo_truths(run / "data", drawn.records)
    conflict = []
    for when, module in (
        ("untrained", _untrained_module(erm / "best.ckpt", cfg.seed)),
        (
            "trained (best)",
            ClassifierModule.load_from_checkpoint(erm / "best.ckpt", map_location="cpu", weights_only=False),
        ),
    ):
        for domain in domains:
            if domain == held_out:
                continue
            indices = [i for i, r in enumerate(sets["on"].records) if r.domain == domain and truths[r.id].cue]
            grads = marker_gradients(module, datasets["on"], datasets["off"], indices)
            mean = float(np.mean(grads))
            se = float(np.std(grads, ddof=1) / np.sqrt(len(grads))) if len(grads) > 1 else 0.0
            conflict.append((when, domain, signs[domain], len(grads), mean, se))
    sizes, deltas = [], []
    for i in range(0, len(datasets["on"]), 8):  # every 8th image: how visible the marker is to the model
        diff = (datasets["on"][i]["image"] - datasets["off"][i]["image"]).abs()
        sizes.append(int((diff > 0).sum()))
        deltas.append(float(diff[diff > 0].mean()) if sizes[-1] else 0.0)
    marker_px, marker_delta = float(np.mean(sizes)), float(np.mean(deltas))
    seconds = time.time() - start

    lines = [
        "# Cue reliance and the gradient conflict on the shared marker",
        "",
        *provenance(seconds, str(args.run / "config.yaml"), cfg.seed),
        "",
        f"Reliance: mean over the held-out hospital's images of P({classes[dense]} | marker on)"
        f" - P({classes[dense]} | marker off) (the",
        "same images drawn with and without the marker, `synth.force_cue`), times the training majority's",
        "cue sign: > 0 = the model follows the training hospitals' shortcut, 0 = it ignores the marker.",
        "Mean ± SE over seeds; each classifier at its training-domain-selected checkpoint.",
        "",
        table.to_markdown(),
        "Marker gradient: d(loss)/d(marker brightness) per image (input gradient summed over the marker's",
        "pixels), mean ± SE over the images of each training hospital that carry the marker; ERM with",
        f"{held_out} held out, seed {cfg.seed}. Opposite cue signs should give opposite gradient signs.",
        "",
        "| model | hospital | cue sign | images | marker gradient |",
        "|---|---|---:|---:|---:|",
        *(f"| {w} | {d} | {s:+d} | {n} | {m:.2e} ± {e:.2e} |" for w, d, s, n, m, e in conflict),
        "",
        f"The marker in the model's input ({cfg.data.image_size} px): {marker_px:.1f} pixels per image on "
        f"average (min {min(sizes)}, max {max(sizes)}), mean brightness change {marker_delta:.3f} there.",
    ]
    (RESULTS / f"{args.name}.md").write_text("\n".join(lines) + "\n")
    buf = io.StringIO()
    writer = csv.DictWriter(buf, ["test_domain", "recipe", "seed", "reliance"], lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    (RESULTS / f"{args.name}.csv").write_text(buf.getvalue())
    print("\n".join(lines))
    overall = "average" if "average" in table.columns else table.columns[0]
    reliance = {r: round(table.cell(r, overall).mean, 4) for r in table.rows}
    print(json.dumps({"seconds": round(seconds), "reliance": reliance}))
    return 0


def _untrained_module(ckpt: Path, seed: int) -> ClassifierModule:
    """The ERM run's architecture with freshly drawn weights (seeded)."""
    import lightning as L

    trained = ClassifierModule.load_from_checkpoint(ckpt, map_location="cpu", weights_only=False)
    L.seed_everything(seed, verbose=False)
    return ClassifierModule(
        trained.hparams["config"], trained.labels, trained.hparams["domains"], seed
    ).eval()


if __name__ == "__main__":
    raise SystemExit(main())
