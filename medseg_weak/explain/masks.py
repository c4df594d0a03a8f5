"""CAM -> pseudo-mask: pure functions that turn one class activation map into a uint8 pseudo-mask.

One responsibility: given a CAM (float HxW, normally in [0, 1]), an optional region (breast mask or
fundus field of view) and a :class:`MaskRule`, return the pseudo-mask of DESIGN §3 -- uint8 with
``0`` background, ``1`` foreground and ``IGNORE`` (255) for pixels the segmenter must not learn from.
Nothing here reads files, holds state or knows about models; ``generate.py`` wires these functions to
a data set.

Pipeline of :func:`cam_to_mask` (each step a named, registered rule so configs can select it):

1. threshold -- ``THRESHOLDS[rule.threshold]`` computes one number from the CAM values *inside the
   region only*; or explicit ``rule.low`` / ``rule.high`` (IRN-style confident fg / bg seeds);
2. uncertain band -- ``rule.ignore_band`` or the low/high gap becomes ``IGNORE``;
3. refinement -- ``REFINERS[rule.refine]`` may re-decide uncertain pixels from the image;
4. morphology on the foreground -- opening, small-object removal, hole filling;
5. outside the region -- background (0) or ``IGNORE``, per ``rule.outside_region``.

Policies (tested in ``tests/explain/test_masks.py``):

* **Boundary**: a pixel is foreground when ``cam >= t`` (at or above the threshold). Otsu's threshold
  from scikit-image means "strictly above", so the "otsu" rule returns the next float above it,
  which keeps the one ``>=`` convention for every rule.
* **Degenerate CAMs** (empty region, or a CAM constant inside the region, all-zero included) carry no
  localisation. They do not raise: the region becomes background (``rule.degenerate="background"``,
  the default: "no evidence of dense tissue") or ``IGNORE`` (``"ignore"``: "do not learn from this
  image"). :func:`is_degenerate` lets callers count them, and :func:`cams_to_masks` logs how many of a
  batch were degenerate, so a run reports "3 of 200 CAMs were all-zero" instead of crashing.
* **Non-finite CAMs** (NaN or inf anywhere) raise ``ValueError`` naming the count: a NaN is a bug
  upstream (e.g. a 0/0 normalisation), and silently turning it into background would hide it.
* **Inputs**: numpy arrays or torch tensors (converted with ``.detach().cpu()``; the module never
  imports torch). CAMs are computed in float64 so thresholds compare exactly. Regions are truthy
  masks (bool, or any dtype where non-zero means inside).

Dense CRF refinement (IRN uses ``pydensecrf``) is deliberately absent: no maintained dense-CRF package
installs cleanly here. The "intensity" refiner is a small dependency-free stand-in, and
"random_walk" uses scikit-image's random walker seeded by the confident pixels.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from scipy import ndimage as ndi
from skimage.filters import threshold_otsu
from skimage.morphology import disk
from skimage.segmentation import random_walker

from medseg_weak.config import MaskRule
from medseg_weak.core.overlap import IGNORE
from medseg_weak.errors import ConfigError, RegistryError
from medseg_weak.registry import Registry

if TYPE_CHECKING:  # only for annotations: this module works on numpy and never imports torch
    import torch

__all__ = [
    "IGNORE",
    "REFINERS",
    "THRESHOLDS",
    "MaskRule",
    "cam_to_mask",
    "cams_to_masks",
    "class_cam",
    "compute_threshold",
    "is_degenerate",
    "mask_statistics",
]

log = logging.getLogger(__name__)


ThresholdFn = Callable[[np.ndarray, "np.ndarray | None", "MaskRule"], float]
RefineFn = Callable[[np.ndarray, np.ndarray, "np.ndarray | None", np.ndarray, "MaskRule"], np.ndarray]

THRESHOLDS: Registry[ThresholdFn] = Registry("CAM threshold")
"""``(cam, region, rule) -> t``; foreground is ``cam >= t``. Computed over region pixels only."""

REFINERS: Registry[RefineFn] = Registry("pseudo-mask refiner")
"""``(mask, cam, image, region, rule) -> mask``; re-decides uncertain pixels, keeps confident ones."""


# --------------------------------------------------------------------------------------------------
# input conversion


def _to_numpy(x: Any) -> np.ndarray:
    """numpy passes through; torch tensors are detached and moved to the CPU (torch is not imported)."""
    if hasattr(x, "detach"):
        t = x.detach().cpu()
        if str(t.dtype) == "torch.bfloat16":  # numpy has no bfloat16
            t = t.float()
        return t.numpy()
    return np.asarray(x)


def _as_cam(cam: Any) -> np.ndarray:
    cam = _to_numpy(cam)
    if cam.ndim != 2:
        raise ValueError(
            f"CAM must be 2-D (H, W); got shape {cam.shape}. Use class_cam() to pick one class from a "
            "[C, H, W] stack and cams_to_masks() for a batch"
        )
    if cam.dtype.kind not in "biuf":
        raise ValueError(f"CAM must be numeric; got dtype {cam.dtype}")
    cam = cam.astype(np.float64)  # float64 everywhere: thresholds and comparisons are then exact
    bad = ~np.isfinite(cam)
    if bad.any():
        n_nan = int(np.isnan(cam).sum())
        raise ValueError(
            f"CAM has {n_nan} NaN and {int(bad.sum()) - n_nan} infinite value(s) of {cam.size}; "
            "fix the CAM upstream (e.g. a 0/0 normalisation) rather than thresholding it"
        )
    return cam


def _as_region(region: Any, shape: tuple[int, ...]) -> np.ndarray:
    if region is None:
        return np.ones(shape, dtype=bool)
    region = _to_numpy(region)
    if region.shape != shape:
        raise ValueError(f"region shape {region.shape} does not match the CAM's {shape}")
    return region.astype(bool)  # non-zero = inside, so 0/1, 0/255 and bool masks all work


def _as_image(image: Any, shape: tuple[int, ...]) -> np.ndarray | None:
    if image is None:
        return None
    image = _to_numpy(image)
    if image.shape[:2] != shape or image.ndim not in (2, 3):
        raise ValueError(f"image shape {image.shape} does not match the CAM's {shape} (H, W or H, W, C)")
    image = image.astype(np.float64)
    if not np.isfinite(image).all():
        raise ValueError("image has non-finite values")
    return image


def _region_values(cam: np.ndarray, region: np.ndarray | None) -> np.ndarray:
    values = cam if region is None else cam[region.astype(bool)]
    if values.size == 0:
        raise ValueError("the region is empty: no CAM values to compute a threshold from")
    return values.ravel()


# --------------------------------------------------------------------------------------------------
# thresholds: (cam, region, rule) -> t, foreground is cam >= t


@THRESHOLDS.register("fixed")
def fixed_threshold(cam: np.ndarray, region: np.ndarray | None, rule: MaskRule) -> float:
    """``rule.value`` itself, in CAM units."""
    return float(rule.value)


@THRESHOLDS.register("percentile")
def percentile_threshold(cam: np.ndarray, region: np.ndarray | None, rule: MaskRule) -> float:
    """The ``rule.value``-th percentile (linear interpolation) of the region's CAM values.

    About ``100 - value`` percent of the region becomes foreground (more when values tie at ``t``).
    """
    return float(np.percentile(_region_values(cam, region), rule.value))


@THRESHOLDS.register("otsu")
def otsu_threshold(cam: np.ndarray, region: np.ndarray | None, rule: MaskRule) -> float:
    """Otsu's threshold of the region's CAM values (256-bin histogram, scikit-image).

    scikit-image's foreground is ``values > t``; returning the next float above ``t`` makes that the
    same set as our ``values >= t`` rule (the CAM is float64 by then, so the step is exact).
    """
    values = _region_values(cam, region)
    if values.min() == values.max():  # threshold_otsu warns on constant input; nothing lies above it
        return float(np.nextafter(values.max(), np.inf))
    return float(np.nextafter(threshold_otsu(values), np.inf))


@THRESHOLDS.register("mean")
def mean_threshold(cam: np.ndarray, region: np.ndarray | None, rule: MaskRule) -> float:
    """The mean CAM value inside the region."""
    return float(_region_values(cam, region).mean())


@THRESHOLDS.register("max_fraction")
def max_fraction_threshold(cam: np.ndarray, region: np.ndarray | None, rule: MaskRule) -> float:
    """``rule.value`` times the region's maximum: a fixed threshold on a max-normalised CAM (as IRN)."""
    return float(rule.value * _region_values(cam, region).max())


# --------------------------------------------------------------------------------------------------
# refiners: re-decide the uncertain pixels, keep the confident ones


def uncertain_pixels(mask: np.ndarray, region: np.ndarray, band_px: int) -> np.ndarray:
    """Pixels a refiner may change: IGNORE in the region, plus fg/bg pixels within ``band_px`` of the
    fg/bg boundary (the region's own edge is not a boundary)."""
    uncertain = (mask == IGNORE) & region
    if band_px > 0:
        fg, bg = (mask == 1) & region, (mask == 0) & region
        footprint = disk(band_px).astype(bool)
        near_bg, near_fg = ndi.binary_dilation(bg, footprint), ndi.binary_dilation(fg, footprint)
        uncertain |= (fg & near_bg) | (bg & near_fg)
    return uncertain


def _require_image(image: np.ndarray | None, name: str) -> np.ndarray:
    if image is None:
        raise ConfigError(f"'{MaskRule.KEY}.refine' = '{name}' needs the image: pass image= to cam_to_mask")
    return image


@REFINERS.register("none")
def no_refinement(
    mask: np.ndarray, cam: np.ndarray, image: np.ndarray | None, region: np.ndarray, rule: MaskRule
) -> np.ndarray:
    """The thresholded mask as it is."""
    return mask


@REFINERS.register("intensity")
def intensity_refinement(
    mask: np.ndarray, cam: np.ndarray, image: np.ndarray | None, region: np.ndarray, rule: MaskRule
) -> np.ndarray:
    """Uncertain region pixels join the class whose mean image intensity is nearer.

    The means come from the confident fg and bg pixels of the same image, so this needs no global
    intensity calibration (vendors differ); in mammograms dense tissue is the brighter class. A pixel
    exactly between the means keeps its label; without confident pixels of both classes, or when the
    two means are equal, nothing changes. A simple, dependency-free stand-in for IRN's dense CRF.
    """
    image = _require_image(image, "intensity")
    gray = image.mean(axis=-1) if image.ndim == 3 else image
    uncertain = uncertain_pixels(mask, region, rule.refine_band_px)
    fg, bg = (mask == 1) & region & ~uncertain, (mask == 0) & region & ~uncertain
    if not uncertain.any() or not fg.any() or not bg.any():
        return mask
    d_fg = np.abs(gray - gray[fg].mean())
    d_bg = np.abs(gray - gray[bg].mean())
    out = mask.copy()
    out[uncertain & (d_fg < d_bg)] = 1
    out[uncertain & (d_bg < d_fg)] = 0
    return out


@REFINERS.register("random_walk")
def random_walk_refinement(
    mask: np.ndarray, cam: np.ndarray, image: np.ndarray | None, region: np.ndarray, rule: MaskRule
) -> np.ndarray:
    """scikit-image's random walker on the image, seeded by confident fg (1) and bg (2).

    Uncertain pixels are unlabelled; pixels outside the region are inactive (removed from the graph),
    so the walk never leaks through the air around the breast. Without seeds of both classes, or on
    a flat image, nothing changes.
    """
    image = _require_image(image, "random_walk")
    uncertain = uncertain_pixels(mask, region, rule.refine_band_px)
    fg, bg = (mask == 1) & region & ~uncertain, (mask == 0) & region & ~uncertain
    flat = np.ptp(image[region]) == 0
    if not uncertain.any() or not fg.any() or not bg.any() or flat:
        return mask
    labels = np.zeros(mask.shape, dtype=np.int32)
    labels[fg], labels[bg], labels[~region] = 1, 2, -1
    walked = random_walker(image, labels, channel_axis=-1 if image.ndim == 3 else None)
    out = mask.copy()
    out[uncertain & (walked == 1)] = 1
    out[uncertain & (walked == 2)] = 0
    return out


# --------------------------------------------------------------------------------------------------
# the conversion


def is_degenerate(cam: np.ndarray | torch.Tensor, region: np.ndarray | torch.Tensor | None = None) -> bool:
    """True when the CAM cannot localise anything: the region is empty or the CAM is constant inside it
    (an all-zero CAM included). :func:`cam_to_mask` fills such CAMs per ``rule.degenerate``."""
    cam = _as_cam(cam)
    values = cam[_as_region(region, cam.shape)]
    return values.size == 0 or bool(values.min() == values.max())


def compute_threshold(
    cam: np.ndarray | torch.Tensor,
    region: np.ndarray | torch.Tensor | None = None,
    rule: MaskRule = MaskRule(),
) -> float | None:
    """The threshold ``t`` that :func:`cam_to_mask` uses (foreground ``cam >= t``), for recording next
    to the mask; ``None`` for a degenerate CAM or an explicit low/high rule."""
    cam = _as_cam(cam)
    region = _as_region(region, cam.shape)
    if rule.uses_low_high or is_degenerate(cam, region):
        return None
    return THRESHOLDS.get(rule.threshold)(cam, region, rule)


def _threshold(cam: np.ndarray, region: np.ndarray, rule: MaskRule) -> np.ndarray:
    """Three-state mask inside the region (0 / 1 / IGNORE); outside the region is 0 for now."""
    if rule.uses_low_high:
        fg, bg = cam >= rule.high, cam < rule.low
    else:
        t = THRESHOLDS.get(rule.threshold)(cam, region, rule)
        fg, bg = cam >= t, cam < t
        if rule.ignore_band > 0:
            band = np.abs(cam - t) < rule.ignore_band
            fg, bg = fg & ~band, bg & ~band
    mask = np.full(cam.shape, IGNORE, dtype=np.uint8)
    mask[fg] = 1
    mask[bg] = 0
    mask[~region] = 0
    return mask


def _morphology(mask: np.ndarray, region: np.ndarray, rule: MaskRule) -> np.ndarray:
    """Clean the foreground: opening first (cuts thin bridges and lines, so the size filter then sees
    the separated pieces), then small-object removal, then hole filling. Removed pixels become
    background: a speck of CAM is noise, not an uncertain region."""
    fg = mask == 1
    out = mask.copy()
    if rule.opening_radius > 0:
        # scipy rather than skimage's binary_opening (deprecated in 0.26). Erosion treats the image
        # border as foreground, so tissue touching the border is not eaten from outside the picture.
        footprint = disk(rule.opening_radius).astype(bool)
        eroded = ndi.binary_erosion(fg, footprint, border_value=1)
        opened = ndi.binary_dilation(eroded, footprint, border_value=0)
        out[fg & ~opened] = 0
        fg = opened
    if rule.min_object_px > 0:
        # Labelled here rather than with skimage's remove_small_objects, whose size argument changed
        # meaning in 0.26 (min_size "< n" became max_size "<= n"): our rule is "fewer than n pixels".
        labels, _ = ndi.label(fg)
        sizes = np.bincount(labels.ravel())
        small = (sizes < rule.min_object_px)[labels] & fg
        out[small] = 0
        fg = fg & ~small
    if rule.fill_holes:
        holes = ndi.binary_fill_holes(fg) & ~fg & region
        out[holes] = 1
    return out


def cam_to_mask(
    cam: np.ndarray | torch.Tensor,
    region: np.ndarray | torch.Tensor | None = None,
    rule: MaskRule = MaskRule(),
    image: np.ndarray | torch.Tensor | None = None,
) -> np.ndarray:
    """One CAM (H, W) -> uint8 pseudo-mask (H, W) with values in {0, 1, IGNORE}.

    ``region`` (H, W) limits everything to the breast / field of view: thresholds see only region
    values, and pixels outside become ``rule.outside_region``. ``image`` (H, W) or (H, W, C) is needed
    only by the "intensity" and "random_walk" refiners. numpy arrays or torch tensors.
    """
    cam = _as_cam(cam)
    region = _as_region(region, cam.shape)
    image = _as_image(image, cam.shape)
    outside = 0 if rule.outside_region == "background" else IGNORE
    if is_degenerate(cam, region):
        log.debug("degenerate CAM (empty region or constant inside it): region filled as %s", rule.degenerate)
        mask = np.full(cam.shape, 0 if rule.degenerate == "background" else IGNORE, dtype=np.uint8)
    else:
        mask = _threshold(cam, region, rule)
        mask = REFINERS.get(rule.refine)(mask, cam, image, region, rule)
        mask = _morphology(mask, region, rule)
    mask[~region] = outside
    return mask


def cams_to_masks(
    cams: np.ndarray | torch.Tensor | Sequence[np.ndarray | torch.Tensor],
    regions: np.ndarray | torch.Tensor | Sequence[np.ndarray | torch.Tensor | None] | None = None,
    rule: MaskRule = MaskRule(),
    images: np.ndarray | torch.Tensor | Sequence[np.ndarray | torch.Tensor] | None = None,
) -> np.ndarray:
    """A batch: ``cams`` [B, H, W], ``regions`` None or [B, H, W], ``images`` None or [B, H, W(, C)]
    (arrays, tensors or sequences) -> uint8 [B, H, W]; logs how many CAMs were degenerate."""
    cams = _to_numpy(cams) if hasattr(cams, "detach") else cams
    if isinstance(cams, np.ndarray) and cams.ndim != 3:
        raise ValueError(f"cams must be [B, H, W]; got shape {cams.shape}. Use class_cam() on [B, C, H, W]")
    n = len(cams)
    for name, other in (("regions", regions), ("images", images)):
        if other is not None and len(other) != n:
            raise ValueError(f"{name} has {len(other)} entries for {n} CAMs")
    masks, degenerate = [], 0
    for i in range(n):
        region = None if regions is None else regions[i]
        degenerate += is_degenerate(cams[i], region)
        masks.append(cam_to_mask(cams[i], region, rule, None if images is None else images[i]))
    if degenerate:
        log.warning(
            "%d of %d CAMs were degenerate (empty region or constant CAM); their region is %s",
            degenerate,
            n,
            rule.degenerate,
        )
    if not masks:
        return np.zeros(cams.shape if isinstance(cams, np.ndarray) else (0, 0, 0), dtype=np.uint8)
    return np.stack(masks)


def class_cam(
    cams_per_class: np.ndarray | torch.Tensor, target: int | str, labels: Sequence[str] | None = None
) -> np.ndarray:
    """Pick the CAM of one class from a stack [C, H, W] -> [H, W] or [B, C, H, W] -> [B, H, W].

    ``target`` is an index (negative counts from the end, so -1 is the last, e.g. densest, class) or
    a label name looked up in ``labels``. Dense-tissue masks use the densest class for every image,
    not the predicted one (DESIGN §4).
    """
    stack = _to_numpy(cams_per_class)
    if stack.ndim not in (3, 4):
        raise ValueError(f"CAM stack must be [C, H, W] or [B, C, H, W]; got shape {stack.shape}")
    n_classes = stack.shape[-3]
    if isinstance(target, str):
        if labels is None:
            raise ConfigError(f"CAM target '{target}' is a class name, but no class labels were given")
        labels = list(labels)
        if len(labels) != n_classes:
            raise ValueError(f"{len(labels)} labels for a stack of {n_classes} class CAMs")
        if target not in labels:
            raise ConfigError(f"CAM target '{target}' is not a class; classes: {', '.join(labels)}")
        index = labels.index(target)
    elif isinstance(target, (int, np.integer)) and not isinstance(target, bool):
        index = int(target)
        if not -n_classes <= index < n_classes:
            raise ConfigError(f"CAM target index {index} is out of range for {n_classes} classes")
    else:
        raise ConfigError(f"CAM target must be a class index or name; got {target!r}")
    return stack[..., index, :, :]


def mask_statistics(mask: np.ndarray | torch.Tensor) -> dict[str, float | int]:
    """Fractions of foreground / background / IGNORE pixels (of all pixels) and the number of
    4-connected foreground components of one pseudo-mask (H, W)."""
    mask = _to_numpy(mask)
    if mask.ndim != 2:
        raise ValueError(f"mask must be 2-D (H, W); got shape {mask.shape}")
    unexpected = np.setdiff1d(np.unique(mask), [0, 1, IGNORE])
    if unexpected.size:
        raise ValueError(f"mask values must be 0, 1 or {IGNORE}; found {unexpected.tolist()}")
    n = mask.size
    fg = int((mask == 1).sum())
    bg = int((mask == 0).sum())
    return {
        "n_pixels": n,
        "fg_fraction": fg / n if n else 0.0,
        "bg_fraction": bg / n if n else 0.0,
        "ignore_fraction": (n - fg - bg) / n if n else 0.0,
        "n_components": int(ndi.label(mask == 1)[1]),
    }


def check_rule(rule: MaskRule) -> None:
    """Raise one ConfigError naming every unknown threshold / refiner name of ``rule`` (the
    section's own values were checked when it was built)."""
    problems = []
    for name, registry in (("threshold", THRESHOLDS), ("refine", REFINERS)):
        try:
            registry.get(getattr(rule, name))
        except RegistryError as err:
            problems.append(f"'{rule.KEY}.{name}': {err}")
    if problems:
        raise ConfigError("; ".join(problems))
