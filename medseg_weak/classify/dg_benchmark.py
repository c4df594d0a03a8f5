"""`medseg-weak dg-benchmark`: every held-out hospital x rule x seed, then one table per selection rule.

Runs live in ``<run>/dg/<hospital>/<rule>/seed<k>/`` as ordinary classifier stages, so an interrupted
benchmark rerun with the same command skips finished runs and resumes the one it was in.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Sequence
from pathlib import Path

from medseg_weak.classify.protocol import SELECTION, EpochRecorder, mark_oracle_slice, read_records, select
from medseg_weak.classify.stage import ClassifierStage, check_classifier
from medseg_weak.classify.surgery import RULES
from medseg_weak.classify.train import make_datamodule
from medseg_weak.config import Config
from medseg_weak.data.datamodule import restrict_classes
from medseg_weak.data.prepare import resolve_manifest, split_manifest
from medseg_weak.errors import ConfigError
from medseg_weak.io_utils import atomic_write_text
from medseg_weak.rundir import RunDir
from medseg_weak.stages import DataSummary, Runner
from medseg_weak.tables import Table

log = logging.getLogger(__name__)


def check_arguments(rules: Sequence[str], seeds: int, selection: str) -> None:
    """The benchmark's own arguments, checked before anything is written or trained."""
    for rule in rules:
        RULES.get(rule)  # lists the valid rules
    SELECTION.get(selection)
    if seeds < 1:
        raise ConfigError(f"--seeds must be at least 1; got {seeds}")


def run_config(cfg: Config, rule: str, test_domain: str, seed: int) -> Config:
    classifier = dataclasses.replace(
        cfg.classifier, surgery=dataclasses.replace(cfg.classifier.surgery, rule=rule)
    )
    data = dataclasses.replace(cfg.data, test_domain=test_domain)
    return dataclasses.replace(cfg, seed=seed, data=data, classifier=classifier)


def run_dg_benchmark(
    cfg: Config,
    run: RunDir,
    rules: Sequence[str],
    seeds: int,
    domains: Sequence[str] | None = None,
    selection: str = "training_domain",
    metric: str = "accuracy",
    progress: bool = True,
) -> Table:
    """Train every (held-out hospital, rule, seed); write results.jsonl and the tables; return the
    table of ``selection``."""
    check_arguments(rules, seeds, selection)
    # The data set is fixed by the base seed; trial seeds vary splits, initialisation and batches.
    base = restrict_classes(resolve_manifest(cfg, run), cfg.classifier.classes)
    domains = list(domains or base.domains)
    unknown = [d for d in domains if d not in base.domains]
    if unknown:
        raise ConfigError(
            f"--domains: {', '.join(unknown)} not in the manifest; valid: {', '.join(base.domains)}"
        )
    summary = DataSummary(str(base.source), tuple(base.labels), tuple(base.domains), False)
    for domain in domains:  # every run's config, before the first one trains
        for rule in rules:
            check_classifier(run_config(cfg, rule, domain, cfg.seed), summary)
    outcomes = []
    for domain in domains:
        for rule in rules:
            for seed in range(cfg.seed, cfg.seed + seeds):
                c = run_config(cfg, rule, domain, seed)
                manifest = mark_oracle_slice(split_manifest(c, base), domain, seed)
                stage = f"dg/{domain}/{rule}/seed{seed}"
                log.info("dg-benchmark: held-out %s, rule %s, seed %d", domain, rule, seed)
                data = make_datamodule(c, restrict_classes(manifest, c.classifier.classes), run)
                loaders = {
                    "oracle": data.loader(data.split("oracle"), False),
                    "heldout": data.loader(data.split("test"), False),
                }
                records_path = run.stage(stage) / "records.jsonl"
                recorder = EpochRecorder(records_path, loaders, manifest.domains)
                Runner(c, run, progress=progress).execute([ClassifierStage(stage, (recorder,))], manifest)
                records = read_records(records_path)
                for name in SELECTION.names():
                    chosen = select(records, name, metric)
                    outcomes.append(
                        {
                            "selection": name,
                            "rule": rule,
                            "test_domain": domain,
                            "seed": seed,
                            "epoch": chosen["epoch"],
                            "metric": metric,
                            "score": chosen["heldout"].get(metric, float("nan")),
                            "heldout": chosen["heldout"],
                        }
                    )
    out = run.stage("dg")
    atomic_write_text(out / "results.jsonl", "".join(json.dumps(o) + "\n" for o in outcomes))
    tables = {}
    for name in SELECTION.names():
        values = [(o["rule"], o["test_domain"], o["score"]) for o in outcomes if o["selection"] == name]
        tables[name] = Table.from_values(f"{metric}, selection: {name}", values)
        tables[name].write(out, f"table_{name}", plot=name == selection)
    return tables[selection]


def parse_list(text: str | None) -> list[str]:
    return [t.strip() for t in (text or "").split(",") if t.strip()]


def summary_path(run: RunDir, selection: str) -> Path:
    return run.stage("dg") / f"table_{selection}.md"
