"""Patient-level splits: stratified train/val/test within each hospital, and leave-one-domain-out.

Splitting by patient, never by image, keeps the four views of one woman out of both sides of a split;
splitting within each hospital keeps every hospital represented in train, val and test.
"""

from __future__ import annotations

import zlib
from collections import Counter, defaultdict
from collections.abc import Iterator

import numpy as np

from medseg_weak.data.manifest import Manifest, Record
from medseg_weak.errors import ConfigError


def _rng(seed: int, *names: str) -> np.random.Generator:
    # crc32, not hash(): Python salts str hashes per process, which would break reproducibility.
    return np.random.default_rng(np.random.SeedSequence([seed, *(zlib.crc32(n.encode()) for n in names)]))


def _patient_strata(records: list[Record]) -> dict[str, list[str]]:
    """Patients grouped by their most common label (ties broken by label name for determinism)."""
    labels: dict[str, Counter[str]] = defaultdict(Counter)
    for r in records:
        labels[r.patient_id][r.label] += 1
    strata: dict[str, list[str]] = defaultdict(list)
    for patient in sorted(labels):
        label = min(labels[patient].items(), key=lambda kv: (-kv[1], kv[0]))[0]
        strata[label].append(patient)
    return strata


def _check_fractions(val_fraction: float, test_fraction: float) -> None:
    for name, value in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not 0.0 <= value < 1.0:
            raise ConfigError(f"'data.{name}' must be in [0, 1); got {value}")
    if val_fraction + test_fraction >= 1.0:
        raise ConfigError(
            f"'data.val_fraction' + 'data.test_fraction' must leave images to train on; "
            f"got {val_fraction} + {test_fraction}"
        )


def assign_patients(
    records: list[Record], fractions: dict[str, float | None], seed: int, *names: str
) -> dict[str, str]:
    """Map each patient to a split: exact totals per split, and each label stratum divided evenly.

    Patients are shuffled within their label stratum, then interleaved across strata by relative
    position (systematic sampling), and consecutive chunks of that order become the splits. So the
    split sizes are ``round(fraction * patients)`` exactly, and every label is spread over all splits
    as evenly as whole patients allow. The split whose fraction is ``None`` takes the rest.
    """
    rng = _rng(seed, *names)
    keyed: list[tuple[float, float, str]] = []
    for _label, patients in sorted(_patient_strata(records).items()):
        order = list(patients)
        rng.shuffle(order)
        keyed.extend(((k + 0.5) / len(order), rng.random(), p) for k, p in enumerate(order))
    ordered = [p for _, _, p in sorted(keyed)]
    out: dict[str, str] = {}
    start = 0
    for split, frac in fractions.items():
        if frac is None:
            continue
        count = round(frac * len(ordered))
        out.update({p: split for p in ordered[start : start + count]})
        start += count
    rest = next(name for name, frac in fractions.items() if frac is None)
    out.update({p: rest for p in ordered[start:]})
    return out


def split_patients(
    manifest: Manifest, val_fraction: float = 0.15, test_fraction: float = 0.15, seed: int = 0
) -> Manifest:
    """Stratified (by label) patient-level train/val/test split inside each hospital.

    Rows that already carry a split in the manifest keep it, so a user's own split is respected.
    """
    _check_fractions(val_fraction, test_fraction)
    split_of: dict[str, str] = {}
    for domain in manifest.domains:
        todo = [r for r in manifest.records if r.domain == domain and not r.split]
        patients = assign_patients(
            todo, {"test": test_fraction, "val": val_fraction, "train": None}, seed, "split", domain
        )
        split_of.update({r.id: patients[r.patient_id] for r in todo})
    return manifest.with_splits(split_of)


def leave_one_domain_out(
    manifest: Manifest, test_domain: str, val_fraction: float = 0.15, seed: int = 0
) -> Manifest:
    """Hold out every image of ``test_domain`` as test; split the others' patients into train/val.

    Validation comes from the training hospitals only (DomainBed's "training-domain validation"),
    so nothing about the held-out hospital leaks into model selection.
    """
    domains = manifest.domains
    if test_domain not in domains:
        raise ConfigError(
            f"'data.test_domain' is '{test_domain}', not a hospital in the manifest; "
            f"valid: {', '.join(domains)}"
        )
    if len(domains) < 2:
        raise ConfigError("leave-one-domain-out needs at least two hospitals in the manifest")
    _check_fractions(val_fraction, 0.0)
    split_of: dict[str, str] = {}
    for domain in domains:
        records = [r for r in manifest.records if r.domain == domain]
        if domain == test_domain:
            split_of.update({r.id: "test" for r in records})
            continue
        patients = assign_patients(records, {"val": val_fraction, "train": None}, seed, "lodo", domain)
        split_of.update({r.id: patients[r.patient_id] for r in records})
    return manifest.with_splits(split_of)


def iter_leave_one_domain_out(
    manifest: Manifest, val_fraction: float = 0.15, seed: int = 0
) -> Iterator[tuple[str, Manifest]]:
    """Every hospital in turn as the held-out one."""
    for domain in manifest.domains:
        yield domain, leave_one_domain_out(manifest, domain, val_fraction, seed)


def split_summary(manifest: Manifest) -> dict[str, dict[str, int]]:
    """Images per split per hospital, for tables and sanity checks."""
    table: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for r in manifest.records:
        table[r.domain][r.split or "-"] += 1
    return {d: dict(v) for d, v in sorted(table.items())}
