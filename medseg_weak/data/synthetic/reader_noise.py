"""Reader noise on density labels: some patients misread by one class, tuned to a target kappa.

Real density labels come from readers who disagree, mostly by one class. ``synth.label_noise`` =
KAPPA makes the benchmark's labels disagree with the drawn truth by that much:

* Every patient gets two draws from a stream of its own (seed and patient id): a rank u in [0, 1)
  and a direction, one class denser or one class fatter. A misread patient has EVERY image moved one
  class in that direction (reflected at A and D, which have one neighbour), because one reader reads
  all of a patient's images: the expected confusion matrix has 1 - p on the diagonal and p split
  between the adjacent classes (all of it to B for A, to C for D).
* The flip probability p is solved on the generated data: patients are misread in order of u, one
  at a time, the quadratic-weighted kappa between noisy and clean labels (over images) is updated
  after each, and the count whose kappa is closest to the target is kept. The kappa is therefore
  hit to within one patient's worth, and the misread patients are exactly those with u < p.
* Adjacent-class errors cannot push kappa arbitrarily low: with every patient misread, each image
  is one class off and kappa is about 0.6 for a balanced population. A target more than
  :data:`KAPPA_TOLERANCE` below the lowest kappa reachable on the data is a ConfigError.

KAPPA = 1 adds no noise. The clean label is kept in each record's ``label_true`` (analysis only).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from medseg_weak.data.manifest import DENSITY_LABELS, Record
from medseg_weak.errors import ConfigError

#: How far below the reachable range a target may be before it is refused rather than approximated.
KAPPA_TOLERANCE = 0.01
_READER_STREAM = 0x5EAD  # keeps the reader's draws apart from every image's own streams


def quadratic_kappa(confusion: np.ndarray) -> float:
    """Cohen's quadratic-weighted kappa of a K x K confusion matrix (rows: one reader, columns: other).

    1 when the weighted disagreement expected by chance is 0 (every label the same class, in both).
    """
    confusion = np.asarray(confusion, dtype=np.float64)
    k = confusion.shape[0]
    rows, cols = np.indices((k, k))
    weights = (rows - cols) ** 2 / max(1, k - 1) ** 2
    expected = np.outer(confusion.sum(axis=1), confusion.sum(axis=0)) / max(confusion.sum(), 1.0)
    chance = float((weights * expected).sum())
    return 1.0 if chance == 0.0 else 1.0 - float((weights * confusion).sum()) / chance


def reader_draws(seed: int, patient_id: str) -> tuple[float, int]:
    """(rank u, direction +1 denser / -1 fatter) of the reader of one patient."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, _READER_STREAM, *patient_id.encode()]))
    rank, denser = rng.random(2)
    return float(rank), 1 if denser < 0.5 else -1


def misread_class(index: int, direction: int, n_classes: int) -> int:
    moved = index + direction
    return moved if 0 <= moved < n_classes else index - direction


def add_reader_noise(
    records: Sequence[Record], kappa: float, seed: int, labels: Sequence[str] = DENSITY_LABELS
) -> list[Record]:
    """``records`` with noisy labels (quadratic kappa ~ ``kappa`` against the clean ones) and
    ``label_true`` = the clean label; deterministic for ``seed``. See the module docstring."""
    if not 0.0 <= kappa <= 1.0:
        raise ConfigError(f"'synth.label_noise' must be a kappa in [0, 1]; got {kappa}")
    labels = tuple(labels)
    clean = np.array([labels.index(r.label) for r in records], dtype=np.int64)
    by_patient: dict[str, list[int]] = {}
    for position, record in enumerate(records):
        by_patient.setdefault(record.patient_id, []).append(position)
    draws = {patient: reader_draws(seed, patient) for patient in by_patient}
    order = sorted(by_patient, key=lambda patient: (draws[patient][0], patient))

    noisy = clean.copy()
    confusion = np.zeros((len(labels), len(labels)), dtype=np.int64)
    np.add.at(confusion, (clean, clean), 1)
    kappas = [quadratic_kappa(confusion)]
    for patient in order:  # misread one more patient and update the kappa incrementally
        for position in by_patient[patient]:
            moved = misread_class(int(clean[position]), draws[patient][1], len(labels))
            confusion[clean[position], clean[position]] -= 1
            confusion[clean[position], moved] += 1
        kappas.append(quadratic_kappa(confusion))
    if kappa < min(kappas) - KAPPA_TOLERANCE:
        raise ConfigError(
            f"'synth.label_noise' = {kappa} is below the lowest kappa that one-class reader errors reach on "
            f"this data ({min(kappas):.3f}); choose a value >= {min(kappas):.2f} (the images already "
            "written are reused by a rerun)"
        )
    n_misread = int(np.argmin([abs(k - kappa) for k in kappas]))
    for patient in order[:n_misread]:
        for position in by_patient[patient]:
            noisy[position] = misread_class(int(clean[position]), draws[patient][1], len(labels))
    return [
        replace(record, label=labels[int(noisy[i])], label_true=record.label)
        for i, record in enumerate(records)
    ]


def measure_reader_noise(records: Sequence[Record], labels: Sequence[str] = DENSITY_LABELS) -> dict[str, Any]:
    """What the noise did, from the records alone: kappa, misread patients and images (for synth.json)."""
    labels = tuple(labels)
    noisy = [labels.index(r.label) for r in records]
    clean = [labels.index(r.label_true or r.label) for r in records]
    confusion = np.zeros((len(labels), len(labels)), dtype=np.int64)
    np.add.at(confusion, (clean, noisy), 1)
    patients = {r.patient_id for r in records}
    misread = {r.patient_id for r, c, n in zip(records, clean, noisy) if c != n}
    return {
        "kappa": round(quadratic_kappa(confusion), 6),
        "patients": len(patients),
        "patients_misread": len(misread),
        "flip_probability": round(len(misread) / max(1, len(patients)), 6),
        "images_misread": int(sum(c != n for c, n in zip(clean, noisy))),
        "confusion": confusion.tolist(),
    }
