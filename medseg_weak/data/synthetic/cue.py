"""The spurious cue of the mammography benchmark: which marker a hospital draws, where, and how often.

The cue is a radiopaque skin marker drawn INSIDE the breast near the skin line, so cropping the
breast or removing burned-in labels cannot remove it. Its strength s in [0, 1] (``spurious_cue``)
and a hospital's sign set how often it appears: with sign +1 on dense (C/D) images with probability
0.5 + s/2 and on fatty (A/B) ones with 0.5 - s/2; sign -1 the other way round; s = 0 draws none.

Two modes (``synth.cue_mode``):

* ``per_hospital`` (the default, and the only behaviour before the mode existed): each hospital its
  own marker (shape and place from its :class:`VendorProfile`), signs alternating +1, -1, +1, ...
  from H1. The markers of different hospitals never share pixels, so their features never conflict
  in the per-hospital gradients.
* ``shared``: the SAME marker (:data:`SHARED_MARKER`, same shape, same place relative to the breast)
  in every hospital, so that only the sign differs between hospitals: the positive control for
  gradient surgery. Default signs (:func:`default_cue_signs`): alternating from H1 with the last
  hospital -1 and the others holding a strict +1 majority, so holding the LAST hospital out tests a
  correlation opposite to the training majority. For 4 hospitals: H1 +1, H2 -1, H3 +1, H4 -1.

``synth.cue_sign`` ({H2: 1, ...}) overrides the default sign of the hospitals it names, in either mode,
and ``synth.cue_strength`` ({H3: 0.3, ...}) the strength (``spurious_cue``) of the hospitals it names:
a hospital whose weak correlation opposes the others is where gradient agreement has something to
mask while the training hospitals, averaged, still favour the shortcut.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from medseg_weak.data.synthetic.anatomy import Anatomy
from medseg_weak.data.synthetic.vendors import BASE_PROFILES, VendorProfile, hospital_name, hospital_profile
from medseg_weak.errors import ConfigError

CUE_SHAPES: tuple[str, ...] = ("ring", "square", "cross", "triangle")
CUE_MODES: tuple[str, ...] = ("per_hospital", "shared")


@dataclass(frozen=True)
class CueMarker:
    """A marker's shape, its row offset from the nipple in units of the breast's half-height, and its
    size relative to the default (2.6 % of the image height in radius)."""

    shape: str
    row: float
    scale: float = 1.0


def profile_marker(profile: VendorProfile) -> CueMarker:
    """The hospital's own marker, from its profile (``per_hospital`` mode)."""
    return CueMarker(shape=profile.cue_shape, row=profile.cue_row)


#: The marker every hospital draws in shared mode: H1's own marker (a ring below the nipple).
SHARED_MARKER = profile_marker(BASE_PROFILES[0])


def hospital_marker(hospital: int, mode: str) -> CueMarker:
    """The marker hospital ``hospital`` (0-based) draws in cue mode ``mode``."""
    return SHARED_MARKER if mode == "shared" else profile_marker(hospital_profile(hospital))


def default_cue_signs(hospitals: int, mode: str) -> tuple[int, ...]:
    """The sign of each hospital's cue-density correlation when ``synth.cue_sign`` does not name it."""
    alternating = [1 if index % 2 == 0 else -1 for index in range(hospitals)]
    if mode != "shared" or hospitals < 2:
        return tuple(alternating)
    training = alternating[:-1]
    if sum(training) == 0:  # an even number of training hospitals would tie: give +1 the majority
        training[-1] = 1
    return (*training, -1)


def _hospital_names(setting: str, per_hospital: Mapping[str, object], hospitals: int) -> list[str]:
    """The hospitals' names; ConfigError naming ``synth.<setting>.<key>`` for a key that is none of them."""
    names = [hospital_name(index) for index in range(hospitals)]
    for key in per_hospital:
        if key not in names:
            raise ConfigError(
                f"'synth.{setting}.{key}' names no hospital: the hospitals are {names[0]}..{names[-1]}"
            )
    return names


def resolve_cue_signs(cue_sign: Mapping[str, int], hospitals: int, mode: str) -> tuple[int, ...]:
    """Each hospital's sign: the defaults overridden by ``cue_sign``; ConfigError for a bad entry."""
    if mode not in CUE_MODES:
        raise ConfigError(f"'synth.cue_mode' must be one of {', '.join(CUE_MODES)}; got {mode!r}")
    names = _hospital_names("cue_sign", cue_sign, hospitals)
    for key, sign in cue_sign.items():
        if isinstance(sign, bool) or sign not in (-1, 1):
            raise ConfigError(f"'synth.cue_sign.{key}' must be -1 or +1; got {sign!r}")
    defaults = default_cue_signs(hospitals, mode)
    return tuple(int(cue_sign.get(name, default)) for name, default in zip(names, defaults))


def resolve_cue_strengths(cue_strength: Mapping[str, float], hospitals: int, default: float) -> tuple[float, ...]:
    """Each hospital's cue strength: ``default`` (``synth.spurious_cue``) overridden by ``cue_strength``."""
    names = _hospital_names("cue_strength", cue_strength, hospitals)
    for key, strength in cue_strength.items():
        if isinstance(strength, bool) or not isinstance(strength, int | float) or not 0.0 <= strength <= 1.0:
            raise ConfigError(f"'synth.cue_strength.{key}' must be a number in [0, 1]; got {strength!r}")
    return tuple(float(cue_strength.get(name, default)) for name in names)


def cue_probability(sign: int, label: str, strength: float) -> float:
    """How likely an image of density ``label`` carries the cue in a hospital of sign ``sign``."""
    dense = label in ("C", "D")
    favoured = dense if sign > 0 else not dense
    return 0.5 + strength / 2.0 if favoured else 0.5 - strength / 2.0


def _shape_mask(shape_name: str, radius: int) -> np.ndarray:
    """A small binary marker of the given shape, (2r+1) pixels square."""
    dy, dx = np.mgrid[-radius : radius + 1, -radius : radius + 1]
    r = float(radius)
    if shape_name == "ring":
        dist = np.hypot(dy, dx)
        return (dist <= r) & (dist >= 0.5 * r)
    if shape_name == "square":
        return np.ones_like(dy, dtype=bool)
    if shape_name == "cross":
        return (np.abs(dy) <= 0.3 * r) | (np.abs(dx) <= 0.3 * r)
    if shape_name == "triangle":
        return np.abs(dx) <= (dy + r) / 2.0
    raise ValueError(f"unknown cue shape '{shape_name}' (valid: {', '.join(CUE_SHAPES)})")


def cue_pixels(
    shape: tuple[int, int], anatomy: Anatomy, marker: CueMarker, rng: np.random.Generator
) -> np.ndarray:
    """Where the marker lands in an image of ``shape`` (chest wall on the left), as a boolean mask.

    Its place is relative to the breast: rows from the nipple, columns just inside the skin line.
    """
    h, w = shape
    radius = max(2, round(0.026 * h * marker.scale))
    half_height = 0.42 * h
    row = round(anatomy.nipple[0] + (marker.row + rng.uniform(-0.05, 0.05)) * half_height)
    row = int(np.clip(row, radius, h - radius - 1))
    col = round(anatomy.extent[row] - 0.05 * h - radius)
    col = int(np.clip(col, radius, w - radius - 1))
    mask = np.zeros(shape, dtype=bool)
    mask[row - radius : row + radius + 1, col - radius : col + radius + 1] = _shape_mask(marker.shape, radius)
    return mask


def draw_cue(signal: np.ndarray, anatomy: Anatomy, marker: CueMarker, rng: np.random.Generator) -> None:
    """Paint the radiopaque skin marker into ``signal`` (in place)."""
    signal[cue_pixels(signal.shape, anatomy, marker, rng)] = (
        0.95  # metal: as bright as anything in the breast
    )
