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
import math
import multiprocessing
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from PIL import Image
from scipy.ndimage import gaussian_filter
from scipy.special import expit

from medseg_weak.data.manifest import QUALITY_LABELS, Record
from medseg_weak.errors import ConfigError
from medseg_weak.io_utils import atomic_write_bytes

DEGRADATIONS: tuple[str, ...] = ("blur", "illumination", "exposure", "artefact")
"""Bit ``i`` of a mask PNG is set where ``DEGRADATIONS[i]`` changed the pixel."""

NEGLIGIBLE, MILD, SEVERE = 0, 1, 2
"""Degradation levels: Good images get at most negligible ones, Usable mild, Reject at least one severe."""

LATERALITIES: tuple[str, ...] = ("R", "L")
_REFERENCE_SIZE = 256  # every length in pixels below is given at 256 px and scaled with the image


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


# --------------------------------------------------------------------------------------------------
# Plan: grade and degradations, drawn without pixels
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _EyePlan:
    grade: str
    degradations: tuple[tuple[str, int], ...]  # (name, level) in the order they are applied


_APPLY_ORDER: tuple[str, ...] = ("blur", "illumination", "artefact", "exposure")  # exposure is the sensor


def _plan_eye(rng: np.random.Generator, camera: CameraProfile) -> _EyePlan:
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
    return _EyePlan(grade, tuple((name, chosen[name]) for name in _APPLY_ORDER if name in chosen))


# --------------------------------------------------------------------------------------------------
# Anatomy
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Patient:
    """Traits both eyes share, so that a patient's two photographs look like the same person."""

    colour: tuple[float, float, float]
    disc_scale: float
    vessel_scale: float
    cup_to_disc: float
    texture: float


def _draw_patient(rng: np.random.Generator) -> _Patient:
    brightness = rng.uniform(0.82, 1.05)
    colour = (
        0.86 * brightness,
        rng.uniform(0.30, 0.42) * brightness,
        rng.uniform(0.15, 0.24) * brightness,
    )
    return _Patient(
        colour=colour,
        disc_scale=rng.uniform(0.9, 1.1),
        vessel_scale=rng.uniform(0.85, 1.15),
        cup_to_disc=rng.uniform(0.25, 0.55),
        texture=rng.uniform(0.5, 1.5),
    )


@dataclass(frozen=True, eq=False)
class _Geometry:
    """Where things are in one image, in pixels; ``fov`` is the soft field-of-view mask."""

    size: int
    scale: float
    cx: float
    cy: float
    radius: float
    disc: tuple[float, float]
    disc_radius: float
    macula: tuple[float, float]
    fov: np.ndarray
    yy: np.ndarray
    xx: np.ndarray

    def mirrored(self) -> _Geometry:
        """The left eye: the same geometry flipped left-right (the FOV is symmetric)."""
        flip = self.size - 1
        return replace(
            self,
            disc=(flip - self.disc[0], self.disc[1]),
            macula=(flip - self.macula[0], self.macula[1]),
            fov=np.ascontiguousarray(self.fov[:, ::-1]),
        )


def _geometry(camera: CameraProfile, patient: _Patient, rng: np.random.Generator, size: int) -> _Geometry:
    """Canonical right eye: macula near the centre, disc 2.5 disc diameters to its right (nasal)."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    c = (size - 1) / 2
    radius = camera.fov_radius * size
    disc_radius = 0.135 * radius * patient.disc_scale
    macula = (c + rng.uniform(-0.22, -0.02) * radius, c + rng.uniform(-0.04, 0.06) * radius)
    disc = (
        macula[0] + 2.5 * 2 * disc_radius * rng.uniform(0.92, 1.08),
        macula[1] - rng.uniform(0.0, 0.1) * radius,
    )
    r = np.hypot(xx - c, yy - c)
    fov = np.clip(radius - r + 0.5, 0, 1) * np.clip(camera.crop * radius - np.abs(yy - c) + 0.5, 0, 1)
    return _Geometry(size, size / _REFERENCE_SIZE, c, c, radius, disc, disc_radius, macula, fov, yy, xx)


def _grow_vessel(
    rng: np.random.Generator,
    geo: _Geometry,
    start: tuple[float, float],
    heading: float,
    width: float,
    length: float,
    curvature: float,
    depth: int,
    out: list[tuple[float, float, float, float, float]],
) -> None:
    """Append the segments ``(x0, y0, x1, y1, width)`` of one vessel and its branches to ``out``.

    A vessel is a random walk whose heading turns by ``curvature`` (fading with distance, which is
    what bends the temporal arcades around the macula and then lets them run straight); branches leave
    at 25-65 degrees, thinner than their parent, down to ``depth`` generations.
    """
    step = 0.03 * geo.radius
    fade = 0.7 * geo.radius
    min_width = 0.45 * geo.scale
    foveal_zone = 0.8 * geo.disc_radius
    stack = [(start[0], start[1], heading, width, length, curvature, depth)]
    while stack:
        x, y, theta, w0, total, kappa, level = stack.pop()
        n = max(1, int(total / step))
        wiggle = 0.05 + 0.03 * (3 - level)
        for i in range(n):
            theta += kappa * math.exp(-i * step / fade) * step + rng.normal(0.0, wiggle)
            nx, ny = x + step * math.cos(theta), y + step * math.sin(theta)
            w = w0 * (1.0 - 0.45 * i / n)
            out.append((x, y, nx, ny, w))
            x, y = nx, ny
            if math.hypot(x - geo.cx, y - geo.cy) > 1.03 * geo.radius:
                break
            if math.hypot(x - geo.macula[0], y - geo.macula[1]) < foveal_zone:
                break  # capillaries end before the avascular fovea; nothing crosses it
            if level > 0 and i > 1 and rng.random() < 0.12:
                child_w = w * rng.uniform(0.5, 0.75)
                if child_w >= min_width:
                    side = 1.0 if rng.random() < 0.5 else -1.0
                    stack.append(
                        (
                            x,
                            y,
                            theta + side * rng.uniform(0.45, 1.1),
                            child_w,
                            max(step, (n - i) * step * rng.uniform(0.4, 0.9)),
                            rng.normal(0.0, 1.5) / geo.radius,
                            level - 1,
                        )
                    )


def _vessel_tree(
    rng: np.random.Generator, geo: _Geometry, patient: _Patient
) -> tuple[list[tuple[float, float, float, float, float]], list[tuple[float, float, float, float, float]]]:
    """Vein and artery segments: temporal arcades above and below the macula, nasal trunks, small ones."""
    veins: list[tuple[float, float, float, float, float]] = []
    arteries: list[tuple[float, float, float, float, float]] = []
    radius, rd = geo.radius, geo.disc_radius
    vein_w = 0.028 * radius * patient.vessel_scale

    def emerge(angle: float) -> tuple[float, float]:
        return geo.disc[0] + 0.2 * rd * math.cos(angle), geo.disc[1] + 0.2 * rd * math.sin(angle)

    for sign in (-1.0, 1.0):  # -1: superior (image up), +1: inferior
        for out, w_factor, jitter in ((veins, 1.0, 0.0), (arteries, 0.72, rng.uniform(-0.25, 0.25))):
            # Temporal arcade: leaves vertically, bends temporally (towards -x) around the macula.
            angle = sign * (math.pi / 2 + rng.uniform(0.25, 0.5)) + jitter
            kappa = sign * rng.uniform(1.6, 2.2) / radius
            _grow_vessel(
                rng,
                geo,
                emerge(angle),
                angle,
                vein_w * w_factor,
                rng.uniform(1.5, 1.9) * radius,
                kappa,
                3,
                out,
            )
            # Nasal trunk: up/down and towards the nose (+x), mildly curved.
            angle = sign * (math.pi / 2 - rng.uniform(0.5, 0.8)) + jitter
            kappa = -sign * rng.uniform(0.3, 0.8) / radius
            _grow_vessel(
                rng,
                geo,
                emerge(angle),
                angle,
                0.8 * vein_w * w_factor,
                rng.uniform(0.8, 1.1) * radius,
                kappa,
                3,
                out,
            )
    for _ in range(int(rng.integers(2, 5))):  # small papillomacular and nasal vessels
        temporal = rng.random() < 0.6
        angle = (math.pi if temporal else 0.0) + rng.uniform(-0.35, 0.35)
        out = veins if rng.random() < 0.5 else arteries
        _grow_vessel(
            rng,
            geo,
            emerge(angle),
            angle,
            vein_w * rng.uniform(0.3, 0.45),
            (0.35 if temporal else 0.6) * radius * rng.uniform(0.8, 1.2),
            rng.normal(0.0, 1.0) / radius,
            1,
            out,
        )
    return veins, arteries


def _draw_capsules(
    canvas: np.ndarray, segments: Iterable[tuple[float, float, float, float, float]], scale: float
) -> None:
    """Anti-aliased thick segments (max-combined), each valued by coverage times width contrast.

    Drawn from the distance to each segment rather than with ``skimage.draw`` polygons because it
    gives sub-pixel widths for free: a 0.5 px capillary becomes a faint line instead of vanishing or
    turning into a 1 px staircase, which matters at 128 px where most branches are thinner than that.
    """
    height, width = canvas.shape
    for x0, y0, x1, y1, w in segments:
        half = max(w, 1.0) / 2
        pad = half + 1.5
        xa, xb = max(int(min(x0, x1) - pad), 0), min(int(max(x0, x1) + pad) + 1, width)
        ya, yb = max(int(min(y0, y1) - pad), 0), min(int(max(y0, y1) + pad) + 1, height)
        if xa >= xb or ya >= yb:
            continue
        ys = np.arange(ya, yb, dtype=np.float32)[:, None] - y0
        xs = np.arange(xa, xb, dtype=np.float32)[None, :] - x0
        dx, dy = x1 - x0, y1 - y0
        # ufuncs rather than np.clip: this loop runs thousands of times per image on tiny arrays.
        t = np.minimum(np.maximum((xs * dx + ys * dy) * (1.0 / (dx * dx + dy * dy + 1e-9)), 0.0), 1.0)
        dist = np.hypot(xs - t * dx, ys - t * dy)
        contrast = 0.55 + 0.45 * min(1.0, w / (3.0 * scale))  # thin vessels are paler
        value = np.minimum(np.maximum(half + 0.5 - dist, 0.0), 1.0) * (min(w, 1.0) * contrast)
        np.maximum(canvas[ya:yb, xa:xb], value, out=canvas[ya:yb, xa:xb])


_VEIN_ABSORPTION = np.array([0.42, 0.64, 0.52], dtype=np.float32)  # darker, purplish red
_ARTERY_ABSORPTION = np.array([0.22, 0.44, 0.36], dtype=np.float32)  # lighter red
_DISC_COLOUR = np.array([1.0, 0.74, 0.46], dtype=np.float32)  # yellowish orange-pink rim
_CUP_COLOUR = np.array([1.0, 0.95, 0.80], dtype=np.float32)  # paler, almost white


def _retina(rng: np.random.Generator, geo: _Geometry, patient: _Patient) -> np.ndarray:
    """The scene in front of the camera (full frame, float32 RGB): background, macula, disc, vessels."""
    size, sc = geo.size, geo.scale
    xx, yy = geo.xx, geo.yy
    fine = gaussian_filter(rng.standard_normal((size, size), dtype=np.float32), 0.9 * sc)
    fine /= fine.std() + 1e-6
    coarse = gaussian_filter(rng.standard_normal((size, size), dtype=np.float32), 7.0 * sc)
    coarse /= coarse.std() + 1e-6
    # Choroidal texture shows mostly in red and green; blue is dark and noisy anyway.
    texture = patient.texture * 0.03 * fine + 0.05 * coarse
    img = np.asarray(patient.colour, dtype=np.float32) * (
        1 + texture[..., None] * np.float32([0.6, 1.0, 0.7])
    )

    rd = geo.disc_radius
    d_mac = np.hypot(xx - geo.macula[0], yy - geo.macula[1]) / rd
    macula = np.exp(-((d_mac / 1.6) ** 2))
    pit = np.exp(-((d_mac / 0.35) ** 2))
    img *= (
        1
        - macula[..., None] * np.float32([0.16, 0.30, 0.22])
        - pit[..., None] * np.float32([0.08, 0.14, 0.1])
    )
    img += (0.12 * np.exp(-((d_mac / 0.06) ** 2)))[..., None]  # foveal reflex

    d_disc = np.hypot((xx - geo.disc[0]) / rd, (yy - geo.disc[1]) / (1.08 * rd))
    disc = 0.92 * expit((1 - d_disc) / 0.07)
    disc_colour = _DISC_COLOUR * (1 + 0.06 * fine[..., None])
    img = img * (1 - disc[..., None]) + disc[..., None] * disc_colour
    d_cup = np.hypot((xx - geo.disc[0] + 0.15 * rd) / rd, (yy - geo.disc[1]) / (1.08 * rd))
    cup = 0.85 * expit((patient.cup_to_disc - d_cup) / 0.06)
    img = img * (1 - cup[..., None]) + cup[..., None] * _CUP_COLOUR

    veins, arteries = _vessel_tree(rng, geo, patient)
    vein_map = np.zeros((size, size), np.float32)
    artery_map = np.zeros((size, size), np.float32)
    _draw_capsules(vein_map, veins, sc)
    _draw_capsules(artery_map, arteries, sc)
    avascular = 1 - np.exp(-((d_mac / 0.7) ** 2))  # the fovea has no vessels
    for vessel_map, absorption in ((vein_map, _VEIN_ABSORPTION), (artery_map, _ARTERY_ABSORPTION)):
        soft = gaussian_filter(vessel_map, 0.5 * sc) * avascular
        img *= 1 - soft[..., None] * absorption
    return img


# --------------------------------------------------------------------------------------------------
# Degradations: each returns the new image and a boolean map of the pixels it changed
# --------------------------------------------------------------------------------------------------

Degrade = Callable[[np.ndarray, _Geometry, int, np.random.Generator], tuple[np.ndarray, np.ndarray]]


def _smoothstep(edge0: float, edge1: float, x: np.ndarray) -> np.ndarray:
    t = np.clip((x - edge0) / (edge1 - edge0), 0.0, 1.0)
    return t * t * (3 - 2 * t)


def _gauss_blob(geo: _Geometry, centre: tuple[float, float], radius: float, power: float = 2.0) -> np.ndarray:
    d = np.hypot(geo.xx - centre[0], geo.yy - centre[1]) / radius
    return np.exp(-(d**power)).astype(np.float32)


def _polar(geo: _Geometry, angle: float, distance: float) -> tuple[float, float]:
    return geo.cx + distance * geo.radius * math.cos(angle), geo.cy + distance * geo.radius * math.sin(angle)


def _blur(
    img: np.ndarray, geo: _Geometry, level: int, rng: np.random.Generator
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
    img: np.ndarray, geo: _Geometry, level: int, rng: np.random.Generator
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
    img: np.ndarray, geo: _Geometry, level: int, rng: np.random.Generator
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
    geo: _Geometry,
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


def _eyelash(geo: _Geometry, rng: np.random.Generator, depth: float, strength: float) -> np.ndarray:
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
    _draw_capsules(lash, strands, geo.scale)
    return np.maximum(band, gaussian_filter(lash, 1.0 * geo.scale) * strength)


def _flare(
    geo: _Geometry, rng: np.random.Generator, distance: float, radius: float, strength: float
) -> np.ndarray:
    return (
        _gauss_blob(geo, _polar(geo, rng.uniform(0, 2 * math.pi), distance), radius * geo.radius) * strength
    )


_FLARE_COLOUR = np.array([0.95, 0.95, 1.0], dtype=np.float32)


def _artefact(
    img: np.ndarray, geo: _Geometry, level: int, rng: np.random.Generator
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


_DEGRADE: dict[str, Degrade] = {
    "blur": _blur,
    "illumination": _illumination,
    "exposure": _exposure,
    "artefact": _artefact,
}


# --------------------------------------------------------------------------------------------------
# Camera and image assembly
# --------------------------------------------------------------------------------------------------


def _camera(img: np.ndarray, geo: _Geometry, camera: CameraProfile, rng: np.random.Generator) -> np.ndarray:
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


def _vignetting(geo: _Geometry, strength: float) -> np.ndarray:
    r = np.hypot(geo.xx - geo.cx, geo.yy - geo.cy) / geo.radius
    return (1 - strength * np.clip(r, 0, 1.2) ** 2.5).astype(np.float32)


def _render_eye(
    camera: CameraProfile,
    patient: _Patient,
    laterality: str,
    plan: _EyePlan,
    rng: np.random.Generator,
    size: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Pixels for one planned eye: uint8 RGB image and uint8 degradation bit-mask."""
    geo = _geometry(camera, patient, rng, size)
    img = _retina(rng, geo, patient) * _vignetting(geo, camera.vignetting)[..., None]
    if laterality == "L":  # the disc is nasal: mirror the canonical right eye
        img = np.ascontiguousarray(img[:, ::-1])
        geo = geo.mirrored()
    mask = np.zeros((size, size), np.uint8)
    inside = geo.fov > 0.5
    for name, level in plan.degradations:
        img, affected = _DEGRADE[name](img, geo, level, rng)
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
    patient = _draw_patient(np.random.default_rng(patient_seq))
    patient_id = f"{camera.name}_P{task.patient_index:04d}"
    records = []
    for laterality, eye_seq in zip(LATERALITIES[: task.eyes], eye_seqs):
        plan_seq, pixel_seq = eye_seq.spawn(2)
        plan = _plan_eye(np.random.default_rng(plan_seq), camera)
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
    if n_per_hospital < 0:
        raise ConfigError(f"n_per_hospital must be >= 0, got {n_per_hospital}")
    if hospitals < 1:
        raise ConfigError(f"hospitals must be >= 1, got {hospitals}")
    if size < 64:
        raise ConfigError(f"size must be >= 64 pixels for a recognisable fundus, got {size}")
    if workers < 1:
        raise ConfigError(f"workers must be >= 1, got {workers}")
    out_dir = Path(out_dir)
    tasks = [
        _PatientTask(out_dir, seed, camera_index, patient, min(2, n_per_hospital - 2 * patient), size)
        for camera_index in range(hospitals)
        for patient in range((n_per_hospital + 1) // 2)
    ]
    records: list[Record] = []
    for patient_records in _run(tasks, workers):
        for record in patient_records:
            records.append(record)
            if progress is not None:
                progress(1)
    return records


def _run(tasks: list[_PatientTask], workers: int) -> Iterator[list[Record]]:
    """Results in task order, whatever the number of processes (so records and files never depend on it)."""
    if workers == 1 or len(tasks) <= 1:
        yield from map(_make_patient, tasks)
        return
    # spawn, not fork: the caller may already hold threads (torch, a progress bar) that fork would copy.
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=min(workers, len(tasks)), mp_context=context) as pool:
        yield from pool.map(_make_patient, tasks, chunksize=max(1, min(8, len(tasks) // (4 * workers))))
