"""Intensity-domain augmentation against scanner shift, applied to per-hospital batches of tensors.

An unseen hospital's scanner renders the same tissue with a different intensity curve, contrast and
texture spectrum. These augmentations make the training hospitals look like each other (and like
plausible new scanners), so the classifier cannot rely on a hospital's rendering:

* :func:`random_gamma` and :func:`random_contrast`: random intensity curves per image;
* :func:`match_histograms`: an image takes the intensity distribution of an image from ANOTHER
  hospital (quantile mapping inside the breast / field-of-view masks);
* :func:`fourier_amplitude_mix`: an image takes part of another hospital's low-frequency amplitude
  spectrum (global "style": brightness, contrast, low-frequency texture) while keeping its own phase
  (structure) -- Yang & Soatto, "FDA", CVPR 2020; Xu et al., "FACT", CVPR 2021.

The pure functions take tensors and return new tensors (inputs are never modified);
:class:`DomainAugment` wires them from an :class:`AugmentConfig`. All randomness comes from a
caller-provided ``torch.Generator``, so a seed reproduces a run. Everything is vectorised over the
batch and works on CPU or GPU tensors without device-to-host synchronisation: random decisions are
applied with ``torch.where`` over the whole batch instead of indexing a random subset, and draws from
a CPU generator are copied to the data's device (which also makes the draws device-independent).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from medseg_weak.config import AugmentConfig

# ---- random draws -----------------------------------------------------------------------------------


def _uniform(n: int, low: float, high: float, generator: torch.Generator, like: Tensor) -> Tensor:
    """``n`` draws of U(low, high) on ``like``'s device and dtype.

    Drawn on the generator's own device (a CPU generator cannot fill a CUDA tensor) and then copied:
    a host-to-device copy, never a synchronising device-to-host one.
    """
    u = torch.rand(n, generator=generator, device=generator.device, dtype=torch.float64)
    return (low + (high - low) * u).to(device=like.device, dtype=like.dtype)


def _bernoulli(n: int, p: float, generator: torch.Generator, device: torch.device) -> Tensor:
    u = torch.rand(n, generator=generator, device=generator.device)
    return (u < p).to(device)


def _per_image(v: Tensor, x: Tensor) -> Tensor:
    """Reshape a [B] vector to broadcast against ``x`` [B, ...]."""
    return v.reshape(-1, *([1] * (x.dim() - 1)))


def _check_images(x: Tensor, name: str) -> None:
    if x.dim() != 4:
        raise ValueError(f"{name} must be a [B, C, H, W] batch, got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got {x.dtype}")


def _check_mask(mask: Tensor | None, x: Tensor, name: str) -> None:
    if mask is None:
        return
    expected = (x.shape[0], *x.shape[2:])
    if mask.dtype != torch.bool or tuple(mask.shape) != expected:
        raise ValueError(
            f"{name} must be a bool [B, H, W] = {expected} mask, got {mask.dtype} {tuple(mask.shape)}"
        )


def _work_dtype(x: Tensor) -> torch.dtype:
    # Half precision is too coarse for quantiles and unsupported by CPU FFTs; float64 stays float64.
    return torch.promote_types(x.dtype, torch.float32)


# ---- intensity curves -------------------------------------------------------------------------------


def random_gamma(x: Tensor, strength: float, generator: torch.Generator) -> Tensor:
    """``x ** gamma`` with one ``gamma ~ exp(U(-strength, strength))`` per image of the batch ``x`` [B, ...].

    ``x`` is expected in [0, 1], which the curve maps onto itself (0 stays 0, 1 stays 1); negative
    values are clamped to 0 first, since a fractional power of them is undefined. Strength 0 is the
    identity and draws nothing.
    """
    if strength < 0:
        raise ValueError(f"strength must be >= 0, got {strength}")
    if strength == 0:
        return x.clone()
    gamma = torch.exp(_uniform(x.shape[0], -strength, strength, generator, x))
    return x.clamp(min=0).pow(_per_image(gamma, x))


def random_contrast(
    x: Tensor, strength: float, generator: torch.Generator, mask: Tensor | None = None
) -> Tensor:
    """Contrast and brightness jitter ``(x - m) * c + m + b`` per image, clamped to [0, 1].

    ``c ~ exp(U(-s, s))`` and ``b ~ U(-s/4, s/4)`` are drawn once per image of ``x`` [B, C, H, W];
    ``m`` is each image's per-channel mean. With a bool ``mask`` [B, H, W], ``m`` is the mean inside
    the mask (the dark background would otherwise drag the pivot towards 0) and pixels outside it are
    returned unchanged, so background stays background. Strength 0 is the identity and draws nothing.
    """
    _check_images(x, "x")
    _check_mask(mask, x, "mask")
    if strength < 0:
        raise ValueError(f"strength must be >= 0, got {strength}")
    if strength == 0:
        return x.clone()
    n = x.shape[0]
    c = _per_image(torch.exp(_uniform(n, -strength, strength, generator, x)), x)
    b = _per_image(_uniform(n, -strength / 4, strength / 4, generator, x), x)
    if mask is None:
        m = x.mean(dim=(-2, -1), keepdim=True)
        return ((x - m) * c + m + b).clamp(0, 1)
    inside = mask.unsqueeze(1)
    area = inside.sum(dim=(-2, -1), keepdim=True).clamp(min=1)
    m = (x * inside).sum(dim=(-2, -1), keepdim=True) / area
    return torch.where(inside, ((x - m) * c + m + b).clamp(0, 1), x)


# ---- histogram matching -----------------------------------------------------------------------------


def match_histograms(
    source: Tensor,
    reference: Tensor,
    source_mask: Tensor | None = None,
    reference_mask: Tensor | None = None,
) -> Tensor:
    """Map each source image's intensities so that their distribution matches the paired reference's.

    ``source`` [B, C, H, W] and ``reference`` [B, C, H', W'] are paired image by image and matched
    channel by channel. The mapping is the one of ``skimage.exposure.match_histograms``: a value's
    quantile is the fraction of source pixels ``<=`` it (so equal values stay equal), and it maps to
    the reference's quantile function, linearly interpolated between the reference's distinct
    values. With bool masks [B, H, W] / [B, H', W'] both distributions are taken inside the masks
    only, and source pixels outside the mask are returned unchanged; an image whose source or
    reference mask is empty is returned unchanged.

    Vectorised: masked-out pixels are sorted to the end as +inf and every row keeps its own pixel
    count, so images with different mask areas share one sort and one ``searchsorted``.
    """
    _check_images(source, "source")
    _check_images(reference, "reference")
    if source.shape[:2] != reference.shape[:2]:
        raise ValueError(
            f"source and reference must pair up image by image and channel by channel: "
            f"{tuple(source.shape)} vs {tuple(reference.shape)}"
        )
    _check_mask(source_mask, source, "source_mask")
    _check_mask(reference_mask, reference, "reference_mask")
    b, c = source.shape[:2]
    work = _work_dtype(source)
    src = source.reshape(b, c, -1).to(work)
    ref = reference.reshape(b, c, -1).to(dtype=work, device=source.device)

    src_keys, src_in, n_src = _masked_rows(src, source_mask)
    ref_keys, _, n_ref = _masked_rows(ref, reference_mask)
    # Everything is computed in sorted order and scattered back once: counting ties in a sorted row is
    # a linear scan, and searchsorted with sorted queries is ~2x faster than with scattered ones.
    src_sorted, order = src_keys.sort(dim=-1)
    ref_sorted = ref_keys.sort(dim=-1).values

    # Quantile of each source pixel, and the reference's quantile at each of its sorted values: the
    # fraction of pixels <= the value, so equal values share one quantile (np.unique + cumsum in skimage).
    q = _count_at_or_below(src_sorted).to(work) / n_src.clamp(min=1)
    ref_q = _count_at_or_below(ref_sorted).to(work) / n_ref.clamp(min=1)
    # The first sorted reference value whose quantile reaches q is the first copy of a distinct value
    # (copies share a quantile), so its predecessor is the previous distinct value: the np.interp
    # bracket. +inf padding has quantile > 1 >= q and is never selected while the mask is non-empty
    # (masked-out source pixels, sorted last, may select it; they are discarded below).
    hi = torch.searchsorted(ref_q, q).clamp(max=ref.shape[-1] - 1)
    lo = (hi - 1).clamp(min=0)
    hi_v, lo_v = ref_sorted.gather(-1, hi), ref_sorted.gather(-1, lo)
    hi_q, lo_q = ref_q.gather(-1, hi), ref_q.gather(-1, lo)
    below = hi == 0  # at or below the reference's smallest quantile: np.interp clamps to the minimum
    t = torch.where(below, 1.0, (q - lo_q) / torch.where(below, 1.0, hi_q - lo_q))
    mapped_sorted = torch.lerp(lo_v, hi_v, t)  # lerp is exact at t == 1, so match_histograms(x, x) == x
    mapped = torch.empty_like(mapped_sorted).scatter(-1, order, mapped_sorted)

    keep = (n_ref == 0) | (n_src == 0)
    if src_in is not None:
        keep = keep | ~src_in
    out = torch.where(keep, src, mapped)
    return out.to(source.dtype).reshape(source.shape)


def _count_at_or_below(sorted_rows: Tensor) -> Tensor:
    """For each entry of rows sorted ascending, how many entries of its row are <= it.

    That is one past the index of the last copy of its value: a reverse running minimum over the
    indices of last copies, linear in the row length (``searchsorted`` of a row in itself is n log n).
    """
    n = sorted_rows.shape[-1]
    index = torch.arange(n, device=sorted_rows.device).expand_as(sorted_rows)
    last_copy = torch.ones_like(sorted_rows, dtype=torch.bool)
    last_copy[..., :-1] = sorted_rows[..., 1:] != sorted_rows[..., :-1]
    ends = torch.where(last_copy, index, n).flip(-1).cummin(dim=-1).values.flip(-1)
    return ends + 1


def _masked_rows(rows: Tensor, mask: Tensor | None) -> tuple[Tensor, Tensor | None, Tensor]:
    """Sort keys with masked-out pixels as +inf, the inside mask per row, and the pixel count per row."""
    if mask is None:
        return rows, None, torch.full((1, 1, 1), rows.shape[-1], device=rows.device)
    inside = mask.reshape(mask.shape[0], 1, -1).to(rows.device).expand_as(rows)
    keys = rows.masked_fill(~inside, math.inf)
    return keys, inside, inside.sum(dim=-1, keepdim=True)


# ---- Fourier amplitude mixing -----------------------------------------------------------------------


def fourier_amplitude_mix(source: Tensor, reference: Tensor, beta: float, lam: Tensor | float) -> Tensor:
    """Source images with part of their low-frequency amplitude spectrum taken from the references.

    Inside the centred low-frequency square (see :class:`AugmentConfig` for ``beta``: frequencies
    ``|k_y| <= beta * H / 2``, ``|k_x| <= beta * W / 2``; 1.0 is the whole spectrum, 0 nothing) the
    amplitude becomes ``(1 - lam) * A_src + lam * A_ref``; elsewhere it stays ``A_src``; the phase is
    always the source's. ``lam`` is a scalar or one value per image [B]. ``source`` and ``reference``
    are [B, C, H, W] of the same shape. The result is NOT clamped (callers decide the range).

    The square is built from FFT frequency indices (``fftfreq``), i.e. on the unshifted spectrum with
    low frequencies at the corners, so no ``fftshift`` is needed. It is symmetric under
    ``k -> -k``, so the mixed spectrum stays Hermitian and its inverse transform is real.
    """
    _check_images(source, "source")
    if reference.shape != source.shape:
        raise ValueError(
            f"source and reference must have one shape: {tuple(source.shape)} vs {tuple(reference.shape)}"
        )
    if not 0 <= beta <= 1:
        raise ValueError(f"beta must be in [0, 1], got {beta}")
    if beta == 0:
        return source.clone()
    work = _work_dtype(source)
    h, w = source.shape[-2:]
    lam_t = torch.as_tensor(lam, dtype=work, device=source.device)
    if lam_t.dim() == 1:
        lam_t = _per_image(lam_t, source)
    spectrum = torch.fft.fft2(source.to(work))
    amplitude = spectrum.abs()
    ref_amplitude = torch.fft.fft2(reference.to(dtype=work, device=source.device)).abs()
    low = (
        _low_frequencies(h, beta, source.device)[:, None] & _low_frequencies(w, beta, source.device)[None, :]
    )
    mixed = torch.where(low, torch.lerp(amplitude, ref_amplitude, lam_t), amplitude)
    out = torch.fft.ifft2(torch.polar(mixed, spectrum.angle())).real
    return out.to(source.dtype)


def _low_frequencies(n: int, beta: float, device: torch.device) -> Tensor:
    # Integer frequency indices (0, 1, ..., -1) compared with an integer radius: no float ties at the edge.
    k = torch.fft.fftfreq(n, d=1.0 / n, device=device).round().abs()
    return k <= math.floor(beta * n / 2 + 1e-9)


# ---- the configured pipeline ------------------------------------------------------------------------


class DomainAugment:
    """Applies an :class:`AugmentConfig` to one training step's per-hospital batches.

    Per hospital batch, in this order: histogram matching, Fourier amplitude mixing, gamma,
    contrast, vertical flip; then values are clamped to [0, 1] and pixels outside the (flipped)
    region mask are restored to the (flipped) input, so background stays exactly what it was (0 for
    preprocessed images). Restoring rather than zeroing keeps the thin ring between the breast mask
    and the dilated crop mask that preprocessing leaves intact.

    Cross-hospital operations (histogram matching, Fourier mixing) pick each image's partner from a
    DIFFERENT hospital of the same step: a hospital uniformly among the others that have images, then
    an image uniformly within it, drawn independently for each operation. Partners are the
    un-augmented inputs, so operations never compound across hospitals. With a single hospital (or
    no other hospital with images) these operations are skipped: matching a hospital to itself would
    not remove any scanner signature. They need every hospital's images to share C, H and W.
    """

    def __init__(self, config: AugmentConfig) -> None:
        self.config = config

    @property
    def enabled(self) -> bool:
        c = self.config
        return c.flip or any(v > 0 for v in (c.gamma, c.contrast, c.histogram_matching, c.fourier_mixing))

    def __call__(
        self, images: list[Tensor], regions: list[Tensor | None], generator: torch.Generator
    ) -> list[Tensor]:
        """Augmented batches (same shapes and dtypes). ``images[h]`` is hospital h's [B_h, C, H, W]
        batch in [0, 1]; ``regions[h]`` its bool [B_h, H, W] breast / field-of-view masks, or None
        (the whole image counts as inside). With everything off, the input tensors themselves are
        returned. Use :meth:`apply` when the regions are needed afterwards (flips move them)."""
        return self.apply(images, regions, generator)[0]

    def apply(
        self, images: list[Tensor], regions: list[Tensor | None], generator: torch.Generator
    ) -> tuple[list[Tensor], list[Tensor | None]]:
        """Like ``__call__``, also returning the region masks, flipped along with their images."""
        _check_batches(images, regions)
        if not self.enabled:
            return list(images), list(regions)
        cfg = self.config
        sizes = [x.shape[0] for x in images]
        cross = len(images) > 1 and (cfg.histogram_matching > 0 or cfg.fourier_mixing > 0)
        pool, pool_regions = None, None
        if cross:
            _check_same_image_shape(images)
            pool = torch.cat(list(images))
            if any(r is not None for r in regions):
                pool_regions = torch.cat(
                    [r if r is not None else _all_inside(x) for x, r in zip(images, regions)]
                )
        out_images: list[Tensor] = []
        out_regions: list[Tensor | None] = []
        for h, (x, region) in enumerate(zip(images, regions)):
            y = x
            n = x.shape[0]
            if pool is not None and cfg.histogram_matching > 0:
                partner = _pick_partners(h, sizes, generator, x.device)
                if partner is not None:
                    ref_region = None if pool_regions is None else pool_regions[partner]
                    matched = match_histograms(y, pool[partner], region, ref_region)
                    chosen = _bernoulli(n, cfg.histogram_matching, generator, x.device)
                    y = torch.where(_per_image(chosen, y), matched, y)
            if pool is not None and cfg.fourier_mixing > 0:
                partner = _pick_partners(h, sizes, generator, x.device)
                if partner is not None:
                    lam = _uniform(n, 0.0, cfg.fourier_alpha, generator, y)
                    mixed = fourier_amplitude_mix(y, pool[partner], cfg.fourier_beta, lam).clamp(0, 1)
                    chosen = _bernoulli(n, cfg.fourier_mixing, generator, x.device)
                    y = torch.where(_per_image(chosen, y), mixed, y)
            if cfg.gamma > 0:
                y = random_gamma(y, cfg.gamma, generator)
            if cfg.contrast > 0:
                y = random_contrast(y, cfg.contrast, generator, mask=region)
            base = x
            if cfg.flip:
                flip = _bernoulli(n, 0.5, generator, x.device)
                y = torch.where(_per_image(flip, y), y.flip(-2), y)
                base = torch.where(_per_image(flip, x), x.flip(-2), x)
                if region is not None:
                    region = torch.where(_per_image(flip, region), region.flip(-2), region)
            y = y.clamp(0, 1)
            if region is not None:
                y = torch.where(region.unsqueeze(1), y, base)
            out_images.append(y)
            out_regions.append(region)
        return out_images, out_regions


def _check_batches(images: list[Tensor], regions: list[Tensor | None]) -> None:
    if len(images) != len(regions):
        raise ValueError(f"got {len(images)} image batches but {len(regions)} region entries")
    for h, (x, r) in enumerate(zip(images, regions)):
        _check_images(x, f"images[{h}]")
        _check_mask(r, x, f"regions[{h}]")


def _check_same_image_shape(images: list[Tensor]) -> None:
    shapes = {tuple(x.shape[1:]) for x in images}
    if len(shapes) > 1:
        raise ValueError(
            f"cross-hospital augmentation needs one [C, H, W] for all hospitals, got {sorted(shapes)}"
        )


def _all_inside(x: Tensor) -> Tensor:
    return torch.ones((x.shape[0], *x.shape[2:]), dtype=torch.bool, device=x.device)


def _pick_partners(
    h: int, sizes: list[int], generator: torch.Generator, device: torch.device
) -> Tensor | None:
    """Indices into the concatenated batch: for each of hospital h's images, a uniformly chosen other
    hospital (among those with images this step), then a uniformly chosen image of it. None if no
    other hospital has images."""
    others = [g for g, n in enumerate(sizes) if g != h and n > 0]
    if not others:
        return None
    offsets = [sum(sizes[:g]) for g in others]
    gdev = generator.device
    offset_t = torch.tensor(offsets, device=gdev)
    size_t = torch.tensor([sizes[g] for g in others], device=gdev)
    which = torch.randint(len(others), (sizes[h],), generator=generator, device=gdev)
    u = torch.rand(sizes[h], generator=generator, device=gdev, dtype=torch.float64)
    within = torch.minimum((u * size_t[which]).long(), size_t[which] - 1)
    return (offset_t[which] + within).to(device)
