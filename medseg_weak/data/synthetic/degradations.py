"""Fundus image quality: the grade of an eye, the degradations that justify it, and how each is drawn.

The plan (grade, then degradations) is drawn without pixels from its own random stream; each
degradation returns the new image and a boolean map of the pixels it changed, and bit ``i`` of a
mask PNG is ``DEGRADATIONS[i]``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy.ndimage import gaussian_filter

from medseg_weak.data.manifest import QUALITY_LABELS
from medseg_weak.data.synthetic.cameras import CameraProfile
from medseg_weak.data.synthetic.retina import Geometry, draw_capsules

DEGRADATIONS: tuple[str, ...] = ("blur", "illumination", "exposure", "artefact")
"""Bit ``i`` of a mask PNG is set where ``DEGRADATIONS[i]`` changed the pixel."""

NEGLIGIBLE, MILD, SEVERE = 0, 1, 2
"""Degradation levels: Good images get at most negligible ones, Usable mild, Reject at least one severe."""


@dataclass(frozen=True)
class EyePlan:
    grade: str
    degradations: tuple[tuple[str, int], ...]  # (name, level) in the order they are applied


APPLY_ORDER: tuple[str, ...] = ("blur", "illumination", "artefact", "exposure")  # exposure is the sensor


def plan_eye(rng: np.random.Generator, camera: CameraProfile) -> EyePlan:
    """Grade first (the camera's population), then degradations that justify it."""
    grade = QUALITY_LABELS[int(rng.choice(3, p=camera.class_mix))]
    weights = np.asarray(camera.degradation_mix, dtype=float)
    weights /= weights.sum()
    chosen: dict[str, int] = {}
    if grade == "Good":
        if rng.random() < 0.3:
            chosen["artefact"] = NEGLIGIBLE  # a faint dust speck or two: graders still call it Good
    elif grade == "Usable":
        count = 1 if rng.random() < 0.65 else 2
        for i in rng.choice(len(DEGRADATIONS), size=count, replace=False, p=weights):
            chosen[DEGRADATIONS[int(i)]] = MILD
    else:
        main = int(rng.choice(len(DEGRADATIONS), p=weights))
        chosen[DEGRADATIONS[main]] = SEVERE
        if rng.random() < 0.35:
            others = [i for i in range(len(DEGRADATIONS)) if i != main]
            chosen[DEGRADATIONS[int(rng.choice(others))]] = MILD
    return EyePlan(grade, tuple((name, chosen[name]) for name in APPLY_ORDER if name in chosen))


Degrade = Callable[[np.ndarray, Geometry, int, np.random.Generator], tuple[np.ndarray, np.ndarray]]


def _smoothstep(edge0: float, edge1: float, x: np.ndarray) -> np.ndarray:
    t = np.clip((x - edge0) / (edge1 - edge0), 0.0, 1.0)
    return t * t * (3 - 2 * t)


def _gauss_blob(geo: Geometry, centre: tuple[float, float], radius: float, power: float = 2.0) -> np.ndarray:
    d = np.hypot(geo.xx - centre[0], geo.yy - centre[1]) / radius
    return np.exp(-(d**power)).astype(np.float32)


def _polar(geo: Geometry, angle: float, distance: float) -> tuple[float, float]:
    return geo.cx + distance * geo.radius * math.cos(angle), geo.cy + distance * geo.radius * math.sin(angle)


def _blur(
    img: np.ndarray, geo: Geometry, level: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Severe: strong global defocus. Mild: a peripheral region out of focus (disc stays sharp)."""
    if level >= SEVERE:
        sigma = rng.uniform(3.5, 6.0) * geo.scale
        return gaussian_filter(img, (sigma, sigma, 0)), geo.fov > 0.5
    sigma = rng.uniform(3.0, 4.5) * geo.scale
    angle = math.atan2(geo.disc[1] - geo.cy, geo.disc[0] - geo.cx) + math.pi + rng.uniform(-1.6, 1.6)
    weight = _gauss_blob(
        geo, _polar(geo, angle, rng.uniform(0.5, 0.8)), rng.uniform(0.55, 0.8) * geo.radius, 4
    )
    blurred = gaussian_filter(img, (sigma, sigma, 0))
    w = weight[..., None]
    return img * (1 - w) + blurred * w, weight > 0.5


_HAZE_COLOUR = np.array([0.95, 0.85, 0.70], dtype=np.float32)


def _illumination(
    img: np.ndarray, geo: Geometry, level: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Severe: a large dark region (or dense haze) over the disc and macula. Mild: a peripheral one."""
    haze = rng.random() < 0.3
    if level >= SEVERE:
        t = rng.uniform(0.0, 1.0)
        centre = (
            geo.disc[0] * t + geo.macula[0] * (1 - t) + rng.normal(0, 0.1) * geo.radius,
            geo.disc[1] * t + geo.macula[1] * (1 - t) + rng.normal(0, 0.1) * geo.radius,
        )
        weight = _gauss_blob(geo, centre, rng.uniform(0.65, 0.95) * geo.radius, 3)
        strength = rng.uniform(0.6, 0.8) if haze else rng.uniform(0.75, 0.92)
    else:
        angle = rng.uniform(0, 2 * math.pi)
        proj = ((geo.xx - geo.cx) * math.cos(angle) + (geo.yy - geo.cy) * math.sin(angle)) / geo.radius
        weight = _smoothstep(rng.uniform(0.15, 0.35), 1.0, proj)
        strength = rng.uniform(0.35, 0.5) if haze else rng.uniform(0.5, 0.7)
    alpha = (strength * weight)[..., None]
    if haze:  # a veil of scattered light: brighter and low contrast
        out = img * (1 - alpha) + alpha * _HAZE_COLOUR * float(img[geo.fov > 0.5].mean() * 2)
    else:
        out = img * (1 - alpha)
    return out, strength * weight > 0.15


def _exposure(
    img: np.ndarray, geo: Geometry, level: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """A global gain and gamma with clipping; it changes the whole field of view."""
    over = rng.random() < 0.5
    if level >= SEVERE:
        gain, gamma = (
            (rng.uniform(2.0, 2.8), rng.uniform(0.6, 0.85)) if over else (rng.uniform(0.12, 0.25), 1.3)
        )
    else:
        gain, gamma = (rng.uniform(1.45, 1.75), 1.0) if over else (rng.uniform(0.42, 0.55), 1.0)
    return np.clip(img * gain, 0.0, 1.0) ** gamma, geo.fov > 0.5


def _dust(
    geo: Geometry,
    rng: np.random.Generator,
    count: int,
    radius: tuple[float, float],
    contrast: tuple[float, float],
) -> np.ndarray:
    """Darkening from out-of-focus dust on the lens: small soft dark discs anywhere in the field."""
    dark = np.zeros((geo.size, geo.size), np.float32)
    for _ in range(count):
        centre = _polar(geo, rng.uniform(0, 2 * math.pi), math.sqrt(rng.uniform(0, 0.8)))
        r = rng.uniform(*radius) * geo.radius
        d = np.hypot(geo.xx - centre[0], geo.yy - centre[1]) / r
        np.maximum(dark, rng.uniform(*contrast) * _smoothstep(1.0, 0.3, d), out=dark)
    return dark


def _eyelash(geo: Geometry, rng: np.random.Generator, depth: float, strength: float) -> np.ndarray:
    """A dark curved band from the top or bottom of the field, with a few lash strands at its edge."""
    top = rng.random() < 0.6
    y = geo.yy - geo.cy if top else geo.cy - geo.yy  # > 0 going away from the lid
    x = (geo.xx - geo.cx - rng.uniform(-0.3, 0.3) * geo.radius) / geo.radius
    edge = (-1 + depth) * geo.radius + rng.uniform(0.1, 0.3) * geo.radius * (1 - x**2)  # sags in the middle
    band = _smoothstep(0.08 * geo.radius, -0.08 * geo.radius, y - edge) * strength
    strands: list[tuple[float, float, float, float, float]] = []
    for _ in range(int(rng.integers(3, 8))):
        sx = geo.cx + rng.uniform(-0.7, 0.7) * geo.radius
        sy = geo.cy + ((-1 + depth) * geo.radius) * (1 if top else -1)
        angle = (math.pi / 2 if top else -math.pi / 2) + rng.uniform(-0.6, 0.6)
        length, w = rng.uniform(0.15, 0.35) * geo.radius, rng.uniform(1.5, 3.0) * geo.scale
        for _ in range(6):
            nx, ny = sx + length / 6 * math.cos(angle), sy + length / 6 * math.sin(angle)
            strands.append((sx, sy, nx, ny, w))
            sx, sy, angle = nx, ny, angle + rng.normal(0, 0.15)
            w *= 0.85
    lash = np.zeros_like(band)
    draw_capsules(lash, strands, geo.scale)
    return np.maximum(band, gaussian_filter(lash, 1.0 * geo.scale) * strength)


def _flare(
    geo: Geometry, rng: np.random.Generator, distance: float, radius: float, strength: float
) -> np.ndarray:
    return (
        _gauss_blob(geo, _polar(geo, rng.uniform(0, 2 * math.pi), distance), radius * geo.radius) * strength
    )


_FLARE_COLOUR = np.array([0.95, 0.95, 1.0], dtype=np.float32)


def _artefact(
    img: np.ndarray, geo: Geometry, level: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Eyelash shadow, dust spots or lens flare; negligible means a faint speck or two of dust."""
    dark = np.zeros((geo.size, geo.size), np.float32)
    bright = np.zeros_like(dark)
    if level == NEGLIGIBLE:
        dark = _dust(geo, rng, int(rng.integers(1, 3)), (0.012, 0.02), (0.08, 0.15))
    else:
        kind = rng.choice(
            ["eyelash", "dust", "flare"], p=[0.4, 0.3, 0.3] if level == MILD else [0.6, 0.0, 0.4]
        )
        if kind == "eyelash":
            depth, strength = (
                (rng.uniform(0.12, 0.3), rng.uniform(0.5, 0.75))
                if level == MILD
                else (rng.uniform(0.9, 1.2), rng.uniform(0.85, 0.95))
            )
            dark = _eyelash(geo, rng, depth, strength)
        elif kind == "dust":
            dark = _dust(geo, rng, int(rng.integers(6, 14)), (0.04, 0.07), (0.35, 0.6))
        elif level == MILD:
            bright = _flare(geo, rng, rng.uniform(0.85, 1.0), rng.uniform(0.25, 0.4), rng.uniform(0.5, 0.8))
        else:
            bright = _flare(geo, rng, rng.uniform(0.0, 0.4), rng.uniform(0.6, 0.85), rng.uniform(0.8, 0.95))
    out = img * (1 - dark[..., None])
    out = out + bright[..., None] * (_FLARE_COLOUR - out)
    return out, (dark > 0.05) | (bright > 0.15)


DEGRADE: dict[str, Degrade] = {
    "blur": _blur,
    "illumination": _illumination,
    "exposure": _exposure,
    "artefact": _artefact,
}
