"""Running statistics of the samples x transformations activation matrix, one unit at a time.

One responsibility: turn a stream of activation batches into the sufficient statistics of every
measure, in float64, with memory independent of the number of samples N:

* per sample, the running mean / M2 over the transformations seen so far (only for the samples of
  the current chunk), folded into a running sum of "std over transformations" when the chunk ends;
* per transformation, the running mean / M2 over all samples seen so far (Chan et al.'s parallel
  merge of each batch's moments).

A chunk is a group of samples that goes through every transformation before the next chunk starts;
each batch holds the chunk's samples under one transformation. tmeasures keeps the same Welford
statistics but walks the matrix twice (rows, then columns); one walk is enough for both.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["LayerStats", "MatrixAccumulator", "RunningMoments"]


class RunningMoments:
    """Count, mean and sum of squared deviations (M2) of observations of a fixed shape, in float64."""

    def __init__(self, shape: tuple[int, ...], device: torch.device | str = "cpu") -> None:
        self.n = 0
        self.mean = torch.zeros(shape, dtype=torch.float64, device=device)
        self.m2 = torch.zeros(shape, dtype=torch.float64, device=device)

    def add(self, x: torch.Tensor) -> None:
        """One observation per element (Welford's update)."""
        x = x.to(self.mean.dtype)
        self.n += 1
        delta = x - self.mean
        self.mean.add_(delta, alpha=1.0 / self.n)  # in place: this runs once per unit per forward
        self.m2.addcmul_(delta, x - self.mean)

    def add_batch(self, x: torch.Tensor) -> None:
        """``x.shape[0]`` observations along dim 0 (Chan's merge of the batch's own moments)."""
        k = x.shape[0]
        if k == 0:
            return
        x = x.to(self.mean.dtype)
        # two passes over the batch; torch.var_mean(dim=0) gives the same numbers ~10x slower on CPU
        mean_b = x.mean(dim=0)
        self.merge(k, mean_b, (x - mean_b).square_().sum(dim=0))

    def merge(self, k: int, mean_b: torch.Tensor, m2_b: torch.Tensor) -> None:
        n = self.n + k
        delta = mean_b - self.mean
        self.mean.add_(delta, alpha=k / n)
        self.m2.add_(m2_b).addcmul_(delta, delta, value=self.n * k / n)
        self.n = n

    def var(self) -> torch.Tensor:
        """Sample variance (n - 1); 0 for fewer than 2 observations, as tmeasures."""
        return self.m2 / (self.n - 1) if self.n > 1 else torch.zeros_like(self.m2)


@dataclass(frozen=True)
class LayerStats:
    """What the measures need for one layer, every tensor shaped like one sample's activation.

    ``transformation_std``: mean over samples of the std over transformations (n - 1 denominators).
    ``sample_std``: ``[T, *unit]``, per transformation the std over samples (n - 1).
    ``means`` / ``m2``: ``[T, *unit]``, per transformation the mean and M2 over samples (ANOVA).
    """

    n_samples: int
    transformation_std: torch.Tensor
    sample_std: torch.Tensor
    means: torch.Tensor
    m2: torch.Tensor

    @property
    def n_transformations(self) -> int:
        return self.means.shape[0]

    def merge(self, other: LayerStats) -> LayerStats:
        """The statistics of both sample sets together (disjoint groups, e.g. hospitals), exactly."""
        n = self.n_samples + other.n_samples
        tv = (self.transformation_std * self.n_samples + other.transformation_std * other.n_samples) / n
        delta = other.means - self.means
        means = self.means + delta * (other.n_samples / n)
        m2 = self.m2 + other.m2 + delta.square() * (self.n_samples * other.n_samples / n)
        return LayerStats(n, tv, (m2 / (n - 1)).sqrt(), means, m2)


class MatrixAccumulator:
    """Streams one layer's activations of the N x T matrix, chunk by chunk (see the module docstring)."""

    def __init__(
        self, unit_shape: tuple[int, ...], n_transformations: int, device: torch.device | str
    ) -> None:
        self.unit_shape = tuple(unit_shape)
        self.device = device
        self.per_transformation = [RunningMoments(self.unit_shape, device) for _ in range(n_transformations)]
        self._std_sum = torch.zeros(self.unit_shape, dtype=torch.float64, device=device)
        self._samples = 0
        self._chunk: RunningMoments | None = None

    def start_chunk(self, n: int) -> None:
        if self._chunk is not None:
            raise RuntimeError("start_chunk() called before end_chunk() of the previous chunk")
        self._chunk = RunningMoments((n, *self.unit_shape), self.device)

    def add(self, t: int, activations: torch.Tensor) -> None:
        """Activations ``[n, *unit]`` of the current chunk's samples under transformation ``t``."""
        if self._chunk is None:
            raise RuntimeError("add() outside a chunk: call start_chunk(n) first")
        a = activations.to(torch.float64)  # converted once for both updates
        self._chunk.add(a)
        self.per_transformation[t].add_batch(a)

    def end_chunk(self) -> None:
        if self._chunk is None:
            raise RuntimeError("end_chunk() without start_chunk()")
        self._std_sum += self._chunk.var().sqrt().sum(dim=0)
        self._samples += self._chunk.mean.shape[0]
        self._chunk = None

    def stats(self) -> LayerStats:
        if self._chunk is not None:
            raise RuntimeError("stats() inside a chunk: call end_chunk() first")
        if self._samples == 0:
            raise RuntimeError("no samples were added")
        per_t = self.per_transformation
        return LayerStats(
            n_samples=self._samples,
            transformation_std=self._std_sum / self._samples,
            sample_std=torch.stack([m.var().sqrt() for m in per_t]),
            means=torch.stack([m.mean for m in per_t]),
            m2=torch.stack([m.m2 for m in per_t]),
        )
