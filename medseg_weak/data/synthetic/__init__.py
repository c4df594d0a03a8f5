"""The built-in benchmarks: synthetic multi-hospital mammograms and fundus photographs.

``generate()`` is the one entry point the CLI and pipeline use: it runs the generator of the data kind
(``medseg_weak.data.kinds``) and writes ``manifest.csv`` plus ``synth.json`` (arguments, versions,
and the kappa reached when labels carry reader noise) beside the images.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from medseg_weak.config import SynthConfig, to_dict
from medseg_weak.data.kinds import get_kind
from medseg_weak.data.manifest import Record, write_manifest
from medseg_weak.provenance import write_environment


def _shared_arguments(cfg: SynthConfig, seed: int, progress: Callable[[int], None] | None) -> dict[str, Any]:
    """The arguments every generator takes, from the config."""
    return {
        "n_per_hospital": cfg.n_per_hospital,
        "hospitals": cfg.hospitals,
        "seed": seed,
        "progress": progress,
        "workers": cfg.workers,
    }


def mammo_records(
    out: Path, cfg: SynthConfig, seed: int, progress: Callable[[int], None] | None
) -> list[Record]:
    from medseg_weak.data.synthetic.mammo import generate_mammo

    return generate_mammo(
        out,
        **_shared_arguments(cfg, seed, progress),
        spurious_cue=cfg.spurious_cue,
        height=cfg.height,
        cue_mode=cfg.cue_mode,
        cue_sign=cfg.cue_sign,
        cue_strength=cfg.cue_strength,
        label_noise=cfg.label_noise,
        force_cue=cfg.force_cue,
        cue_size=cfg.cue_size,
        vendor_mode=cfg.vendor_mode,
    )


def fundus_records(
    out: Path, cfg: SynthConfig, seed: int, progress: Callable[[int], None] | None
) -> list[Record]:
    from medseg_weak.data.synthetic.fundus import generate_fundus

    return generate_fundus(out, **_shared_arguments(cfg, seed, progress), size=cfg.size)


def generate(
    out: str | Path, cfg: SynthConfig, seed: int = 0, progress: Callable[[int], None] | None = None
) -> Path:
    """Generate (or finish generating) a benchmark into ``out``; returns the manifest path.

    Generators skip images already on disk, so rerunning after an interruption completes the set,
    and the manifest is written last and atomically: its presence means the data set is whole.
    """
    out = Path(out)
    records = get_kind(cfg.kind, "synth.kind").generate(out, cfg, seed, progress)
    settings: dict[str, Any] = {"synth": to_dict(cfg), "n_images": len(records)}
    if any(r.label_true for r in records):
        from medseg_weak.data.synthetic.reader_noise import measure_reader_noise

        settings["reader_noise"] = measure_reader_noise(records)
    write_environment(out / "synth.json", seed=seed, **settings)
    return write_manifest(records, out / "manifest.csv")
