"""Transformation sets: named, parameterised families of deterministic image transformations.

One responsibility: say what each transformation does to a batch ``[B, C, H, W]`` of images in [0, 1]
and, for the spatial ones, to a batch of activation maps ``[B, C', h, w]`` of any resolution (the
same-equivariance measures and CAM equivariance need T applied to a map, and T^-1 to undo it).

Every spatial parameter is resolution-free (degrees, zoom factor, fraction of the side), so one
parameter moves an image and its coarser feature map alike. Every transformation is deterministic:
Gaussian noise draws one noise field per parameter from a seeded generator, the same for every image
of every batch, so a result never depends on how the images were batched.

The 11 sets of the seed study (identity, brightness, contrast, grayscale, colour inversion,
posterisation, solarisation, scale, perspective, rotation, translation) plus gamma, Gaussian blur,
Gaussian noise, JPEG compression and a vendor-style intensity curve for medical images are in
:data:`TRANSFORMATION_SETS`; ``TRANSFORMATION_SETS.get(name)(low=..., high=..., steps=...)`` builds one.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import overload

import torch
import torchvision.transforms.v2.functional as F

from medseg_weak.errors import ConfigError
from medseg_weak.registry import Registry

__all__ = [
    "TRANSFORMATION_SETS",
    "Transformation",
    "TransformationSet",
    "check_transformations",
    "make_transformation_set",
    "parameter_range",
]

# (batch [B, C, H, W], parameter) -> batch of the same shape
Op = Callable[[torch.Tensor, float], torch.Tensor]


@dataclass(frozen=True)
class Transformation:
    """One member of a set: a callable on batches, with its parameter and, if spatial, its map action."""

    set_name: str
    param: float
    op: Op
    spatial: bool
    inverse_op: Op | None = None

    @property
    def label(self) -> str:
        return f"{self.set_name}({self.param:g})"

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        if images.ndim != 4:
            raise ValueError(f"{self.label}: expects a batch [B, C, H, W]; got shape {tuple(images.shape)}")
        return self.op(images, self.param)

    def on_map(self, maps: torch.Tensor) -> torch.Tensor:
        """T applied to ``[B, C, h, w]`` maps: the spatial warp; intensity transformations leave maps put."""
        return self.op(maps, self.param) if self.spatial else maps

    def inverse_on_map(self, maps: torch.Tensor) -> torch.Tensor:
        """T^-1 applied to maps (spatial sets); the identity for intensity transformations."""
        if not self.spatial:
            return maps
        assert self.inverse_op is not None  # every spatial set defines one (contract test)
        return self.inverse_op(maps, self.param)

    def __repr__(self) -> str:
        return self.label


@dataclass(frozen=True)
class TransformationSet(Sequence[Transformation]):
    """A family of transformations over a parameter range, e.g. rotation -30..30 degrees in 9 steps.

    ``identity_param``: the parameter that leaves images unchanged, when the family has one (contract
    tests check it). ``spatial``: the transformation moves pixels; then ``inverse_op`` undoes it.
    """

    name: str
    params: tuple[float, ...]
    op: Op
    spatial: bool = False
    identity_param: float | None = None
    inverse_op: Op | None = None

    def __post_init__(self) -> None:
        if not self.params:
            raise ConfigError(f"transformation set '{self.name}': the parameter range is empty")
        if self.spatial and self.inverse_op is None:
            raise ValueError(f"spatial transformation set '{self.name}' needs an inverse_op")

    def __len__(self) -> int:
        return len(self.params)

    @overload
    def __getitem__(self, index: int) -> Transformation: ...
    @overload
    def __getitem__(self, index: slice) -> list[Transformation]: ...
    def __getitem__(self, index: int | slice) -> Transformation | list[Transformation]:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        return Transformation(self.name, self.params[index], self.op, self.spatial, self.inverse_op)

    def __iter__(self) -> Iterator[Transformation]:
        return (self[i] for i in range(len(self)))

    @property
    def labels(self) -> list[str]:
        return [t.label for t in self]


def parameter_range(
    name: str, low: float, high: float, steps: int, geometric: bool = False
) -> tuple[float, ...]:
    """``steps`` parameters from ``low`` to ``high`` inclusive (evenly spaced, or on a log scale)."""
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ConfigError(f"transformation set '{name}': 'steps' must be an integer >= 1; got {steps!r}")
    for key, v in (("low", low), ("high", high)):
        if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
            raise ConfigError(f"transformation set '{name}': '{key}' must be a finite number; got {v!r}")
    if geometric and (low <= 0 or high <= 0):
        raise ConfigError(f"transformation set '{name}': 'low' and 'high' must be > 0; got {low}, {high}")
    if steps == 1:
        if low != high:
            raise ConfigError(f"transformation set '{name}': one step needs low == high; got {low}, {high}")
        return (float(low),)
    if geometric:
        values = torch.logspace(math.log10(low), math.log10(high), steps, dtype=torch.float64)
    else:
        values = torch.linspace(low, high, steps, dtype=torch.float64)
    # rounded so labels read "rotation(-22.5)", not "rotation(-22.499999999999996)"
    return tuple(round(float(v), 10) for v in values)


TRANSFORMATION_SETS: Registry[Callable[..., TransformationSet]] = Registry("transformation set")


def make_transformation_set(name: str, **kwargs: float | int) -> TransformationSet:
    """``TRANSFORMATION_SETS.get(name)(**kwargs)`` with unknown keyword arguments as a ConfigError."""
    factory = TRANSFORMATION_SETS.get(name)
    try:
        return factory(**kwargs)
    except TypeError as err:
        raise ConfigError(f"transformation set '{name}': {err}") from None


def check_transformations(transformations: Sequence[Transformation], sample: torch.Tensor) -> None:
    """Apply each transformation to ``sample`` [1, C, H, W]: a ConfigError if one rejects the images or
    changes their size (the measures compare activations of equal size)."""
    for t in transformations:
        try:
            y = t(sample)
        except (TypeError, ValueError, RuntimeError) as err:
            raise ConfigError(
                f"transformation {t.label} cannot be applied to images {tuple(sample.shape)}: {err}"
            ) from err
        if not isinstance(y, torch.Tensor) or y.shape != sample.shape:
            got = tuple(y.shape) if isinstance(y, torch.Tensor) else type(y).__name__
            raise ConfigError(
                f"transformation {t.label} changes the images from {tuple(sample.shape)} to {got}; the "
                "measures compare activations of equal size, so every transformation must keep the image size"
            )


def _blend(images: torch.Tensor, other: torch.Tensor, amount: float) -> torch.Tensor:
    return images if amount == 0 else torch.lerp(images, other, amount)


# ---- intensity transformations --------------------------------------------------------------------


def _identity(images: torch.Tensor, param: float) -> torch.Tensor:
    return images


def _brightness(images: torch.Tensor, factor: float) -> torch.Tensor:
    return F.adjust_brightness(images, factor)


def _contrast(images: torch.Tensor, factor: float) -> torch.Tensor:
    return F.adjust_contrast(images, factor)


def _grayscale(images: torch.Tensor, amount: float) -> torch.Tensor:
    # saturation 1 - amount blends with the luminance image; one-channel images are left as they are
    return F.adjust_saturation(images, 1.0 - amount)


def _invert(images: torch.Tensor, amount: float) -> torch.Tensor:
    return _blend(images, F.invert(images), amount)


def _posterize(images: torch.Tensor, bits: float) -> torch.Tensor:
    return F.posterize(images, round(bits))


def _solarize(images: torch.Tensor, threshold: float) -> torch.Tensor:
    return F.solarize(images, threshold)


def _gamma(images: torch.Tensor, gamma: float) -> torch.Tensor:
    return F.adjust_gamma(images, gamma)


def _blur(images: torch.Tensor, sigma: float) -> torch.Tensor:
    if sigma <= 0:
        return images
    size = 2 * math.ceil(3 * sigma) + 1
    return F.gaussian_blur(images, [size, size], [sigma, sigma])


def _noise(images: torch.Tensor, sigma: float, seed: int) -> torch.Tensor:
    # torchvision's gaussian_noise draws from the global RNG, a new field per image: results would
    # depend on batching and on whatever ran before. One seeded field per parameter does not.
    if sigma <= 0:
        return images
    gen = torch.Generator().manual_seed(seed + round(sigma * 1e6))
    field = torch.randn((1, *images.shape[1:]), generator=gen, dtype=torch.float32)
    return (images + sigma * field.to(images.device, images.dtype)).clamp(0.0, 1.0)


def _jpeg(images: torch.Tensor, quality: float) -> torch.Tensor:
    # torchvision's JPEG codec is a CPU one; the round trip keeps the set usable on any device
    encoded = F.jpeg(F.to_dtype(images.cpu(), torch.uint8, scale=True), round(quality))
    return F.to_dtype(encoded, images.dtype, scale=True).to(images.device)


def _vendor_curve(images: torch.Tensor, k: float) -> torch.Tensor:
    # The log curve of the built-in benchmark's vendor profiles (data.synthetic.mammo), log1p(k s) /
    # log1p(k): k > 0 lifts dark tissue (concave), -1 < k < 0 darkens it (convex), k -> 0 is the identity.
    if abs(k) < 1e-9:
        return images
    x = images.clamp(0.0, 1.0)
    return torch.log1p(k * x) / math.log1p(k)


# ---- spatial transformations (resolution-free parameters) ------------------------------------------


def _rotate(images: torch.Tensor, degrees: float) -> torch.Tensor:
    quarter = degrees / 90.0
    if quarter == round(quarter) and (images.shape[-1] == images.shape[-2] or round(quarter) % 2 == 0):
        # exact for right angles: no interpolation blur, so a rotation-invariant model measures 0
        return torch.rot90(images, k=round(quarter) % 4, dims=(-2, -1))
    return F.rotate(images, degrees, interpolation=F.InterpolationMode.BILINEAR)


def _unrotate(images: torch.Tensor, degrees: float) -> torch.Tensor:
    return _rotate(images, -degrees)


def _affine(images: torch.Tensor, scale: float = 1.0, shift: float = 0.0) -> torch.Tensor:
    h, w = images.shape[-2:]
    return F.affine(
        images,
        angle=0.0,
        translate=[shift * w, shift * h],
        scale=scale,
        shear=[0.0, 0.0],
        interpolation=F.InterpolationMode.BILINEAR,
    )


def _scale(images: torch.Tensor, factor: float) -> torch.Tensor:
    return images if factor == 1.0 else _affine(images, scale=factor)


def _unscale(images: torch.Tensor, factor: float) -> torch.Tensor:
    return _scale(images, 1.0 / factor)


def _translate(images: torch.Tensor, fraction: float) -> torch.Tensor:
    # a diagonal shift by `fraction` of each side (right and down for > 0)
    return images if fraction == 0.0 else _affine(images, shift=fraction)


def _untranslate(images: torch.Tensor, fraction: float) -> torch.Tensor:
    return _translate(images, -fraction)


def _perspective_points(h: int, w: int, tilt: float) -> tuple[list[list[float]], list[list[float]]]:
    # A camera tilted about the horizontal axis: tilt > 0 narrows the top edge by `tilt` of the width,
    # tilt < 0 the bottom edge; the other edge stays put.
    corners = [[0.0, 0.0], [w - 1.0, 0.0], [w - 1.0, h - 1.0], [0.0, h - 1.0]]
    d = abs(tilt) * (w - 1.0) / 2
    moved = [list(c) for c in corners]
    for i in (0, 1) if tilt > 0 else (2, 3):
        moved[i][0] += d if moved[i][0] == 0.0 else -d
    return corners, moved


def _perspective(images: torch.Tensor, tilt: float, inverse: bool = False) -> torch.Tensor:
    if tilt == 0.0:
        return images
    start, end = _perspective_points(images.shape[-2], images.shape[-1], tilt)
    if inverse:
        start, end = end, start
    return F.perspective(images, start, end, interpolation=F.InterpolationMode.BILINEAR)


def _unperspective(images: torch.Tensor, tilt: float) -> torch.Tensor:
    return _perspective(images, tilt, inverse=True)


# ---- the registry -----------------------------------------------------------------------------------


@TRANSFORMATION_SETS.register("identity")
def identity(steps: int = 5) -> TransformationSet:
    """``steps`` copies of the identity (parameters 0..steps-1): every measure must read 0 on it."""
    return TransformationSet(
        "identity",
        parameter_range("identity", 0, steps - 1, steps),
        _identity,
        spatial=True,  # it moves nothing, so it also applies to maps: same-equivariance reads 0 on it
        identity_param=0.0,
        inverse_op=_identity,
    )


@TRANSFORMATION_SETS.register("brightness")
def brightness(low: float = 0.6, high: float = 1.4, steps: int = 9) -> TransformationSet:
    """Multiply by a factor (clipped to [0, 1])."""
    return TransformationSet(
        "brightness", parameter_range("brightness", low, high, steps), _brightness, identity_param=1.0
    )


@TRANSFORMATION_SETS.register("contrast")
def contrast(low: float = 0.6, high: float = 1.4, steps: int = 9) -> TransformationSet:
    """Blend with the mean grey level (factor < 1 flattens, > 1 stretches); 1- or 3-channel images."""
    return TransformationSet(
        "contrast", parameter_range("contrast", low, high, steps), _contrast, identity_param=1.0
    )


@TRANSFORMATION_SETS.register("grayscale")
def grayscale(low: float = 0.0, high: float = 1.0, steps: int = 5) -> TransformationSet:
    """Blend towards the luminance image (1 = fully grey); one-channel images are unchanged."""
    return TransformationSet(
        "grayscale", parameter_range("grayscale", low, high, steps), _grayscale, identity_param=0.0
    )


@TRANSFORMATION_SETS.register("invert")
def invert(low: float = 0.0, high: float = 1.0, steps: int = 5) -> TransformationSet:
    """Colour inversion as a blend towards 1 - x (1 = fully inverted, 0.5 = flat grey)."""
    return TransformationSet(
        "invert", parameter_range("invert", low, high, steps), _invert, identity_param=0.0
    )


@TRANSFORMATION_SETS.register("posterize")
def posterize(low: float = 8, high: float = 2, steps: int = 7) -> TransformationSet:
    """Keep ``bits`` bits per channel (2^bits grey levels); parameters are rounded to integers."""
    params = parameter_range("posterize", low, high, steps)
    if any(not 1 <= round(p) <= 8 for p in params):
        raise ConfigError(f"transformation set 'posterize': bits must lie in 1..8; got {low}..{high}")
    return TransformationSet("posterize", params, _posterize)


@TRANSFORMATION_SETS.register("solarize")
def solarize(low: float = 1.0, high: float = 0.5, steps: int = 6) -> TransformationSet:
    """Invert every pixel at or above the threshold (threshold 1 touches only pure white)."""
    return TransformationSet("solarize", parameter_range("solarize", low, high, steps), _solarize)


@TRANSFORMATION_SETS.register("gamma")
def gamma(low: float = 0.5, high: float = 2.0, steps: int = 9) -> TransformationSet:
    """x ** gamma, on a log scale of gamma (so 0.5 and 2 are as far from 1)."""
    params = parameter_range("gamma", low, high, steps, geometric=True)
    return TransformationSet("gamma", params, _gamma, identity_param=1.0)


@TRANSFORMATION_SETS.register("gaussian_blur")
def gaussian_blur(low: float = 0.0, high: float = 2.0, steps: int = 5) -> TransformationSet:
    """Gaussian blur of standard deviation sigma pixels (kernel 2*ceil(3 sigma)+1; 0 = none)."""
    params = parameter_range("gaussian_blur", low, high, steps)
    if min(params) < 0:
        raise ConfigError(f"transformation set 'gaussian_blur': sigma must be >= 0; got {low}..{high}")
    return TransformationSet("gaussian_blur", params, _blur, identity_param=0.0)


@TRANSFORMATION_SETS.register("gaussian_noise")
def gaussian_noise(low: float = 0.0, high: float = 0.1, steps: int = 5, seed: int = 0) -> TransformationSet:
    """Add one fixed N(0, sigma^2) noise field per parameter (seeded), clipped to [0, 1]."""
    params = parameter_range("gaussian_noise", low, high, steps)
    if min(params) < 0:
        raise ConfigError(f"transformation set 'gaussian_noise': sigma must be >= 0; got {low}..{high}")

    def op(images: torch.Tensor, sigma: float) -> torch.Tensor:
        return _noise(images, sigma, seed)

    return TransformationSet("gaussian_noise", params, op, identity_param=0.0)


@TRANSFORMATION_SETS.register("jpeg")
def jpeg(low: float = 100, high: float = 10, steps: int = 10) -> TransformationSet:
    """JPEG compression at a quality (1..100, rounded) and back; 1- or 3-channel images."""
    params = parameter_range("jpeg", low, high, steps)
    if any(not 1 <= round(p) <= 100 for p in params):
        raise ConfigError(f"transformation set 'jpeg': quality must lie in 1..100; got {low}..{high}")
    return TransformationSet("jpeg", params, _jpeg)


@TRANSFORMATION_SETS.register("vendor_curve")
def vendor_curve(low: float = -0.8, high: float = 6.0, steps: int = 7) -> TransformationSet:
    """A vendor's log intensity curve log1p(k x) / log1p(k), as in the built-in benchmark's hospitals."""
    params = parameter_range("vendor_curve", low, high, steps)
    if min(params) <= -1:
        raise ConfigError(f"transformation set 'vendor_curve': k must be > -1; got {low}..{high}")
    return TransformationSet("vendor_curve", params, _vendor_curve, identity_param=0.0)


@TRANSFORMATION_SETS.register("rotation")
def rotation(low: float = -30.0, high: float = 30.0, steps: int = 9) -> TransformationSet:
    """Rotation about the centre by degrees (counter-clockwise > 0); corners filled with 0."""
    params = parameter_range("rotation", low, high, steps)
    return TransformationSet(
        "rotation", params, _rotate, spatial=True, identity_param=0.0, inverse_op=_unrotate
    )


@TRANSFORMATION_SETS.register("scale")
def scale(low: float = 0.8, high: float = 1.25, steps: int = 5) -> TransformationSet:
    """Zoom about the centre by a factor (log-spaced, so 0.8 and 1.25 are as far from 1)."""
    params = parameter_range("scale", low, high, steps, geometric=True)
    return TransformationSet("scale", params, _scale, spatial=True, identity_param=1.0, inverse_op=_unscale)


@TRANSFORMATION_SETS.register("translation")
def translation(low: float = -0.1, high: float = 0.1, steps: int = 5) -> TransformationSet:
    """Diagonal shift by a fraction of each side (right and down for > 0); uncovered pixels 0."""
    params = parameter_range("translation", low, high, steps)
    return TransformationSet(
        "translation", params, _translate, spatial=True, identity_param=0.0, inverse_op=_untranslate
    )


@TRANSFORMATION_SETS.register("perspective")
def perspective(low: float = -0.3, high: float = 0.3, steps: int = 7) -> TransformationSet:
    """Projection of a tilted view: the top (tilt > 0) or bottom edge narrowed by |tilt| of the width."""
    params = parameter_range("perspective", low, high, steps)
    if max(abs(p) for p in params) >= 1:
        raise ConfigError(f"transformation set 'perspective': |tilt| must be < 1; got {low}..{high}")
    return TransformationSet(
        "perspective", params, _perspective, spatial=True, identity_param=0.0, inverse_op=_unperspective
    )
