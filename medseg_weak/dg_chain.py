"""`medseg-weak dg-benchmark --chain`: the whole weak-supervision chain per held-out hospital x recipe x seed.

The classifier-only benchmark says which recipe generalises as a classifier, but users pick a recipe
by the segmenter it leads to on a hospital it never saw. Each (hospital, recipe, seed) here is a
complete pipeline run in ``<run>/chain/<hospital>/<recipe>/seed<k>/`` (classifier -> CAMs -> UNet on
CAMs -> oracle -> eval; the run's data and cache shared), so an interrupted benchmark rerun with the
same command skips finished stages and resumes the one it was in.

The oracle (a UNet on the true masks) does not depend on the gradient rule: it is trained once per
(hospital, seed, oracle config) - once without and once with the segmenter's augmentation - and the
other recipes' runs start from a copy of that finished stage (its fingerprint matches, so the runner
finds it complete).

``chain/table_dice.{csv,md,png}``: mean ± SE over seeds of each run's mean held-out Dice, rows =
``<recipe> cam`` / ``<recipe> unet_cam`` / ``<recipe> unet_truth`` (its oracle: the same model for
recipes that differ only in the rule), columns = held-out hospitals and their average;
``chain/summary.md`` adds each recipe's paired gain over ERM in UNet-on-CAM and CAM Dice (the seeds'
spread of a whole chain is large, the same seed's difference much less so) and the held-out
classification metrics of each run's classifier.
"""

from __future__ import annotations

import csv
import json
import logging
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from medseg_weak.classify.dg_benchmark import (
    METRICS,
    check_arguments,
    held_out_domains,
    paired_section,
    parse_recipes,
    run_config,
)
from medseg_weak.config import Config
from medseg_weak.data.kinds import get_kind
from medseg_weak.errors import ConfigError, InputError
from medseg_weak.io_utils import atomic_write_text
from medseg_weak.lock import RunLock
from medseg_weak.pipeline import data_summary, fold_config, pipeline_plan, prepare_config
from medseg_weak.rundir import RunDir
from medseg_weak.segment.stage import SegmenterStage
from medseg_weak.stages import Runner
from medseg_weak.tables import Table

log = logging.getLogger(__name__)
CHAIN = "chain"
SEGMENTERS = ("cam", "unet_cam", "unet_truth")  # unet_truth: the oracle, the ceiling of each recipe


def chain_dir(run: RunDir, domain: str, recipe: str, seed: int) -> RunDir:
    return RunDir(run.stage(CHAIN) / domain / recipe / f"seed{seed}")


def run_chain_benchmark(
    cfg: Config,
    run: RunDir,
    recipes: Sequence[str],
    seeds: int,
    domains: Sequence[str] | None = None,
    progress: bool = True,
) -> Table:
    """Run every (held-out hospital, recipe, seed) chain; write results.jsonl and the tables; return
    the Dice table."""
    cfg = prepare_config(cfg)
    check_arguments(recipes, seeds, "training_domain")
    chosen = parse_recipes(recipes)
    if get_kind(cfg.data.kind).chain != "segment":
        raise ConfigError(f"--chain runs the segmentation chain; 'data.kind' '{cfg.data.kind}' has none")
    summary = data_summary(cfg)
    if not summary.has_truth:
        raise InputError(summary.source, "--chain scores segmenters: it needs a mask_path for every image")
    domains = held_out_domains(domains, summary.domains)
    for domain in domains:  # every run's plan, before the first one trains
        for recipe in chosen:
            c = run_config(cfg, recipe, domain, cfg.seed)
            Runner.validate(pipeline_plan(c, True)[:-1], c, summary)
    with RunLock(run.root):
        from medseg_weak.data.prepare import resolve_manifest, split_manifest

        run.write_provenance(cfg)
        full = resolve_manifest(cfg, run)
        outcomes = []
        for domain in domains:
            for seed in range(cfg.seed, cfg.seed + seeds):
                oracles: dict[str, Path] = {}  # oracle fingerprint -> its first finished stage
                for recipe in chosen:
                    c = fold_config(run_config(cfg, recipe, domain, seed), run, full, domain)
                    fold = chain_dir(run, domain, recipe.name, seed)
                    key = json.dumps(SegmenterStage("truth").fingerprint(c), sort_keys=True)
                    if key in oracles and not fold.stage("oracle").exists():
                        shutil.copytree(oracles[key], fold.stage("oracle"))
                    log.info(
                        "dg-benchmark --chain: held-out %s, recipe %s, seed %d", domain, recipe.name, seed
                    )
                    fold.write_provenance(c)
                    stages = pipeline_plan(c, True)[:-1]  # the benchmark's tables replace the report
                    Runner(c, fold, progress=progress).execute(stages, split_manifest(c, full))
                    oracles.setdefault(key, fold.stage("oracle"))
                    outcomes.append(_outcome(fold, domain, recipe.name, seed))
    out = run.stage(CHAIN)
    atomic_write_text(out / "results.jsonl", "".join(json.dumps(o) + "\n" for o in outcomes))
    return write_chain_tables(out, outcomes)


def _outcome(fold: RunDir, domain: str, recipe: str, seed: int) -> dict[str, Any]:
    """One run's held-out scores: mean Dice per method and the classifier's held-out metrics."""
    dice: dict[str, list[float]] = {}
    with (fold.stage("eval") / "per_image.csv").open(newline="") as f:
        for row in csv.DictReader(f):
            if row["domain"] == domain and row["dice"] != "":
                dice.setdefault(row["method"], []).append(float(row["dice"]))
    test = json.loads((fold.stage("classifier") / "metrics.json").read_text())["test"]
    return {
        "test_domain": domain,
        "recipe": recipe,
        "seed": seed,
        "dice": {m: sum(v) / len(v) for m, v in dice.items()},
        "images": {m: len(v) for m, v in dice.items()},
        "classifier": {m: float(test.get(f"{domain}/{m}", test.get(m, float("nan")))) for m in METRICS},
    }


def write_chain_tables(out: Path, outcomes: Sequence[dict[str, Any]]) -> Table:
    values = []
    for o in outcomes:
        values += [
            (f"{o['recipe']} {m}", o["test_domain"], o["dice"][m]) for m in SEGMENTERS if m in o["dice"]
        ]
    dice = Table.from_values("held-out Dice", values)
    dice.write(out, "table_dice")
    sections = [f"### held-out Dice (mean over each run's held-out images)\n\n{dice.to_markdown()}"]
    for method in ("unet_cam", "cam"):  # what a user keeps, then its training labels
        gain = paired_section(outcomes, lambda o, m=method: o["dice"].get(m, float("nan")), f"{method} Dice")
        if gain is not None:
            gain[1].write(out, f"table_gain_{method}", plot=False)
            sections.append(gain[0])
    for metric in METRICS:
        table = Table.from_values(
            f"classifier {metric}",
            [(o["recipe"], o["test_domain"], o["classifier"][metric]) for o in outcomes],
        )
        table.write(out, f"table_classifier_{metric}", plot=False)
        sections.append(
            f"### held-out classifier {metric} (its own training-domain selection)\n\n{table.to_markdown()}"
        )
    atomic_write_text(out / "summary.md", "\n".join(sections))
    return dice
