"""Leave-one-hospital-out protocol with named model-selection rules (DomainBed style, as code).

Each training run records, after every epoch, the validation score on the training hospitals, the
score on an "oracle" slice of the held-out hospital (20 % of its patients) and the scores on the rest
of the held-out hospital. A selection rule then picks one epoch per run from those records, so every
rule is evaluated on the same training runs, and the held-out slice used for reporting is never the
one the oracle selected on.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import lightning as L
import torch

from medseg_weak.classify.metrics import HospitalMetrics
from medseg_weak.data.manifest import Manifest
from medseg_weak.data.splits import assign_patients
from medseg_weak.io_utils import atomic_write_text
from medseg_weak.registry import Registry

if TYPE_CHECKING:
    from medseg_weak.classify.module import ClassifierModule

ORACLE_FRACTION = 0.2

Record = dict[str, Any]
SelectionRule = Callable[[list[Record], str], Record]
SELECTION: Registry[SelectionRule] = Registry("model-selection rule")


@SELECTION.register("training_domain")
def training_domain_validation(records: list[Record], metric: str) -> Record:
    """The epoch with the best validation score on the training hospitals (DomainBed's IID rule)."""
    return max(records, key=lambda r: (r["val"].get(metric, float("-inf")), -r["epoch"]))


@SELECTION.register("oracle")
def oracle(records: list[Record], metric: str) -> Record:
    """The epoch with the best score on the held-out hospital's oracle slice (an upper bound)."""
    return max(records, key=lambda r: (r["oracle"].get(metric, float("-inf")), -r["epoch"]))


@SELECTION.register("last")
def last_iterate(records: list[Record], metric: str) -> Record:
    """The final epoch, which is what DGvGS reports."""
    return max(records, key=lambda r: r["epoch"])


def mark_oracle_slice(manifest: Manifest, test_domain: str, seed: int) -> Manifest:
    """Move ORACLE_FRACTION of the held-out hospital's patients from 'test' into an 'oracle' split."""
    held_out = [r for r in manifest.records if r.domain == test_domain and r.split == "test"]
    patients = assign_patients(
        held_out, {"oracle": ORACLE_FRACTION, "test": None}, seed, "oracle", test_domain
    )
    return manifest.with_splits({r.id: patients[r.patient_id] for r in held_out})


class EpochRecorder(L.Callback):
    """After each validation, score the oracle and held-out splits and append one JSON line."""

    def __init__(
        self, path: Path, loaders: dict[str, torch.utils.data.DataLoader], domains: list[str]
    ) -> None:
        self.path = Path(path)
        self.loaders = loaders
        self.domains = domains

    # on_validation_end, not on_validation_epoch_end: Lightning runs callbacks' epoch-end hooks before
    # the module's, so the module has not logged this epoch's val metrics yet at that point.
    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        record: Record = {
            "epoch": trainer.current_epoch,
            "val": {
                k.removeprefix("val/"): float(v)
                for k, v in trainer.callback_metrics.items()
                if k.startswith("val/") and v.numel() == 1
            },
        }
        for name, loader in self.loaders.items():
            record[name] = self._score(pl_module, loader)
        # Records of epochs at or after this one belong to an interrupted attempt: replace them, so a
        # resumed run ends with exactly one record per epoch.
        kept = [r for r in read_records(self.path) if r["epoch"] < record["epoch"]]
        lines = [json.dumps(r) for r in [*kept, record]]
        atomic_write_text(self.path, "\n".join(lines) + "\n")

    @torch.no_grad()
    def _score(self, module: ClassifierModule, loader: torch.utils.data.DataLoader) -> dict[str, float]:
        num_classes = module.model.head.out_features
        metrics = HospitalMetrics(num_classes, self.domains).to(module.device)
        was_training = module.training
        module.eval()
        statistics = module.hospital_statistics(loader)  # classifier.test_bn: hospital
        for batch in loader:
            logits = module.logits(batch, statistics)
            metrics.update(
                logits.float().softmax(1), batch["label"].to(module.device), batch["domain"].to(module.device)
            )
        module.train(was_training)
        values = metrics.compute()
        return {k: float(v) for k, v in values.items() if v.numel() == 1 and "/" not in k}


def read_records(path: Path) -> list[Record]:
    if not Path(path).is_file():
        return []
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


@dataclass(frozen=True)
class Outcome:
    """One training run, reduced by a selection rule to the held-out score it reports."""

    rule: str
    test_domain: str
    seed: int
    epoch: int
    score: float


def select(records: list[Record], selection: str, metric: str) -> Record:
    if not records:
        raise ValueError("no epoch records to select from")
    return SELECTION.get(selection)(records, metric)
