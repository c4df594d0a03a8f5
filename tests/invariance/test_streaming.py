"""Running statistics: Welford / Chan streaming equals a direct numpy computation on small matrices."""

from __future__ import annotations

import numpy as np
import torch

from medseg_weak.invariance.streaming import MatrixAccumulator, RunningMoments


def test_running_moments_match_numpy_for_single_and_batched_updates():
    rng = np.random.default_rng(0)
    data = rng.normal(3.0, 2.0, size=(23, 4, 5))
    one, batched = RunningMoments((4, 5)), RunningMoments((4, 5))
    for row in data:
        one.add(torch.as_tensor(row, dtype=torch.float32))
    for start in (0, 1, 8, 15):  # uneven batches, one of a single row
        stop = {0: 1, 1: 8, 8: 15, 15: 23}[start]
        batched.add_batch(torch.as_tensor(data[start:stop]))
    for m in (one, batched):
        assert m.n == 23
        np.testing.assert_allclose(m.mean.numpy(), data.mean(0), rtol=1e-6)
        np.testing.assert_allclose(m.var().numpy(), data.var(0, ddof=1), rtol=1e-5)
    assert RunningMoments((2,)).var().tolist() == [0.0, 0.0]


def _stream(a: np.ndarray, chunk: int) -> MatrixAccumulator:
    """Feed a [N, T, U] matrix as the API does: chunks of samples, each through every transformation."""
    n, t, u = a.shape
    acc = MatrixAccumulator((u,), t, "cpu")
    for start in range(0, n, chunk):
        block = torch.as_tensor(a[start : start + chunk])
        acc.start_chunk(block.shape[0])
        for j in range(t):
            acc.add(j, block[:, j])
        acc.end_chunk()
    return acc


def test_matrix_statistics_equal_the_direct_definitions():
    rng = np.random.default_rng(1)
    # units with very different scales and a large offset: float64 Welford keeps its digits
    a = rng.normal(size=(11, 6, 3)) * np.array([1e-3, 1.0, 50.0]) + 1e4
    stats = _stream(a, chunk=4).stats()
    tv = a.std(axis=1, ddof=1).mean(axis=0)  # mean over samples of the std over transformations
    sv = a.std(axis=0, ddof=1)  # [T, U]: per transformation, the std over samples
    np.testing.assert_allclose(stats.transformation_std.numpy(), tv, rtol=1e-7)
    np.testing.assert_allclose(stats.sample_std.numpy(), sv, rtol=1e-7)
    np.testing.assert_allclose(stats.means.numpy(), a.mean(axis=0), rtol=1e-12)
    assert stats.n_samples == 11 and stats.n_transformations == 6


def test_merging_groups_equals_streaming_them_together():
    rng = np.random.default_rng(2)
    a = rng.normal(size=(9, 4, 2))
    whole = _stream(a, chunk=9).stats()
    merged = _stream(a[:5], chunk=2).stats().merge(_stream(a[5:], chunk=3).stats())
    for field in ("transformation_std", "sample_std", "means", "m2"):
        np.testing.assert_allclose(getattr(merged, field).numpy(), getattr(whole, field).numpy(), rtol=1e-10)
    assert merged.n_samples == 9
