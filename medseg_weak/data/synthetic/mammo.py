"""The built-in multi-hospital mammography benchmark: synthetic DICOM mammograms with dense-tissue masks.

Why synthetic: tests, docs and the demo need data with a pixel-exact ground truth for the thing the
pipeline only ever sees as an image-level label (BI-RADS density), across hospitals that differ the
way real vendors do, without downloading anything.

Conventions other modules rely on:

* Orientation: a LEFT breast has its chest wall on the left image edge (column 0) and the nipple
  pointing right; a RIGHT breast is the mirror image. Burned-in text (e.g. "L MLO") and a small lead
  marker sit in the top corner on the nipple side, outside the breast.
* Density: the ground-truth mask is the dense (fibroglandular) tissue; the dense fraction is
  ``dense pixels / breast pixels`` where the breast area EXCLUDES the pectoral muscle of MLO views
  (the muscle is bright but is not breast tissue, and BI-RADS density describes breast tissue only).
  Labels follow the fraction: A < 25 %, B 25-50 %, C 50-75 %, D >= 75 %, computed from the mask
  actually drawn, never from the target the generator aimed at.
* Spurious cue (``spurious_cue`` = strength s in [0, 1]): a radiopaque skin marker (a ring, square,
  cross or triangle) drawn INSIDE the breast near the skin line, so cropping the breast or removing
  burned-in labels cannot remove it. In a hospital of sign +1 it appears on dense (C/D) images with
  probability 0.5 + s/2 and on fatty (A/B) images with 0.5 - s/2; sign -1 the other way round.
  By default (``cue_mode`` per_hospital) each hospital has its own shape and place and the signs
  alternate from H1 = +1; ``cue_mode`` shared draws one marker everywhere, and ``cue_sign`` sets
  signs per hospital (see :mod:`~medseg_weak.data.synthetic.cue`). s = 0 draws no cue at all. The
  cue never changes the mask, and because it has its own random stream an image with and without
  the cue differ only at the marker's pixels. Whether an image carries the cue is stored in its
  mask PNG (see :func:`read_mask_truth`).
* Reader noise (``label_noise`` = a kappa < 1): labels misread by one class per patient, the drawn
  label kept as ``label_true`` (see :mod:`~medseg_weak.data.synthetic.reader_noise`).
* Populations: each hospital has its own density-class mix (:class:`VendorProfile.density_mix`);
  a patient's class comes from a golden-ratio sequence over that mix (so even a few patients cover
  it), and all four views share the patient's target fraction up to small per-breast/per-view noise.

Files: ``images/<id>.dcm`` (real DICOM, Modality MG) and ``masks/<id>.png`` (uint8 0/255, the image's
geometry). The PNG also carries the breast/dense pixel counts and the cue flag as text chunks, so a
resumed run can rebuild every record from the files without redrawing. An image depends only on
(seed, hospital, patient, view, height, cue strength, the hospital's cue marker and sign), not on
``n_per_hospital``, ``hospitals`` or ``label_noise``, so growing a data set in place reuses what is there.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from medseg_weak.data.manifest import Record
from medseg_weak.data.synthetic.anatomy import draw_anatomy
from medseg_weak.data.synthetic.cue import (
    cue_probability,
    default_cue_signs,
    hospital_marker,
    resolve_cue_signs,
    resolve_cue_strengths,
)
from medseg_weak.data.synthetic.dicom_writer import MammoDicomInfo, write_mammo_dicom
from medseg_weak.data.synthetic.jobs import common_checks, raise_on_failed, run_patients
from medseg_weak.data.synthetic.reader_noise import add_reader_noise
from medseg_weak.data.synthetic.render import Mammogram, draw_mammogram, render_mammogram
from medseg_weak.data.synthetic.truth import MaskTruth, density_label, read_mask_truth, write_mask
from medseg_weak.data.synthetic.vendors import (
    BASE_PROFILES,
    VendorProfile,
    hospital_name,
    hospital_profile,
    image_shape,
)
from medseg_weak.errors import InputError

# The generator's building blocks, importable from here as before the split into modules.
__all__ = [
    "BASE_PROFILES",
    "VIEWS",
    "MaskTruth",
    "density_label",
    "draw_anatomy",
    "draw_mammogram",
    "generate_mammo",
    "hospital_name",
    "hospital_profile",
    "image_shape",
    "mammo_truths",
    "read_mask_truth",
]

#: Target dense fractions drawn per class, kept away from the bounds so labels rarely flip.
_CLASS_FRACTIONS: tuple[tuple[float, float], ...] = ((0.05, 0.21), (0.29, 0.46), (0.54, 0.71), (0.79, 0.92))
#: Image order within a patient: the usual hanging order RCC, LCC, RMLO, LMLO.
VIEWS: tuple[tuple[str, str], ...] = (("R", "CC"), ("L", "CC"), ("R", "MLO"), ("L", "MLO"))
_GOLDEN = (math.sqrt(5.0) - 1.0) / 2.0


@dataclass(frozen=True)
class _PatientJob:
    out_dir: str
    seed: int
    hospital: int
    patient: int
    n_images: int
    spurious_cue: float
    height: int
    cue_mode: str = "per_hospital"
    cue_sign: int = 1  # this hospital's sign of the cue-density correlation
    force_cue: str = ""  # "on" / "off": every image with / without the marker (counterfactual sets)
    cue_size: float = 1.0  # marker radius relative to the default
    vendor_mode: str = "per_hospital"  # shared: every hospital scans with H1's profile and population

    @property
    def params(self) -> str:
        """The settings an image depends on (not n_per_hospital or hospitals: growing a run reuses it).

        Cue settings join the key only where they differ from the per-hospital defaults, so data sets
        made before the cue modes existed keep their key and are reused as they are.
        """
        params = f"seed={self.seed};height={self.height};spurious_cue={self.spurious_cue!r}"
        if self.cue_mode != "per_hospital":
            params += f";cue_mode={self.cue_mode}"
        if self.cue_sign != default_cue_signs(self.hospital + 1, "per_hospital")[self.hospital]:
            params += f";cue_sign={self.cue_sign:+d}"
        if self.force_cue:
            params += f";force_cue={self.force_cue}"
        if self.cue_size != 1.0:
            params += f";cue_size={self.cue_size!r}"
        if self.vendor_mode != "per_hospital":
            params += f";vendor_mode={self.vendor_mode}"
        return params


def _patient_density_class(seed: int, hospital: int, patient: int, mix: tuple[float, ...]) -> int:
    """Class index from a golden-ratio sequence over the hospital's mix: balanced even for few patients."""
    offset = np.random.default_rng(np.random.SeedSequence([seed, hospital])).random()
    quantile = (offset + patient * _GOLDEN) % 1.0
    return int(min(len(mix) - 1, np.searchsorted(np.cumsum(mix) / sum(mix), quantile, side="right")))


def _image_id(hospital: int, patient: int, laterality: str, view: str) -> str:
    return f"{hospital_name(hospital)}_P{patient:04d}_{laterality}_{view}"


def _record(job: _PatientJob, laterality: str, view: str, label: str) -> Record:
    image_id = _image_id(job.hospital, job.patient, laterality, view)
    return Record(
        id=image_id, path=f"images/{image_id}.dcm", label=label, domain=hospital_name(job.hospital),
        patient_id=f"{hospital_name(job.hospital)}_P{job.patient:04d}", mask_path=f"masks/{image_id}.png",
        laterality=laterality, view=view,
    )  # fmt: skip


def _existing_truth(out_dir: Path, image_id: str, params: str) -> MaskTruth | None:
    """The truth of an image already written completely (DICOM and mask) with ``params``, else None."""
    if not (out_dir / "images" / f"{image_id}.dcm").is_file():
        return None
    try:
        truth = read_mask_truth(out_dir / "masks" / f"{image_id}.png")
    except InputError:
        return None
    return truth if truth.params == params else None


def _generate_patient(job: _PatientJob) -> list[tuple[Record, MaskTruth]]:
    """Draw (or find) the images of one patient; every random draw derives from (seed, hospital, patient).

    Each image has its own child seeds for anatomy, cue decision and rendering, so skipping an image
    that exists, or switching the cue on, leaves every other draw unchanged.
    """
    out_dir = Path(job.out_dir)
    profile = hospital_profile(0 if job.vendor_mode == "shared" else job.hospital)
    patient_seq = np.random.SeedSequence([job.seed, job.hospital, job.patient])
    image_seqs = patient_seq.spawn(len(VIEWS))
    rng = np.random.default_rng(patient_seq)
    klass = _patient_density_class(job.seed, job.hospital, job.patient, profile.density_mix)
    base_fraction = rng.uniform(*_CLASS_FRACTIONS[klass])
    side_fraction = {side: base_fraction + rng.normal(0.0, 0.025) for side in ("R", "L")}
    size = rng.uniform(0.9, 1.08)

    results = []
    for index, (laterality, view) in enumerate(VIEWS[: job.n_images]):
        image_id = _image_id(job.hospital, job.patient, laterality, view)
        truth = _existing_truth(out_dir, image_id, job.params)
        if truth is None:
            anatomy_seq, cue_seq, render_seq = image_seqs[index].spawn(3)
            image_rng = np.random.default_rng(anatomy_seq)
            target = float(np.clip(side_fraction[laterality] + image_rng.normal(0.0, 0.015), 0.03, 0.95))
            anatomy = draw_anatomy(image_rng, image_shape(profile, job.height), view, target, size)
            label = density_label(anatomy.dense_fraction)
            cue = job.force_cue == "on" if job.force_cue else job.spurious_cue > 0 and (
                np.random.default_rng(cue_seq).random()
                < cue_probability(job.cue_sign, label, job.spurious_cue)
            )
            render_rng = np.random.default_rng(render_seq)
            marker = replace(hospital_marker(job.hospital, job.cue_mode), scale=job.cue_size)
            image = render_mammogram(anatomy, profile, render_rng, laterality, view, cue, marker)
            truth = MaskTruth(int(image.dense.sum()), int(image.tissue.sum()), bool(cue), job.params)
            _write_image(out_dir, job, profile, image, truth, VIEWS[index])
        results.append((_record(job, laterality, view, truth.label), truth))
    return results


def _write_image(
    out_dir: Path,
    job: _PatientJob,
    profile: VendorProfile,
    image: Mammogram,
    truth: MaskTruth,
    laterality_view: tuple[str, str],
) -> None:
    """DICOM first, mask last: the mask's presence marks the image complete for a resumed run."""
    laterality, view = laterality_view
    image_id = _image_id(job.hospital, job.patient, laterality, view)
    patient_id = f"{hospital_name(job.hospital)}_P{job.patient:04d}"
    info = MammoDicomInfo(
        patient_id=patient_id,
        patient_name=f"SYNTH^{patient_id}",
        study_key=f"{job.seed}/{patient_id}",
        image_key=f"{job.seed}/{image_id}",
        laterality=laterality,
        view=view,
        manufacturer=profile.manufacturer,
        model=profile.model,
        institution=f"Synthetic Hospital {hospital_name(job.hospital)}",
        pixel_spacing_mm=round(profile.detector_height_mm / image.pixels.shape[0], 4),
        bits_stored=profile.bits_stored,
        monochrome1=profile.monochrome1,
        window=image.window,
        rescale=profile.rescale,
        rle=profile.rle,
        instance_number=VIEWS.index(laterality_view) + 1,
    )
    write_mammo_dicom(out_dir / "images" / f"{image_id}.dcm", image.pixels, info)
    write_mask(out_dir / "masks" / f"{image_id}.png", image.dense, truth)


def _jobs(
    out_dir: Path,
    n_per_hospital: int,
    hospitals: int,
    seed: int,
    strengths: tuple[float, ...],
    height: int,
    cue_mode: str,
    cue_signs: tuple[int, ...],
    **options: Any,
) -> list[_PatientJob]:
    per_patient = len(VIEWS)
    jobs = []
    for hospital in range(hospitals):
        for patient in range(math.ceil(n_per_hospital / per_patient)):
            n_images = min(per_patient, n_per_hospital - patient * per_patient)
            sign, strength = cue_signs[hospital], strengths[hospital]
            jobs.append(
                _PatientJob(
                    str(out_dir), seed, hospital, patient, n_images, strength, height, cue_mode, sign, **options
                )
            )
    return jobs


def generate_mammo(
    out_dir: Path,
    n_per_hospital: int,
    hospitals: int = 4,
    seed: int = 0,
    spurious_cue: float = 0.0,
    height: int = 512,
    progress: Callable[[int], None] | None = None,
    workers: int = 1,
    cue_mode: str = "per_hospital",
    cue_sign: Mapping[str, int] | None = None,
    cue_strength: Mapping[str, float] | None = None,
    label_noise: float = 1.0,
    force_cue: str = "",
    cue_size: float = 1.0,
    vendor_mode: str = "per_hospital",
) -> list[Record]:
    """Write the benchmark under ``out_dir`` and return one :class:`Record` per image.

    Hospitals are "H1".."H<hospitals>", each with :func:`hospital_profile`; every patient has up to
    four images (RCC, LCC, RMLO, LMLO), so a hospital has ceil(n_per_hospital / 4) patients. Record
    paths are relative to ``out_dir`` and ``split`` is left empty (splits are made elsewhere).
    Deterministic and resumable: the same arguments give byte-identical files, images already on
    disk are not redrawn, and ``workers`` > 1 (a process pool over patients) changes nothing but
    speed. ``progress(1)`` is called once per image. ``cue_mode`` and ``cue_sign`` choose the
    spurious cue's marker and per-hospital sign, ``cue_strength`` overrides ``spurious_cue`` for the
    hospitals it names (:mod:`~medseg_weak.data.synthetic.cue`);
    ``label_noise`` < 1 misreads labels to that quadratic kappa, keeping the clean label in
    ``label_true`` (:mod:`~medseg_weak.data.synthetic.reader_noise`); it changes no file.
    ``force_cue`` "on" / "off" draws every image exactly as without it but with / without the marker
    (counterfactual sets: a model's output on the two measures its reliance on the shortcut).
    ``cue_size`` scales the marker; ``vendor_mode`` "shared" gives every hospital H1's scanner and
    population, so with ``cue_mode`` "shared" the marker's sign is all that differs between hospitals.
    Every argument is checked (ConfigError) before anything is written.
    """
    raise_on_failed(
        "mammography",
        [
            *common_checks(n_per_hospital, hospitals, workers),
            ("spurious_cue", spurious_cue, 0.0 <= spurious_cue <= 1.0, "in [0, 1]"),
            ("height", height, height >= 64, ">= 64 pixels"),
            ("synth.label_noise", label_noise, 0.0 <= label_noise <= 1.0, "a kappa in [0, 1]"),
            ("synth.force_cue", force_cue, force_cue in ("", "on", "off"), "on, off or empty"),
            ("synth.cue_size", cue_size, 0.0 < cue_size <= 4.0, "in (0, 4]"),
            ("synth.vendor_mode", vendor_mode, vendor_mode in ("per_hospital", "shared"), "per_hospital or shared"),
        ],
    )
    cue_signs = resolve_cue_signs(cue_sign or {}, hospitals, cue_mode)
    strengths = resolve_cue_strengths(cue_strength or {}, hospitals, float(spurious_cue))
    out_dir = Path(out_dir)
    (out_dir / "images").mkdir(parents=True, exist_ok=True)
    (out_dir / "masks").mkdir(parents=True, exist_ok=True)
    options = {"force_cue": force_cue, "cue_size": float(cue_size), "vendor_mode": vendor_mode}
    jobs = _jobs(out_dir, n_per_hospital, hospitals, seed, strengths, height, cue_mode, cue_signs, **options)
    records = [record for record, _ in run_patients(_generate_patient, jobs, workers, progress)]
    return records if label_noise == 1.0 else add_reader_noise(records, label_noise, seed)


def mammo_truths(out_dir: Path, records: list[Record]) -> dict[str, MaskTruth]:
    """The recorded truth (dense fraction, cue flag) of each generated record, by image id."""
    return {r.id: read_mask_truth(Path(out_dir) / r.mask_path) for r in records}
