"""The scene in front of a fundus camera: patient traits, geometry, vessel tree, disc, macula.

Drawn as a canonical right eye (optic disc on the image's right, the nasal side, and the macula
about 2.5 disc diameters temporal to it); left eyes are mirrored by the image assembly.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, replace

import numpy as np
from scipy.ndimage import gaussian_filter
from scipy.special import expit

from medseg_weak.data.synthetic.cameras import CameraProfile

REFERENCE_SIZE = 256  # every length in pixels below is given at 256 px and scaled with the image


@dataclass(frozen=True)
class Patient:
    """Traits both eyes share, so that a patient's two photographs look like the same person."""

    colour: tuple[float, float, float]
    disc_scale: float
    vessel_scale: float
    cup_to_disc: float
    texture: float


def draw_patient(rng: np.random.Generator) -> Patient:
    brightness = rng.uniform(0.82, 1.05)
    colour = (
        0.86 * brightness,
        rng.uniform(0.30, 0.42) * brightness,
        rng.uniform(0.15, 0.24) * brightness,
    )
    return Patient(
        colour=colour,
        disc_scale=rng.uniform(0.9, 1.1),
        vessel_scale=rng.uniform(0.85, 1.15),
        cup_to_disc=rng.uniform(0.25, 0.55),
        texture=rng.uniform(0.5, 1.5),
    )


@dataclass(frozen=True, eq=False)
class Geometry:
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

    def mirrored(self) -> Geometry:
        """The left eye: the same geometry flipped left-right (the FOV is symmetric)."""
        flip = self.size - 1
        return replace(
            self,
            disc=(flip - self.disc[0], self.disc[1]),
            macula=(flip - self.macula[0], self.macula[1]),
            fov=np.ascontiguousarray(self.fov[:, ::-1]),
        )


def draw_geometry(camera: CameraProfile, patient: Patient, rng: np.random.Generator, size: int) -> Geometry:
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
    return Geometry(size, size / REFERENCE_SIZE, c, c, radius, disc, disc_radius, macula, fov, yy, xx)


def _grow_vessel(
    rng: np.random.Generator,
    geo: Geometry,
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
    rng: np.random.Generator, geo: Geometry, patient: Patient
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


def draw_capsules(
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


def draw_retina(rng: np.random.Generator, geo: Geometry, patient: Patient) -> np.ndarray:
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
    draw_capsules(vein_map, veins, sc)
    draw_capsules(artery_map, arteries, sc)
    avascular = 1 - np.exp(-((d_mac / 0.7) ** 2))  # the fovea has no vessels
    for vessel_map, absorption in ((vein_map, _VEIN_ABSORPTION), (artery_map, _ARTERY_ABSORPTION)):
        soft = gaussian_filter(vessel_map, 0.5 * sc) * avascular
        img *= 1 - soft[..., None] * absorption
    return img
