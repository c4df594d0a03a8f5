"""ROAD (Rong et al., ICML 2022): remove pixels by noisy linear imputation, watch the class score.

Imputing the removed pixels from their neighbours (instead of painting them a constant) keeps the
removal's shape from leaking the map to the model. This is pytorch-grad-cam's ROAD
(``ROADMostRelevantFirst`` / ``ROADLeastRelevantFirst`` with its ``NoisyLinearImputer``) re-implemented
to run batched, and tested to give the library's numbers on the same inputs and seed:

* the same percentile rule: ``np.percentile`` of each map (of ``1 - map`` for LeRF), pixels at or
  above it imputed. MoRF at p imputes the top 100 - p %, LeRF at p all but the top p %;
* the same linear system: each removed pixel = the weighted mean of its in-image neighbours (1/6
  edge, 1/12 corner), known neighbours on the right-hand side;
* the same noise: ``noise x randn`` over the removed pixels, drawn from torch's global RNG in the
  library's order (percentile by percentile, image by image, channel-major).

What differs is how the system is built and solved: the library fills a scipy ``lil_matrix`` pixel
by pixel in Python and calls ``spsolve`` once per image, percentile and channel (~0.37 s per 96 px
image); here the system over the removed pixels only is assembled with vectorised index arithmetic,
factorised once by SuperLU (``scipy.sparse.linalg.splu``) per image and percentile and solved for all
channels at once, the systems spread over threads (SuperLU releases the GIL). A batched
conjugate-gradient solve on the device was tried first: on the large smooth holes CAMs make it needs
thousands of iterations and was 10-14x slower than this (scripts/bench/bench_interpret.py).
The images' batch of perturbed copies still goes through the model batched, on its device.
An image whose every pixel is removed has no solution (the library's solver returns NaN with a
warning); here it is imputed as 0 plus the noise.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Literal

import numpy as np
import scipy.sparse
import scipy.sparse.linalg
import torch

from medseg_weak.errors import ConfigError
from medseg_weak.interpret.scores import Score, class_scores, model_device

Order = Literal["morf", "lerf"]
#: The library's ROAD*Average percentiles, thinned to five.
DEFAULT_PERCENTILES: tuple[int, ...] = (10, 30, 50, 70, 90)
#: pytorch-grad-cam's ``neighbors_weights``: edges 1/6, corners 1/12 (they sum to 1).
NEIGHBOUR_WEIGHTS = torch.tensor([[1 / 12, 1 / 6, 1 / 12], [1 / 6, 0.0, 1 / 6], [1 / 12, 1 / 6, 1 / 12]])


def road_scores(
    model: torch.nn.Module,
    images: torch.Tensor,
    maps: torch.Tensor,
    targets: torch.Tensor,
    order: Order = "morf",
    percentiles: Sequence[float] = DEFAULT_PERCENTILES,
    score: Score = "probability",
    noise: float = 0.01,
    batch_size: int = 256,
) -> torch.Tensor:
    """``[N, P]`` score after imputation minus score before, per image and percentile.

    MoRF: lower (a larger drop) is more faithful; LeRF: higher (closer to 0) is more faithful.
    ``noise`` is the imputer's noise magnitude (the library's 0.01); it draws from torch's global RNG
    in the library's order (percentile by percentile, image by image).
    """
    if order not in ("morf", "lerf"):
        raise ConfigError(f"ROAD order must be 'morf' or 'lerf'; got '{order}'")
    if not percentiles:
        raise ConfigError("'interpret.road_percentiles' must name at least one percentile")
    device = model_device(model)
    x = images.detach().float().to(device)
    maps_np = np.asarray(maps.detach().float().cpu().numpy(), dtype=np.float32)
    ranked = maps_np if order == "morf" else np.float32(1.0) - maps_np
    removed = torch.cat(
        [
            torch.from_numpy(
                ranked >= np.percentile(ranked, p, axis=(1, 2))[:, None, None].astype(np.float32)
            )
            for p in percentiles
        ]
    ).to(device)  # [P * N, H, W], percentile-major as the library draws its noise
    tiled = x.repeat(len(percentiles), 1, 1, 1)
    imputed = impute(tiled, removed, noise)
    after = class_scores(model, imputed, targets.repeat(len(percentiles)), score, batch_size)
    before = class_scores(model, x, targets, score, batch_size)
    return (after.reshape(len(percentiles), -1) - before[None]).T.contiguous()


def impute(images: torch.Tensor, removed: torch.Tensor, noise: float = 0.01) -> torch.Tensor:
    """Noisy linear imputation of the ``removed`` pixels ``[B, H, W]`` of ``images`` ``[B, C, H, W]``."""
    values = images.detach().to(torch.float64).cpu().numpy()
    holes = removed.detach().bool().cpu().numpy()
    workers = max(1, min(torch.get_num_threads(), len(values)))
    with ThreadPoolExecutor(workers) as pool:
        filled = np.stack(list(pool.map(_solve_one, values, holes)))
    result = torch.from_numpy(filled).to(torch.float32).to(images.device)
    if noise:
        result = result + noise * _library_noise(removed, images.shape[1])
    return torch.where(removed[:, None].bool(), result, images)


#: (dy, dx, weight) of the 8 neighbours, as ``NEIGHBOUR_WEIGHTS``.
_NEIGHBOURS = tuple(
    (dy, dx, float(NEIGHBOUR_WEIGHTS[dy + 1, dx + 1])) for dy in (-1, 0, 1) for dx in (-1, 0, 1) if dy or dx
)


def _solve_one(image: np.ndarray, hole: np.ndarray) -> np.ndarray:
    """``image`` ``[C, H, W]`` with its ``hole`` pixels replaced by the weighted mean of their
    in-image neighbours (the library's system), solved exactly for all channels at once."""
    c, h, w = image.shape
    ys, xs = np.nonzero(hole)
    n = len(ys)
    out = image.copy()
    if n == 0:
        return out
    if n == h * w:  # nothing known to impute from
        out[:] = 0.0
        return out
    index = np.full((h, w), -1, dtype=np.int64)
    index[ys, xs] = np.arange(n)
    degree = np.zeros(n)
    rhs = np.zeros((n, c))
    rows, cols, weights = [np.arange(n)], [np.arange(n)], []
    for dy, dx, weight in _NEIGHBOURS:
        ny, nx = ys + dy, xs + dx
        inside = (ny >= 0) & (ny < h) & (nx >= 0) & (nx < w)
        k, ny, nx = np.nonzero(inside)[0], ny[inside], nx[inside]
        degree[k] += weight
        neighbour = index[ny, nx]
        unknown = neighbour >= 0
        rows.append(k[unknown])
        cols.append(neighbour[unknown])
        weights.append(np.full(int(unknown.sum()), -weight))
        np.add.at(rhs, k[~unknown], weight * image[:, ny[~unknown], nx[~unknown]].T)
    matrix = scipy.sparse.csc_matrix(
        (np.concatenate([degree, *weights]), (np.concatenate(rows), np.concatenate(cols))), shape=(n, n)
    )
    out[:, ys, xs] = scipy.sparse.linalg.splu(matrix).solve(rhs).T
    return out


def _library_noise(removed: torch.Tensor, channels: int) -> torch.Tensor:
    """``randn`` over each image's removed pixels, drawn exactly as the library draws it: one block
    per image, removed pixels in raster order."""
    out = torch.zeros(removed.shape[0], channels, removed.shape[1] * removed.shape[2])
    flat = removed.flatten(1).cpu().bool()
    for i in range(removed.shape[0]):
        idx = flat[i].nonzero()[:, 0]
        # one [C, n] draw, as the library's randn_like(res.t()) makes it (torch's CPU normal sampler
        # orders values by the tensor's size, so the block's shape, not only its length, must match)
        out[i][:, idx] = torch.randn(channels, idx.numel())
    return out.reshape(removed.shape[0], channels, *removed.shape[1:]).to(removed.device)
