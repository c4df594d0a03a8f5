"""Reader noise on density labels: kappa reached, per-patient decisions, adjacent classes, errors."""

from __future__ import annotations

import json
import re
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
import torch
from torchmetrics.functional.classification import multiclass_cohen_kappa

from medseg_weak.config import SynthConfig
from medseg_weak.data.manifest import DENSITY_LABELS, Record, load_manifest, manifest_to_csv
from medseg_weak.data.synthetic import generate
from medseg_weak.data.synthetic.reader_noise import add_reader_noise, measure_reader_noise, quadratic_kappa
from medseg_weak.errors import ConfigError


def _records(patients: int = 150, seed: int = 0) -> list[Record]:
    """Four images per patient, the patient's class from a skewed mix, one image now and then a class off."""
    rng = np.random.default_rng(seed)
    records = []
    for p in range(patients):
        klass = int(rng.choice(4, p=[0.2, 0.35, 0.3, 0.15]))
        for view in range(4):
            label = int(np.clip(klass + (rng.random() < 0.1), 0, 3))
            records.append(Record(f"P{p}_{view}", f"{p}_{view}.dcm", DENSITY_LABELS[label], "H1", f"P{p}"))
    return records


def test_quadratic_kappa_known_values_and_torchmetrics() -> None:
    assert quadratic_kappa(np.diag([3, 1, 4, 2])) == 1.0
    # by hand: weights [[0, 1], [1, 0]], chance [[.5, 1.5], [.5, 1.5]] -> 1 - 1 / 2
    assert quadratic_kappa(np.array([[1, 1], [0, 2]])) == pytest.approx(0.5)
    assert quadratic_kappa(np.array([[0, 2], [2, 0]])) == pytest.approx(-1.0)
    rng = np.random.default_rng(1)
    clean, noisy = rng.integers(0, 4, 300), rng.integers(0, 4, 300)
    noisy[:200] = clean[:200]
    confusion = np.zeros((4, 4), np.int64)
    np.add.at(confusion, (clean, noisy), 1)
    reference = multiclass_cohen_kappa(torch.as_tensor(noisy), torch.as_tensor(clean), 4, weights="quadratic")
    assert quadratic_kappa(confusion) == pytest.approx(float(reference), abs=1e-6)


@pytest.mark.parametrize("kappa", [0.95, 0.85, 0.7, 0.6])
def test_kappa_is_reached_within_tolerance(kappa: float) -> None:
    noisy = add_reader_noise(_records(), kappa, seed=3)
    assert measure_reader_noise(noisy)["kappa"] == pytest.approx(kappa, abs=0.01)


def test_a_patients_images_share_one_reader_decision_of_one_adjacent_class() -> None:
    records = _records()
    noisy = add_reader_noise(records, 0.75, seed=3)
    shifts: dict[str, set[int]] = defaultdict(set)
    for clean, read in zip(records, noisy):
        assert read.label_true == clean.label and read.id == clean.id
        shift = DENSITY_LABELS.index(read.label) - DENSITY_LABELS.index(clean.label)
        assert abs(shift) <= 1
        shifts[read.patient_id].add(shift != 0)
    assert all(len(decisions) == 1 for decisions in shifts.values())  # all or none of a patient's images
    misread = sum(decisions == {True} for decisions in shifts.values())
    assert 0 < misread < len(shifts)


def test_deterministic_for_a_seed_and_different_across_seeds() -> None:
    records = _records()
    assert add_reader_noise(records, 0.8, seed=5) == add_reader_noise(records, 0.8, seed=5)
    assert add_reader_noise(records, 0.8, seed=5) != add_reader_noise(records, 0.8, seed=6)


def test_more_noise_misreads_a_superset_of_patients() -> None:
    """The patients misread are those whose reader rank is below the flip probability."""
    records = _records()

    def misread(kappa: float) -> set[str]:
        return {r.patient_id for r in add_reader_noise(records, kappa, seed=2) if r.label != r.label_true}

    assert misread(0.9) < misread(0.8) < misread(0.7)


def test_kappa_one_changes_no_label() -> None:
    records = _records()
    assert [r.label for r in add_reader_noise(records, 1.0, seed=1)] == [r.label for r in records]


@pytest.mark.parametrize(
    ("kappa", "message"), [(1.5, "in [0, 1]"), (-0.1, "in [0, 1]"), (0.05, "lowest kappa")]
)
def test_bad_kappas_are_config_errors(kappa: float, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape("'synth.label_noise'") + ".*" + re.escape(message)):
        add_reader_noise(_records(), kappa, seed=1)


def test_manifest_keeps_label_true_only_when_there_is_noise(tmp_path: Path) -> None:
    records = _records(patients=3)
    assert "label_true" not in manifest_to_csv(records).splitlines()[0]
    noisy = add_reader_noise(records, 0.9, seed=1)
    (tmp_path / "m.csv").write_text(manifest_to_csv(noisy))
    loaded = load_manifest(tmp_path / "m.csv", check_files=False)
    assert list(loaded.records) == noisy


def test_generated_benchmark_with_noise(tmp_path: Path) -> None:
    """Noise changes labels, not files; the manifest and synth.json say what it did."""
    cfg = SynthConfig(n_per_hospital=8, hospitals=2, height=64, label_noise=0.7)
    manifest = load_manifest(generate(tmp_path / "noisy", cfg, seed=4))
    clean = load_manifest(
        generate(tmp_path / "clean", SynthConfig(n_per_hospital=8, hospitals=2, height=64), 4)
    )
    assert [r.label_true for r in manifest.records] == [r.label for r in clean.records]
    assert all(r.label_true == "" for r in clean.records)
    assert any(r.label != r.label_true for r in manifest.records)
    for folder in ("images", "masks"):
        noisy_files = sorted((tmp_path / "noisy" / folder).iterdir())
        clean_files = sorted((tmp_path / "clean" / folder).iterdir())
        assert [p.read_bytes() for p in noisy_files] == [p.read_bytes() for p in clean_files]
    summary = json.loads((tmp_path / "noisy" / "synth.json").read_text())["reader_noise"]
    assert summary == measure_reader_noise(list(manifest.records))
    assert 0 < summary["patients_misread"] <= summary["patients"] == 4
