"""`medseg-weak dg-benchmark`: every held-out hospital x recipe x seed, then tables per selection rule.

A recipe is a gradient rule, scanner-shift augmentation, per-hospital BatchNorm statistics at test
time, or a combination: ``erm``, ``pcgrad``, ``aug``, ``aug+pcgrad``, ``aug+pcgrad+adabn``. A recipe
names everything it uses, so ``erm`` trains without augmentation and tests with the training
statistics even when the config sets otherwise, ``aug`` switches on the config's
``classifier.augment`` and ``segmenter.augment`` (or :data:`DEFAULT_AUGMENT` /
:data:`DEFAULT_SEGMENTER_AUGMENT` where the config sets none) and ``adabn`` sets
``classifier.test_bn: hospital``: the rows compare what their names say.

Runs live in ``<run>/dg/<hospital>/<recipe>/seed<k>/`` as ordinary classifier stages, so an interrupted
benchmark rerun with the same command skips finished runs and resumes the one it was in.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import logging
from collections.abc import Callable, Sequence
from pathlib import Path

from medseg_weak.classify.protocol import SELECTION, EpochRecorder, mark_oracle_slice, read_records, select
from medseg_weak.classify.stage import ClassifierStage, check_classifier
from medseg_weak.classify.surgery import RULES
from medseg_weak.classify.train import make_datamodule
from medseg_weak.config import AugmentConfig, Config, IntensityAugmentConfig
from medseg_weak.data.datamodule import restrict_classes
from medseg_weak.data.prepare import resolve_manifest, split_manifest
from medseg_weak.errors import ConfigError
from medseg_weak.io_utils import atomic_write_text
from medseg_weak.rundir import RunDir
from medseg_weak.stages import DataSummary, Runner
from medseg_weak.tables import Table

log = logging.getLogger(__name__)


AUG = "aug"
ADABN = "adabn"  # classifier.test_bn: hospital
# What ``aug`` means when the config sets no augmentation: intensity curves and another hospital's
# histogram or low-frequency amplitude spectrum, the project's tools against a new scanner.
DEFAULT_AUGMENT = AugmentConfig(gamma=0.3, contrast=0.3, histogram_matching=0.5, fourier_mixing=0.5)
# and for the segmenter of the whole chain (dg-benchmark --chain): intensity curves only
DEFAULT_SEGMENTER_AUGMENT = IntensityAugmentConfig(gamma=0.3, contrast=0.3)
METRICS = ("accuracy", "balanced_accuracy", "kappa", "auroc")  # summarised for every run
BASELINE = "erm"  # the recipe paired gains are measured against


@dataclasses.dataclass(frozen=True)
class Recipe:
    name: str
    rule: str
    augment: bool
    adapt_bn: bool = False  # per-hospital BatchNorm statistics at test and CAM time (AdaBN)

    @classmethod
    def parse(cls, text: str) -> Recipe:
        parts = [p.strip() for p in text.split("+")]
        rules = [p for p in parts if p not in (AUG, ADABN)]
        valid = f"a gradient rule ({', '.join(RULES.names())}), '{AUG}', '{ADABN}', or joined by '+'"
        for part in rules:
            if part not in RULES.names():
                raise ConfigError(f"recipe '{text}': '{part}' is not {valid}")
        if len(rules) > 1 or parts.count(AUG) > 1 or parts.count(ADABN) > 1:
            raise ConfigError(
                f"recipe '{text}': at most one rule, one '{AUG}' and one '{ADABN}'; use {valid}"
            )
        return cls(text, rules[0] if rules else "erm", AUG in parts, ADABN in parts)

    def augment_config(self, cfg: Config) -> AugmentConfig:
        if not self.augment:
            return AugmentConfig()
        return cfg.classifier.augment if cfg.classifier.augment.enabled else DEFAULT_AUGMENT

    def segmenter_augment_config(self, cfg: Config) -> IntensityAugmentConfig:
        if not self.augment:
            return IntensityAugmentConfig()
        return cfg.segmenter.augment if cfg.segmenter.augment.enabled else DEFAULT_SEGMENTER_AUGMENT


def parse_recipes(names: Sequence[str]) -> list[Recipe]:
    recipes = [Recipe.parse(n) for n in names]
    if not recipes:
        raise ConfigError("--recipes: name at least one recipe (e.g. erm,aug,pcgrad,aug+pcgrad)")
    return recipes


def check_arguments(recipes: Sequence[str], seeds: int, selection: str) -> None:
    """The benchmark's own arguments, checked before anything is written or trained."""
    parse_recipes(recipes)
    SELECTION.get(selection)
    if seeds < 1:
        raise ConfigError(f"--seeds must be at least 1; got {seeds}")


def held_out_domains(given: Sequence[str] | None, available: Sequence[str]) -> list[str]:
    """``--domains`` (default: every hospital in turn), each one checked against the data's."""
    domains = list(given or available)
    unknown = [d for d in domains if d not in available]
    if unknown:
        raise ConfigError(f"--domains: {', '.join(unknown)} not in the data; valid: {', '.join(available)}")
    return domains


def run_config(cfg: Config, recipe: Recipe, test_domain: str, seed: int) -> Config:
    classifier = dataclasses.replace(
        cfg.classifier,
        surgery=dataclasses.replace(cfg.classifier.surgery, rule=recipe.rule),
        augment=recipe.augment_config(cfg),
        test_bn="hospital" if recipe.adapt_bn else "training",
    )
    segmenter = dataclasses.replace(cfg.segmenter, augment=recipe.segmenter_augment_config(cfg))
    data = dataclasses.replace(cfg.data, test_domain=test_domain)
    return dataclasses.replace(cfg, seed=seed, data=data, classifier=classifier, segmenter=segmenter)


def run_dg_benchmark(
    cfg: Config,
    run: RunDir,
    recipes: Sequence[str],
    seeds: int,
    domains: Sequence[str] | None = None,
    selection: str = "training_domain",
    metric: str = "accuracy",
    progress: bool = True,
) -> Table:
    """Train every (held-out hospital, recipe, seed); write results.jsonl and the tables; return the
    table of ``metric`` under ``selection``."""
    check_arguments(recipes, seeds, selection)
    chosen_recipes = parse_recipes(recipes)
    # The data set is fixed by the base seed; trial seeds vary splits, initialisation and batches.
    base = restrict_classes(resolve_manifest(cfg, run), cfg.classifier.classes)
    domains = held_out_domains(domains, base.domains)
    summary = DataSummary(str(base.source), tuple(base.labels), tuple(base.domains), False)
    for domain in domains:  # every run's config, before the first one trains
        for recipe in chosen_recipes:
            check_classifier(run_config(cfg, recipe, domain, cfg.seed), summary)
    outcomes = []
    for domain in domains:
        for recipe in chosen_recipes:
            for seed in range(cfg.seed, cfg.seed + seeds):
                c = run_config(cfg, recipe, domain, seed)
                manifest = mark_oracle_slice(split_manifest(c, base), domain, seed)
                stage = run_stage(domain, recipe.name, seed)
                log.info("dg-benchmark: held-out %s, recipe %s, seed %d", domain, recipe.name, seed)
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
                            "recipe": recipe.name,
                            "rule": recipe.rule,
                            "augment": recipe.augment,
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
        values = [(o["recipe"], o["test_domain"], o["score"]) for o in outcomes if o["selection"] == name]
        tables[name] = Table.from_values(f"{metric}, selection: {name}", values)
        tables[name].write(out, f"table_{name}", plot=name == selection)
    write_summary(out, outcomes, selection)
    write_conflicts(out, run, outcomes)
    return tables[selection]


def write_summary(out: Path, outcomes: Sequence[dict], first: str = "training_domain") -> None:
    """``summary.md`` / ``summary.csv``: every selection rule (``first`` first) x metric of
    :data:`METRICS`, recipes x held-out hospitals, mean ± SE over seeds (the CSV in long form)."""
    sections, rows = [], []
    for name in sorted(SELECTION.names(), key=lambda n: n != first):
        for metric in METRICS:
            values = [
                (o["recipe"], o["test_domain"], o["heldout"].get(metric, float("nan")))
                for o in outcomes
                if o["selection"] == name
            ]
            table = Table.from_values(f"{metric}, selection: {name}", values)
            sections.append(f"### {metric}, selection: {name}\n\n{table.to_markdown()}")
            rows += _long_rows(table, name, metric)
    chosen = [o for o in outcomes if o["selection"] == first]
    for metric in METRICS:
        gain = paired_section(
            chosen, lambda o, m=metric: o["heldout"].get(m, float("nan")), f"{metric}, selection: {first}"
        )
        if gain is None:  # no erm run, or nothing else to pair with it
            break
        sections.append(gain[0])
        rows += _long_rows(gain[1], f"{first} paired", metric)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["selection", "metric", "recipe", "heldout", "mean", "se", "n"])
    writer.writerows([*r[:4], f"{r[4]:.6g}", f"{r[5]:.6g}", r[6]] for r in rows)
    atomic_write_text(out / "summary.csv", buf.getvalue())
    atomic_write_text(out / "summary.md", "\n".join(sections))


def _long_rows(table: Table, selection: str, metric: str) -> list[list]:
    """The table's cells as rows of summary.csv (selection, metric, recipe, held out, mean, se, n)."""
    return [
        [
            selection,
            metric,
            recipe,
            column,
            table.cell(recipe, column).mean,
            table.cell(recipe, column).se,
            table.cell(recipe, column).n,
        ]
        for recipe in table.rows
        for column in table.columns
    ]


def paired_gains(outcomes: Sequence[dict], score: Callable[[dict], float]) -> list[tuple[str, str, float]]:
    """(recipe, held-out hospital, recipe's score - erm's) for every (hospital, seed) both ran.

    Trial seeds fix the split, the initialisation and the batch order for every recipe alike, so the
    paired difference cancels the seed-to-seed spread that dominates the per-recipe SE. ``outcomes``
    hold one entry per run (filter a selection rule first)."""
    base = {(o["test_domain"], o["seed"]): score(o) for o in outcomes if o["recipe"] == BASELINE}
    return [
        (o["recipe"], o["test_domain"], score(o) - base[o["test_domain"], o["seed"]])
        for o in outcomes
        if o["recipe"] != BASELINE and (o["test_domain"], o["seed"]) in base
    ]


def paired_section(
    outcomes: Sequence[dict], score: Callable[[dict], float], what: str
) -> tuple[str, Table] | None:
    """The Markdown section of :func:`paired_gains` for ``what`` (and its table); None without pairs."""
    values = paired_gains(outcomes, score)
    if not values:
        return None
    table = Table.from_values(f"gain over {BASELINE} in {what}", values)
    text = (
        f"### paired gain over {BASELINE}: {what}\n\n"
        f"Each run minus the {BASELINE} run of the same held-out hospital and seed (same split, "
        "initialisation and batch order), mean ± SE over the pairs.\n\n"
        f"{table.to_markdown()}\n{_wins(values)}"
    )
    return text, table


def _wins(values: Sequence[tuple[str, str, float]]) -> str:
    counts: dict[str, list[int]] = {}
    for recipe, _, gain in values:
        won = counts.setdefault(recipe, [0, 0, 0])
        won[0 if gain > 0 else 1 if gain < 0 else 2] += 1
    return "".join(
        f"{recipe}: better than {BASELINE} in {w} of {w + lo + t} pairs, worse in {lo}, level in {t}.  \n"
        for recipe, (w, lo, t) in counts.items()
    )


def write_conflicts(out: Path, run: RunDir, outcomes: Sequence[dict]) -> None:
    """``conflicts.md`` / ``.csv``: what each rule saw of the hospitals' gradients during training.

    Per recipe, over every logged step of every run (``classifier.surgery.diagnostics_every``): the
    mean cosine between two hospitals' gradients, the fraction of steps where it is negative (where
    PCGrad projects), and the fraction of components whose hospitals disagree in sign (what Agr-Sum
    zeroes; with k hospitals of random signs it is 1 - 2^(1-k)). Nothing is written when no run logged.
    """
    stats: dict[str, dict[str, list[float]]] = {}
    for o in outcomes:
        if o["selection"] != "last":  # one entry per run
            continue
        path = run.stage(run_stage(o["test_domain"], o["recipe"], o["seed"])) / "logs" / "metrics.csv"
        if not path.is_file():
            continue
        recipe = stats.setdefault(o["recipe"], {"cos": [], "disagree": []})
        with path.open(newline="") as f:
            for row in csv.DictReader(f):
                recipe["cos"] += [float(v) for k, v in row.items() if k.startswith("surgery/cos/") and v]
                if row.get("surgery/disagree/all"):
                    recipe["disagree"].append(float(row["surgery/disagree/all"]))
    stats = {r: v for r, v in stats.items() if v["cos"]}
    if not stats:
        return
    header = [
        "recipe",
        "hospital_pairs_logged",
        "mean_cosine",
        "negative_cosine_fraction",
        "sign_disagreement",
    ]
    lines = []
    for recipe, v in stats.items():
        cos, dis = v["cos"], v["disagree"]
        mean_dis = sum(dis) / len(dis) if dis else float("nan")
        lines.append([recipe, len(cos), sum(cos) / len(cos), sum(c < 0 for c in cos) / len(cos), mean_dis])
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows([r[0], r[1], *(f"{x:.4g}" for x in r[2:])] for r in lines)
    atomic_write_text(out / "conflicts.csv", buf.getvalue())
    md = [
        "| recipe | hospital pairs logged | mean cosine | negative cosine | sign disagreement |",
        "|---|---:|---:|---:|---:|",
        *(f"| {r[0]} | {r[1]} | {r[2]:.3f} | {r[3]:.3f} | {r[4]:.3f} |" for r in lines),
    ]
    atomic_write_text(out / "conflicts.md", "\n".join(md) + "\n")


def parse_list(text: str | None) -> list[str]:
    return [t.strip() for t in (text or "").split(",") if t.strip()]


def run_stage(domain: str, recipe: str, seed: int) -> str:
    """The stage (folder under the run) of one held-out hospital x recipe x seed."""
    return f"dg/{domain}/{recipe}/seed{seed}"


def summary_path(run: RunDir, selection: str) -> Path:
    return run.stage("dg") / f"table_{selection}.md"
