import dataclasses
import math

import numpy as np
import pytest
import torch
from skimage.exposure import match_histograms as skimage_match_histograms

from medseg_weak.classify.augment import (
    AugmentConfig,
    DomainAugment,
    fourier_amplitude_mix,
    match_histograms,
    random_contrast,
    random_gamma,
)
from medseg_weak.errors import ConfigError


def seeded(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def half_disc(batch: int, h: int = 24, w: int = 20, seed: int = 0) -> torch.Tensor:
    """Bool [B, H, W] breast-like regions against the left edge, radius varying per image."""
    gen = seeded(seed)
    yy, xx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    radius = 0.5 * min(h, 2 * w) * (0.6 + 0.4 * torch.rand(batch, generator=gen))
    return ((yy - h / 2) ** 2 + xx**2)[None] <= radius[:, None, None] ** 2


def hospital_batch(
    batch: int, low: float, high: float, seed: int, channels: int = 1, h: int = 24, w: int = 20
):
    """Images with values in [low, high] inside a half-disc region and exactly 0 outside."""
    region = half_disc(batch, h, w, seed)
    x = low + (high - low) * torch.rand(batch, channels, h, w, generator=seeded(seed + 100))
    return x * region[:, None], region


def three_hospitals(batch: int = 4, channels: int = 1):
    ranges = [(0.05, 0.15), (0.45, 0.55), (0.85, 0.95)]  # disjoint, so a partner's hospital is visible
    pairs = [
        hospital_batch(batch + h, lo, hi, seed=h, channels=channels) for h, (lo, hi) in enumerate(ranges)
    ]
    return [p[0] for p in pairs], [p[1] for p in pairs], ranges


ALL_ON = AugmentConfig(
    flip=True, gamma=0.4, contrast=0.3, histogram_matching=0.7, fourier_mixing=0.7, fourier_beta=0.3
)
ONE_AT_A_TIME = {
    "flip": AugmentConfig(flip=True),
    "gamma": AugmentConfig(gamma=0.5),
    "contrast": AugmentConfig(contrast=0.5),
    "histogram_matching": AugmentConfig(histogram_matching=1.0),
    "fourier_mixing": AugmentConfig(fourier_mixing=1.0, fourier_beta=1.0),
    "all": ALL_ON,
}


# ---- intensity curves -------------------------------------------------------------------------------


def test_zero_strength_curves_are_identity():
    x, region = hospital_batch(3, 0.0, 1.0, seed=0)
    assert torch.equal(random_gamma(x, 0.0, seeded()), x)
    assert torch.equal(random_contrast(x, 0.0, seeded()), x)
    assert torch.equal(random_contrast(x, 0.0, seeded(), mask=region), x)


def test_gamma_is_a_power_curve_per_image_within_strength():
    x = 0.05 + 0.9 * torch.rand(5, 2, 8, 8, generator=seeded(1), dtype=torch.float64)
    strength = 0.7
    y = random_gamma(x, strength, seeded(2))
    gamma = torch.log(y) / torch.log(x)  # y = x ** gamma
    per_image = gamma.flatten(1)
    assert torch.allclose(per_image, per_image[:, :1].expand_as(per_image), atol=1e-9)
    assert (per_image.abs().log() <= strength + 1e-9).all()
    assert per_image[:, 0].std() > 0  # one draw per image, not one per batch


def test_contrast_is_affine_about_the_region_mean_and_keeps_background():
    x, region = hospital_batch(6, 0.4, 0.6, seed=3)  # narrow range: a small jitter never clips
    strength = 0.2
    y = random_contrast(x, strength, seeded(4), mask=region)
    assert torch.equal(y[~region[:, None]], x[~region[:, None]])
    for i in range(6):
        inside_x, inside_y = x[i, 0][region[i]], y[i, 0][region[i]]
        m = inside_x.mean()
        slope = (inside_y - inside_y.mean()) / (inside_x - m)
        c = slope.median()
        assert torch.allclose(slope, c, atol=1e-3)
        assert math.exp(-strength) - 1e-4 <= c <= math.exp(strength) + 1e-4
        b = inside_y.mean() - m  # the mean maps to m + b
        assert abs(b) <= strength / 4 + 1e-5


def test_contrast_output_is_clamped_to_unit_range():
    x = torch.rand(8, 1, 8, 8, generator=seeded(5))
    y = random_contrast(x, 2.0, seeded(6))
    assert y.min() >= 0 and y.max() <= 1
    assert not torch.equal(y, x)


# ---- histogram matching -----------------------------------------------------------------------------


def test_matching_an_image_to_itself_is_identity():
    x = (torch.rand(3, 2, 12, 10, generator=seeded(7)) * 16).round() / 16  # ties: quantised values
    region = half_disc(3, 12, 10)
    assert torch.equal(match_histograms(x, x), x)
    assert torch.equal(match_histograms(x, x, region, region), x)


def test_matched_sorted_values_are_the_reference_values():
    source = torch.rand(4, 1, 9, 7, generator=seeded(8), dtype=torch.float64)  # distinct values
    reference = torch.rand(4, 1, 7, 9, generator=seeded(9), dtype=torch.float64) ** 3
    out = match_histograms(source, reference)
    assert torch.equal(out.flatten(1).sort().values, reference.flatten(1).sort().values)
    # ... and the mapping is monotone: the source's pixel order is kept
    assert torch.equal(out.flatten(1).argsort(), source.flatten(1).argsort())


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_matching_agrees_with_skimage(dtype):
    gen = seeded(10)
    source = (torch.rand(2, 3, 15, 11, generator=gen, dtype=torch.float64) * 20).round() / 20
    reference = torch.rand(2, 3, 13, 17, generator=gen, dtype=torch.float64) ** 2
    reference[:, :, :4] = 0.25  # a big tie in the reference, too
    out = match_histograms(source.to(dtype), reference.to(dtype))
    assert out.dtype == dtype
    for i in range(2):
        expected = skimage_match_histograms(source[i].numpy(), reference[i].numpy(), channel_axis=0)
        np.testing.assert_allclose(
            out[i].double().numpy(), expected, atol=1e-6 if dtype == torch.float32 else 1e-12
        )


def test_masked_matching_uses_only_masked_pixels_and_keeps_the_rest():
    gen = seeded(11)
    source = torch.rand(3, 1, 14, 12, generator=gen, dtype=torch.float64)
    reference = torch.rand(3, 1, 14, 12, generator=gen, dtype=torch.float64) ** 0.5
    source_mask, reference_mask = half_disc(3, 14, 12, seed=1), half_disc(3, 14, 12, seed=2)
    reference[~reference_mask[:, None]] = 0.0  # background must not count in the reference histogram
    out = match_histograms(source, reference, source_mask, reference_mask)
    outside = ~source_mask[:, None]
    assert torch.equal(out[outside], source[outside])
    for i in range(3):
        expected = skimage_match_histograms(
            source[i, 0][source_mask[i]].numpy(), reference[i, 0][reference_mask[i]].numpy()
        )
        np.testing.assert_allclose(out[i, 0][source_mask[i]].numpy(), expected, atol=1e-12)


def test_empty_masks_leave_the_image_unchanged():
    source = torch.rand(2, 1, 6, 6, generator=seeded(12))
    reference = torch.rand(2, 1, 6, 6, generator=seeded(13))
    full = torch.ones(2, 6, 6, dtype=torch.bool)
    empty_first = full.clone()
    empty_first[0] = False
    out = match_histograms(source, reference, full, empty_first)
    assert torch.equal(out[0], source[0]) and not torch.equal(out[1], source[1])
    out = match_histograms(source, reference, empty_first, full)
    assert torch.equal(out[0], source[0]) and not torch.equal(out[1], source[1])


def test_matching_rejects_unpaired_batches():
    with pytest.raises(ValueError, match="pair up"):
        match_histograms(torch.rand(2, 1, 4, 4), torch.rand(3, 1, 4, 4))


# ---- Fourier amplitude mixing -----------------------------------------------------------------------


def fourier_pair(seed: int = 14, shape=(3, 2, 16, 12)):
    gen = seeded(seed)
    return torch.rand(*shape, generator=gen), torch.rand(*shape, generator=gen) ** 3


def test_fourier_mixing_with_zero_weight_or_zero_band_returns_the_source():
    source, reference = fourier_pair()
    assert torch.allclose(fourier_amplitude_mix(source, reference, 0.5, torch.zeros(3)), source, atol=1e-5)
    assert torch.equal(fourier_amplitude_mix(source, reference, 0.0, torch.ones(3)), source)


def test_full_spectrum_full_weight_takes_the_reference_amplitude_and_keeps_the_source_phase():
    source, reference = fourier_pair()
    out = fourier_amplitude_mix(source.double(), reference.double(), 1.0, torch.tensor(1.0))
    spectrum = torch.fft.fft2(out)
    assert torch.allclose(spectrum.abs(), torch.fft.fft2(reference.double()).abs(), atol=1e-9)
    source_spectrum = torch.fft.fft2(source.double())
    phase_diff = torch.angle(spectrum * source_spectrum.conj())
    assert phase_diff.abs().max() < 1e-6


def test_fourier_mixing_touches_only_the_low_frequency_square():
    source, reference = (t.double() for t in fourier_pair(shape=(2, 1, 20, 16)))
    lam = torch.tensor([0.25, 0.75], dtype=torch.float64)
    beta = 0.3  # |k_y| <= 3 of 20, |k_x| <= 2 of 16
    out = fourier_amplitude_mix(source, reference, beta, lam)
    a_out, a_src, a_ref = (torch.fft.fft2(t).abs() for t in (out, source, reference))
    ky = torch.fft.fftfreq(20, 1 / 20).abs()[:, None]
    kx = torch.fft.fftfreq(16, 1 / 16).abs()[None, :]
    low = (ky <= 3) & (kx <= 2)
    expected = torch.where(
        low, (1 - lam[:, None, None, None]) * a_src + lam[:, None, None, None] * a_ref, a_src
    )
    assert torch.allclose(a_out, expected, atol=1e-9)
    # the DC term is the image mean: the mean brightness moves towards the reference's by lam
    means = (1 - lam) * source.mean((1, 2, 3)) + lam * reference.mean((1, 2, 3))
    assert torch.allclose(out.mean((1, 2, 3)), means, atol=1e-9)


# ---- DomainAugment ----------------------------------------------------------------------------------


def test_all_off_returns_the_inputs_themselves():
    images, regions, _ = three_hospitals()
    augment = DomainAugment(AugmentConfig())
    assert not augment.enabled
    out = augment(images, regions, seeded())
    assert all(o is i for o, i in zip(out, images))


@pytest.mark.parametrize("name", list(ONE_AT_A_TIME))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_contract_shape_dtype_range_background_and_no_input_mutation(name, dtype):
    images, regions, _ = three_hospitals(channels=2)
    images = [x.to(dtype) for x in images]
    regions[1] = None  # a hospital without masks: the whole image counts as inside
    before = [x.clone() for x in images]
    augment = DomainAugment(ONE_AT_A_TIME[name])
    assert augment.enabled
    out, out_regions = augment.apply(images, regions, seeded(15))
    for x, y, kept, r in zip(images, out, before, out_regions):
        assert torch.equal(x, kept)  # inputs untouched
        assert y.shape == x.shape and y.dtype == dtype
        assert torch.isfinite(y).all() and y.min() >= 0 and y.max() <= 1
        if r is not None:
            assert (y[~r[:, None].expand_as(y)] == 0).all()  # background stays background
    assert not all(torch.equal(x, y) for x, y in zip(images, out))
    assert torch.equal(augment(images, regions, seeded(15))[0], out[0])


def test_same_seed_same_output_and_different_seed_different_output():
    images, regions, _ = three_hospitals()
    augment = DomainAugment(ALL_ON)
    first = augment(images, regions, seeded(16))
    again = augment(images, regions, seeded(16))
    other = augment(images, regions, seeded(17))
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    assert not all(torch.equal(a, b) for a, b in zip(first, other))


@pytest.mark.parametrize("op", ["histogram_matching", "fourier_mixing"])
def test_partners_come_from_other_hospitals_only_and_from_each_of_them(op):
    images, regions, ranges = three_hospitals(batch=24)
    config = AugmentConfig(**{op: 1.0}, fourier_beta=1.0, fourier_alpha=1.0)
    out = DomainAugment(config)(images, regions, seeded(18))
    for h, (y, region) in enumerate(zip(out, regions)):
        medians = torch.stack([y[i, 0][region[i]].median() for i in range(y.shape[0])])
        if op == "histogram_matching":  # the whole distribution moves into the partner's range
            partner = torch.tensor([[lo <= m <= hi for lo, hi in ranges] for m in medians.tolist()])
            assert partner.any(1).all() and not partner[:, h].any()
            assert partner.sum(0)[[g for g in range(3) if g != h]].min() >= 3  # uniform over the others
        else:  # lambda ~ U(0, 1) moves the mean part of the way towards the partner: away from home
            own = (ranges[h][0] + ranges[h][1]) / 2
            assert (medians - own).abs().max() > 0.1


def test_partner_images_are_drawn_across_the_other_hospitals_batch():
    source, source_region = hospital_batch(32, 0.1, 0.9, seed=24)
    levels = torch.linspace(0.2, 0.9, 8)  # each partner image is flat: matching to it copies its level
    partners = torch.ones(8, 1, 24, 20) * levels[:, None, None, None]
    out = DomainAugment(AugmentConfig(histogram_matching=1.0))(
        [source, partners], [source_region, None], seeded(25)
    )
    picked = torch.stack([out[0][i, 0][source_region[i]].unique() for i in range(32)]).squeeze(1)
    assert torch.isin(picked, levels).all()
    assert len(picked.unique()) >= 6  # 32 uniform draws of 8 images


def test_cross_hospital_operations_are_skipped_for_a_single_hospital():
    x, region = hospital_batch(4, 0.2, 0.8, seed=19)
    config = AugmentConfig(histogram_matching=1.0, fourier_mixing=1.0)
    assert torch.equal(DomainAugment(config)([x], [region], seeded())[0], x)


def test_flip_is_vertical_only_and_moves_regions_with_images():
    x, region = hospital_batch(16, 0.1, 0.9, seed=20)
    x[:, :, :, 0] = 1.0  # a chest-wall marker on the left edge must stay on the left
    x = x * region[:, None]
    out, out_regions = DomainAugment(AugmentConfig(flip=True)).apply([x], [region], seeded(21))
    flipped = [torch.equal(out[0][i], x[i].flip(-2)) for i in range(16)]
    kept = [torch.equal(out[0][i], x[i]) for i in range(16)]
    assert all(f or k for f, k in zip(flipped, kept)) and any(flipped) and any(kept)
    assert torch.equal(
        out_regions[0], torch.where(torch.tensor(flipped)[:, None, None], region.flip(-2), region)
    )


def test_background_ring_outside_the_region_is_kept_not_zeroed():
    x, region = hospital_batch(2, 0.3, 0.6, seed=22)
    ring = ~region
    ring[:, :, 12:] = False
    x = torch.where(ring[:, None], 0.05, x)  # the skin-line fall-off preprocessing leaves outside the mask
    y = DomainAugment(AugmentConfig(contrast=1.0, gamma=1.0))([x], [region], seeded(23))[0]
    assert torch.equal(y[~region[:, None]], x[~region[:, None]])


def test_mismatched_inputs_raise():
    images, regions, _ = three_hospitals()
    augment = DomainAugment(ALL_ON)
    with pytest.raises(ValueError, match="region entries"):
        augment(images, regions[:2], seeded())
    with pytest.raises(ValueError, match="regions\\[0\\]"):
        augment(images, [regions[1], *regions[1:]], seeded())
    with pytest.raises(ValueError, match="one \\[C, H, W\\]"):
        augment([images[0], images[1][..., :10]], [None, None], seeded())


# ---- configuration ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("gamma", -0.1),
        ("gamma", 30.0),
        ("gamma", math.nan),
        ("contrast", -1.0),
        ("histogram_matching", 1.5),
        ("histogram_matching", -0.1),
        ("fourier_mixing", 2.0),
        ("fourier_beta", 0.0),
        ("fourier_beta", 1.2),
        ("fourier_alpha", 0.0),
        ("fourier_alpha", 1.5),
        ("flip", 1),
        ("gamma", True),
    ],
)
def test_bad_config_values_name_the_field(field, value):
    with pytest.raises(ConfigError, match=f"'classifier.augment.{field}'"):
        AugmentConfig(**{field: value})


def test_boundary_config_values_are_accepted():
    config = AugmentConfig(
        flip=True, gamma=2.0, contrast=2, histogram_matching=1.0, fourier_mixing=0.0, fourier_beta=1.0
    )
    assert dataclasses.replace(config, fourier_alpha=1.0).fourier_alpha == 1.0


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_tensors_with_a_cpu_generator_match_cpu_results():
    images, regions, _ = three_hospitals()
    augment = DomainAugment(ALL_ON)
    cpu = augment(images, regions, seeded(24))
    gpu = augment([x.cuda() for x in images], [r.cuda() for r in regions], seeded(24))
    for a, b in zip(cpu, gpu):
        assert b.is_cuda
        assert torch.allclose(a, b.cpu(), atol=1e-4)
