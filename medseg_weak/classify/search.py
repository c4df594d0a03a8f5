"""`medseg-weak search`: which backbone and learning rate, chosen by training-hospital validation.

A plain grid trains every candidate for ``classifier.epochs``; successive halving trains all for that
budget, keeps the better half, and retrains the survivors with twice the epochs, until one is left,
so most compute goes to promising candidates. The winner's full config is written ready for
``medseg-weak train-classifier --config``.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from medseg_weak.classify.stage import ClassifierStage
from medseg_weak.config import Config, dump_config
from medseg_weak.data.prepare import prepare
from medseg_weak.errors import ConfigError
from medseg_weak.io_utils import atomic_write_text
from medseg_weak.rundir import RunDir
from medseg_weak.stages import Runner

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Candidate:
    backbone: str
    lr: float

    @property
    def name(self) -> str:
        return f"{self.backbone.replace(':', '-')}_lr{self.lr:g}"

    def apply(self, cfg: Config, epochs: int) -> Config:
        classifier = dataclasses.replace(cfg.classifier, backbone=self.backbone, lr=self.lr, epochs=epochs)
        return dataclasses.replace(cfg, classifier=classifier)


@dataclass(frozen=True)
class Result:
    candidate: Candidate
    round: int
    epochs: int
    score: float
    test: dict


def check_candidates(cfg: Config, backbones: Sequence[str], lrs: Sequence[float]) -> None:
    """Every candidate buildable, checked before anything is written or trained."""
    if not backbones or not lrs:
        raise ConfigError("search needs at least one backbone (--backbones) and one learning rate (--lr)")
    from medseg_weak.classify.backbones import create_backbone

    for backbone in backbones:
        create_backbone(backbone, cfg.classifier.in_channels or 1)  # fail now on a typo, not after hours


def run_search(
    cfg: Config,
    run: RunDir,
    backbones: Sequence[str],
    lrs: Sequence[float],
    halving: bool = False,
    progress: bool = True,
) -> list[Result]:
    """Train the candidates; return the final ranking (best first) and write it under ``search/``."""
    check_candidates(cfg, backbones, lrs)
    higher_is_better = cfg.classifier.monitor_mode == "max"
    manifest = prepare(cfg, run)
    alive = [Candidate(b, lr) for b, lr in itertools.product(backbones, lrs)]
    history: list[Result] = []
    rounds = math.ceil(math.log2(len(alive))) + 1 if halving and len(alive) > 1 else 1
    for r in range(rounds):
        epochs = cfg.classifier.epochs * 2**r
        results = []
        for candidate in alive:
            stage = ClassifierStage(f"search/round{r}/{candidate.name}")
            results_ = Runner(candidate.apply(cfg, epochs), run, progress=progress).execute([stage], manifest)
            metrics = results_[stage.name].metrics  # type: ignore[attr-defined]
            score = metrics["best_score"] if metrics["best_score"] is not None else float("nan")
            results.append(Result(candidate, r, epochs, score, metrics["test"]))
        results.sort(key=lambda res: _key(res.score, higher_is_better))
        history.extend(results)
        alive = [res.candidate for res in results[: max(1, math.ceil(len(results) / 2))]]
    final = _ranking(history, higher_is_better)
    write_search_outputs(cfg, run.stage("search"), final)
    return final


def _key(score: float, higher_is_better: bool) -> float:
    if math.isnan(score):
        return math.inf
    return -score if higher_is_better else score


def _ranking(history: list[Result], higher_is_better: bool) -> list[Result]:
    """Each candidate's last round; later rounds rank above earlier ones (they survived halving)."""
    latest: dict[Candidate, Result] = {}
    for res in history:
        latest[res.candidate] = res
    return sorted(latest.values(), key=lambda res: (-res.round, _key(res.score, higher_is_better)))


def write_search_outputs(cfg: Config, out: Path, ranking: list[Result]) -> None:
    monitor = cfg.classifier.monitor
    lines = [
        f"| rank | backbone | lr | round | epochs | {monitor} | test accuracy | test balanced_accuracy |"
    ]
    lines.append("|---:|---|---:|---:|---:|---:|---:|---:|")
    csv_rows = ["rank,backbone,lr,round,epochs,val_score,test_accuracy,test_balanced_accuracy"]
    for i, res in enumerate(ranking, start=1):
        acc, bacc = res.test.get("accuracy", float("nan")), res.test.get("balanced_accuracy", float("nan"))
        lines.append(
            f"| {i} | {res.candidate.backbone} | {res.candidate.lr:g} | {res.round} | {res.epochs} | "
            f"{res.score:.4f} | {acc:.4f} | {bacc:.4f} |"
        )
        csv_rows.append(
            f"{i},{res.candidate.backbone},{res.candidate.lr:g},{res.round},{res.epochs},{res.score:.6g},{acc:.6g},{bacc:.6g}"
        )
    atomic_write_text(out / "ranking.md", "\n".join(lines) + "\n")
    atomic_write_text(out / "ranking.csv", "\n".join(csv_rows) + "\n")
    best = ranking[0]
    dump_config(best.candidate.apply(cfg, best.epochs), out / "best.yaml")
    log.info(
        "search: best %s (%s %.4f); config in %s", best.candidate.name, monitor, best.score, out / "best.yaml"
    )


def parse_floats(text: str | None, flag: str) -> list[float]:
    values = []
    for part in (text or "").split(","):
        if part.strip():
            try:
                values.append(float(part))
            except ValueError:
                raise ConfigError(f"{flag}: '{part.strip()}' is not a number") from None
    return values
