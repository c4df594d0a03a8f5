"""Random fields for the mammography anatomy: 1/f textures and streaks converging on the nipple."""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
from scipy import fft as sp_fft
from scipy import ndimage


def fractal_noise(
    rng: np.random.Generator, shape: tuple[int, int], exponent: float, cutoff: float
) -> np.ndarray:
    """A unit-variance Gaussian field with power ~ 1/f**exponent, low-passed at ``cutoff``.

    Frequencies are in cycles per image height, so textures look alike at every image size; one FFT
    replaces the stack of Gaussian filters (and any per-pixel loop) a multi-scale field would need.
    """
    white = rng.standard_normal(shape, dtype=np.float32)
    field = sp_fft.irfft2(sp_fft.rfft2(white) * _spectral_gain(shape, exponent, cutoff), s=shape)
    field -= field.mean()
    return (field / (field.std() + 1e-8)).astype(np.float32)


@lru_cache(maxsize=64)
def _spectral_gain(shape: tuple[int, int], exponent: float, cutoff: float) -> np.ndarray:
    """The amplitude filter of :func:`fractal_noise`, cached: every image of a vendor shares a shape."""
    h, w = shape
    fy = np.fft.fftfreq(h).astype(np.float32)[:, None] * h
    fx = np.fft.rfftfreq(w).astype(np.float32)[None, :] * h
    f2 = fy**2 + fx**2
    gain = (f2 + 1.0) ** (-exponent / 4.0) * np.exp(-f2 / cutoff**2)
    gain.setflags(write=False)
    return gain


def radial_streaks(
    rng: np.random.Generator, shape: tuple[int, int], centre: tuple[float, float]
) -> np.ndarray:
    """Thin streaks converging on the nipple (ducts and Cooper's ligaments), unit variance.

    Noise smoothed strongly along the radius and barely across angles, sampled in polar coordinates
    around ``centre`` (row, col).
    """
    h, w = shape
    n_angle, n_radius = max(64, int(1.2 * h)), 48
    grid = ndimage.gaussian_filter(
        rng.standard_normal((n_angle, n_radius)).astype(np.float32),
        sigma=(0.8, 3.0),
        mode=("wrap", "nearest"),
    )
    rows, cols = np.mgrid[0:h, 0:w].astype(np.float32)
    angle = np.arctan2(rows - centre[0], centre[1] - cols)
    radius = np.hypot(rows - centre[0], cols - centre[1]) / math.hypot(h, w)
    coords = np.stack([(angle + np.pi) / (2 * np.pi) * (n_angle - 1), radius * (n_radius - 1)])
    streaks = ndimage.map_coordinates(grid, coords, order=1, mode="nearest")
    streaks = (streaks - streaks.mean()) / (streaks.std() + 1e-8)
    # fade out close to the nipple, where every streak would meet in an artificial starburst
    return streaks * (1.0 - np.exp(-((radius * math.hypot(h, w) / (0.12 * h)) ** 2)))
