"""Fundus camera profiles: what makes one hospital's camera a domain of its own.

One responsibility: the per-camera settings (colour cast, field of view, optics, noise, JPEG) and the
camera's population of quality grades and degradations; applying them is left to the image assembly.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from medseg_weak.errors import ConfigError


@dataclass(frozen=True)
class CameraProfile:
    """What makes one hospital's camera a domain of its own, and which images it tends to see.

    Lengths (``blur``) are in pixels of a 256 px image; ``fov_radius`` is a fraction of the image
    side; ``crop`` is the half-height kept of the field of view as a fraction of its radius (1 = a
    full disc; below 1 the top and bottom of the disc are cut flat, as many cameras do).
    """

    name: str
    white_balance: tuple[float, float, float]
    fov_radius: float
    crop: float
    blur: float
    resolution: float
    noise: float
    jpeg_quality: int
    vignetting: float
    class_mix: tuple[float, float, float]
    degradation_mix: tuple[float, float, float, float]


_BASE_CAMERAS: tuple[CameraProfile, ...] = (
    # Well-run clinic, desktop mydriatic camera: warm cast, clean optics, mostly good images.
    CameraProfile(
        name="C1",
        white_balance=(1.04, 0.98, 0.86),
        fov_radius=0.47,
        crop=1.0,
        blur=0.3,
        resolution=1.0,
        noise=0.008,
        jpeg_quality=95,
        vignetting=0.25,
        class_mix=(0.55, 0.30, 0.15),
        degradation_mix=(0.25, 0.25, 0.25, 0.25),
    ),
    # Non-mydriatic screening camera: cool cast, cropped disc, small pupils -> illumination problems.
    CameraProfile(
        name="C2",
        white_balance=(0.92, 1.04, 1.12),
        fov_radius=0.49,
        crop=0.86,
        blur=0.5,
        resolution=0.85,
        noise=0.015,
        jpeg_quality=85,
        vignetting=0.35,
        class_mix=(0.40, 0.35, 0.25),
        degradation_mix=(0.20, 0.40, 0.15, 0.25),
    ),
    # Handheld camera: reddish cast, small cropped field, soft optics and focus blur, many rejects.
    CameraProfile(
        name="C3",
        white_balance=(1.10, 0.94, 0.96),
        fov_radius=0.44,
        crop=0.92,
        blur=0.8,
        resolution=0.70,
        noise=0.030,
        jpeg_quality=70,
        vignetting=0.50,
        class_mix=(0.25, 0.40, 0.35),
        degradation_mix=(0.40, 0.20, 0.20, 0.20),
    ),
    # Smartphone adapter: yellow-green cast, small field, low resolution, heavy JPEG.
    CameraProfile(
        name="C4",
        white_balance=(1.00, 1.08, 0.78),
        fov_radius=0.40,
        crop=1.0,
        blur=0.6,
        resolution=0.60,
        noise=0.025,
        jpeg_quality=60,
        vignetting=0.60,
        class_mix=(0.30, 0.40, 0.30),
        degradation_mix=(0.20, 0.20, 0.30, 0.30),
    ),
)


def camera_profile(index: int) -> CameraProfile:
    """The profile of camera ``index`` (0-based, named ``C{index + 1}``).

    Beyond the hand-written profiles, cameras are perturbed copies drawn from a stream that depends
    on the index only, so "C5" is the same camera whatever seed or hospital count a run uses.
    """
    if index < 0:
        raise ConfigError(f"camera index must be >= 0, got {index}")
    if index < len(_BASE_CAMERAS):
        return _BASE_CAMERAS[index]
    rng = np.random.default_rng(np.random.SeedSequence([0xF1D0, index]))
    base = _BASE_CAMERAS[index % len(_BASE_CAMERAS)]
    mix = np.asarray(base.class_mix) * rng.uniform(0.7, 1.3, 3)
    return replace(
        base,
        name=f"C{index + 1}",
        white_balance=tuple(float(g) for g in np.asarray(base.white_balance) * rng.uniform(0.9, 1.1, 3)),
        fov_radius=float(np.clip(base.fov_radius + rng.uniform(-0.03, 0.03), 0.36, 0.5)),
        blur=float(base.blur * rng.uniform(0.7, 1.3)),
        noise=float(base.noise * rng.uniform(0.7, 1.3)),
        jpeg_quality=int(np.clip(base.jpeg_quality + rng.integers(-10, 11), 50, 98)),
        vignetting=float(np.clip(base.vignetting + rng.uniform(-0.1, 0.1), 0.1, 0.7)),
        class_mix=tuple(float(p) for p in mix / mix.sum()),
    )
