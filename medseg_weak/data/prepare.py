"""Resolve a config's data: the user's manifest or the built-in benchmark, split by patient/hospital."""

from __future__ import annotations

from pathlib import Path

from medseg_weak.config import Config
from medseg_weak.data.cache import ArrayCache
from medseg_weak.data.manifest import Manifest, load_manifest
from medseg_weak.data.splits import leave_one_domain_out, split_patients
from medseg_weak.io_utils import atomic_write_text
from medseg_weak.rundir import RunDir


def resolve_manifest(cfg: Config, run: RunDir) -> Manifest:
    """The configured manifest, or the synthetic benchmark generated (resumably) into ``run/data``."""
    if cfg.data.manifest:
        return load_manifest(Path(cfg.data.manifest), cfg.data.labels or None)
    from medseg_weak.data.synthetic import generate

    out = run.stage("data")
    manifest_path = out / "manifest.csv"
    if not manifest_path.is_file():
        generate(out, cfg.synth, seed=cfg.seed)
    return load_manifest(manifest_path, cfg.data.labels or None)


def split_manifest(cfg: Config, manifest: Manifest, test_domain: str | None = None) -> Manifest:
    """Leave-one-domain-out when a test hospital is named, else a stratified patient split per hospital."""
    domain = cfg.data.test_domain if test_domain is None else test_domain
    if domain:
        return leave_one_domain_out(manifest, domain, cfg.data.val_fraction, cfg.seed)
    return split_patients(manifest, cfg.data.val_fraction, cfg.data.test_fraction, cfg.seed)


def prepare(cfg: Config, run: RunDir, test_domain: str | None = None) -> Manifest:
    return split_manifest(cfg, resolve_manifest(cfg, run), test_domain)


def write_split_table(manifest: Manifest, path: Path) -> Path:
    """id, domain, patient, label, split per image: the split is part of a result's provenance."""
    rows = ["id,domain,patient_id,label,split"]
    rows += [f"{r.id},{r.domain},{r.patient_id},{r.label},{r.split}" for r in manifest.records]
    return atomic_write_text(path, "\n".join(rows) + "\n")


def cache_dir(cfg: Config, run: RunDir) -> Path:
    """``data.cache_dir``, else the run's own ``cache/``: the one rule for where preprocessed arrays live."""
    return Path(cfg.data.cache_dir) if cfg.data.cache_dir else run.root / "cache"


def open_cache(cfg: Config, run: RunDir) -> ArrayCache:
    return ArrayCache(cache_dir(cfg, run))
