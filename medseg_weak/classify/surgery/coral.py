"""CORAL penalty (Sun & Saenko, 2016; DomainBed ``CORAL``): align feature means and covariances.

Not a gradient rule but a loss term added to the classification loss: the mean, over all pairs of
hospitals, of the squared distance between their feature means plus that between their feature
covariances. As in DomainBed both distances are MEAN squared differences, i.e. the squared Frobenius
norm divided by the number of entries (d for the means, d^2 for the covariances), so the penalty's scale
does not grow with the feature width.
"""

from __future__ import annotations

from torch import Tensor


def _moments(x: Tensor) -> tuple[Tensor, Tensor]:
    mean = x.mean(0, keepdim=True)
    centred = x - mean
    return mean, centred.T @ centred / (x.shape[0] - 1)  # unbiased, as DomainBed


def coral_penalty(features: list[Tensor]) -> Tensor:
    """Mean over hospital pairs of ``mean((mu_a - mu_b)^2) + mean((C_a - C_b)^2)``; 0 for < 2 hospitals.

    ``features[i]`` is ``[n_i, d]`` (the classifier's pooled features for hospital i, n_i >= 2).
    """
    if len(features) == 0:
        raise ValueError("coral_penalty needs a list of per-hospital features, got an empty list")
    width = features[0].shape[-1]
    for i, f in enumerate(features):
        if f.dim() != 2 or f.shape[1] != width:
            raise ValueError(f"features[{i}] must be [n, {width}]; got {tuple(f.shape)}")
        if f.shape[0] < 2:
            raise ValueError(f"features[{i}] has {f.shape[0]} sample(s); a covariance needs at least 2")
    penalty = features[0].new_zeros(())
    if len(features) < 2:
        return penalty
    moments = [_moments(f) for f in features]
    pairs = 0
    for a in range(len(moments)):
        for b in range(a + 1, len(moments)):
            (mean_a, cov_a), (mean_b, cov_b) = moments[a], moments[b]
            penalty = penalty + (mean_a - mean_b).pow(2).mean() + (cov_a - cov_b).pow(2).mean()
            pairs += 1
    return penalty / pairs
