"""Synthetic colour fundus photographs with a quality grade and a mask of where each degradation is.

One responsibility: turn ``(seed, camera, patient)`` into image / mask PNG files plus manifest
:class:`Record` objects for the fundus image-quality use case (Good / Usable / Reject), so that tests,
docs and the demo need no downloads and the ground truth of *where* an image is degraded is known
exactly (real quality data sets only grade the whole image).

How an image is made, and why in this order:

1. **Plan** (cheap, no pixels): the grade is drawn from the camera's class mix, then degradations
   consistent with it. The plan has its own random stream, so a resumed run recovers the label of an
   image it skips without drawing a pixel and without a sidecar file.
2. **Anatomy** in a canonical right eye (optic disc on the image's right, the nasal side, and the
   macula about 2.5 disc diameters temporal to it), then mirrored for left eyes.
3. **Degradations** (blur, uneven illumination, artefacts, exposure), each returning the pixels it
   touched; bit ``i`` of the mask PNG is ``DEGRADATIONS[i]``.
4. **Camera** (white balance, field-of-view shape, resolution, blur, noise, JPEG), which is what makes
   the hospitals different domains.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from scipy.ndimage import gaussian_filter

from medseg_weak.data.manifest import Record
from medseg_weak.data.synthetic.cameras import CameraProfile, camera_profile
from medseg_weak.data.synthetic.degradations import DEGRADATIONS, DEGRADE, EyePlan, plan_eye
from medseg_weak.data.synthetic.jobs import common_checks, raise_on_failed, run_patients
from medseg_weak.data.synthetic.retina import Geometry, Patient, draw_geometry, draw_patient, draw_retina
from medseg_weak.io_utils import atomic_write_bytes

# The generator's building blocks, importable from here as before the split into modules.
__all__ = ["DEGRADATIONS", "LATERALITIES", "CameraProfile", "camera_profile", "generate_fundus"]

LATERALITIES: tuple[str, ...] = ("R", "L")


# --------------------------------------------------------------------------------------------------
# Camera and image assembly
# --------------------------------------------------------------------------------------------------


def _camera(img: np.ndarray, geo: Geometry, camera: CameraProfile, rng: np.random.Generator) -> np.ndarray:
    """Sensor and processing of one camera: colour cast, FOV stop, optics, noise, resolution, JPEG."""
    img = img * np.asarray(camera.white_balance, dtype=np.float32) * geo.fov[..., None]
    sigma = camera.blur * geo.scale
    if sigma > 0:
        img = gaussian_filter(img, (sigma, sigma, 0))
    img += rng.standard_normal(img.shape, dtype=np.float32) * camera.noise
    pil = Image.fromarray((np.clip(img, 0.0, 1.0) * 255 + 0.5).astype(np.uint8), "RGB")
    if camera.resolution < 1:
        small = max(16, round(geo.size * camera.resolution))
        pil = pil.resize((small, small), Image.Resampling.BILINEAR).resize(
            (geo.size,) * 2, Image.Resampling.BICUBIC
        )
    if camera.jpeg_quality < 100:
        buf = io.BytesIO()
        pil.save(buf, format="JPEG", quality=camera.jpeg_quality)
        buf.seek(0)
        pil = Image.open(buf).convert("RGB")
    return np.asarray(pil)


def _vignetting(geo: Geometry, strength: float) -> np.ndarray:
    r = np.hypot(geo.xx - geo.cx, geo.yy - geo.cy) / geo.radius
    return (1 - strength * np.clip(r, 0, 1.2) ** 2.5).astype(np.float32)


def _render_eye(
    camera: CameraProfile,
    patient: Patient,
    laterality: str,
    plan: EyePlan,
    rng: np.random.Generator,
    size: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Pixels for one planned eye: uint8 RGB image and uint8 degradation bit-mask."""
    geo = draw_geometry(camera, patient, rng, size)
    img = draw_retina(rng, geo, patient) * _vignetting(geo, camera.vignetting)[..., None]
    if laterality == "L":  # the disc is nasal: mirror the canonical right eye
        img = np.ascontiguousarray(img[:, ::-1])
        geo = geo.mirrored()
    mask = np.zeros((size, size), np.uint8)
    inside = geo.fov > 0.5
    for name, level in plan.degradations:
        img, affected = DEGRADE[name](img, geo, level, rng)
        mask |= ((affected & inside).astype(np.uint8) << DEGRADATIONS.index(name)).astype(np.uint8)
    return _camera(img, geo, camera, rng), mask


# --------------------------------------------------------------------------------------------------
# Files and the public entry point
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _PatientTask:
    out_dir: Path
    seed: int
    camera_index: int
    patient_index: int
    eyes: int
    size: int


def _png_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def _make_patient(task: _PatientTask) -> list[Record]:
    """Both eyes of one patient (files written unless already there) and their records.

    Streams: ``SeedSequence([seed, camera, patient])`` spawns one for the patient's shared traits and
    one per eye; each eye's spawns one for its plan and one for its pixels. Skipping an eye, or
    rendering it in another process, therefore never shifts another image's random numbers.
    """
    camera = camera_profile(task.camera_index)
    patient_seq, *eye_seqs = np.random.SeedSequence([task.seed, task.camera_index, task.patient_index]).spawn(
        3
    )
    patient = draw_patient(np.random.default_rng(patient_seq))
    patient_id = f"{camera.name}_P{task.patient_index:04d}"
    records = []
    for laterality, eye_seq in zip(LATERALITIES[: task.eyes], eye_seqs):
        plan_seq, pixel_seq = eye_seq.spawn(2)
        plan = plan_eye(np.random.default_rng(plan_seq), camera)
        image_id = f"{patient_id}_{laterality}"
        rel_image, rel_mask = f"images/{image_id}.png", f"masks/{image_id}.png"
        image_path, mask_path = task.out_dir / rel_image, task.out_dir / rel_mask
        if not (image_path.is_file() and mask_path.is_file()):
            rgb, mask = _render_eye(
                camera, patient, laterality, plan, np.random.default_rng(pixel_seq), task.size
            )
            atomic_write_bytes(mask_path, _png_bytes(mask))
            atomic_write_bytes(image_path, _png_bytes(rgb))  # last: its presence marks the pair complete
        records.append(
            Record(
                id=image_id,
                path=rel_image,
                label=plan.grade,
                domain=camera.name,
                patient_id=patient_id,
                mask_path=rel_mask,
                laterality=laterality,
            )
        )
    return records


def generate_fundus(
    out_dir: Path,
    n_per_hospital: int,
    hospitals: int = 3,
    seed: int = 0,
    size: int = 256,
    progress: Callable[[int], None] | None = None,
    workers: int = 1,
) -> list[Record]:
    """Write ``n_per_hospital`` fundus photographs per camera and return their records, in a fixed order.

    Files: ``out_dir/images/<id>.png`` (RGB) and ``out_dir/masks/<id>.png`` (bit ``i`` set where
    ``DEGRADATIONS[i]`` changed the pixel). Each patient contributes a right then a left eye, so an
    odd count gives the last patient one eye. Output depends only on the arguments other than
    ``progress`` and ``workers``: pairs already on disk are kept (a killed run resumes) and their
    labels are recovered by replaying the plan stream. ``progress(1)`` is called once per image.
    """
    raise_on_failed(
        "fundus",
        [
            *common_checks(n_per_hospital, hospitals, workers, min_images=0),
            ("size", size, size >= 64, ">= 64 pixels (a recognisable fundus)"),
        ],
    )
    out_dir = Path(out_dir)
    tasks = [
        _PatientTask(out_dir, seed, camera_index, patient, min(2, n_per_hospital - 2 * patient), size)
        for camera_index in range(hospitals)
        for patient in range((n_per_hospital + 1) // 2)
    ]
    return run_patients(_make_patient, tasks, workers, progress)
