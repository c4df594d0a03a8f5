"""BatchNorm statistics recomputed from chosen images, instead of the running averages of training.

Two uses. ``pooled`` training statistics ("precise BN"): one pass over every training hospital's
images, so evaluation does not normalise with whichever hospital's batches came last. Per-hospital
test statistics (AdaBN, Li et al. 2016, "Revisiting batch normalization for practical domain
adaptation"): each hospital's images are normalised with statistics of that hospital's own images.
A new scanner shifts intensities; with training statistics the shift passes through every layer and
moves the logits past the decision threshold even when the ranking of images stays right (held-out
AUROC near 1 at chance accuracy, docs/results/dg_shared.md). Only unlabelled images are used.

Statistics are exact cumulative averages (``momentum=None``) over the given batches, in their order:
the same images in the same batches give the same bytes, so a resumed stage recomputes what an
unbroken one did.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

_BUFFERS = ("running_mean", "running_var", "num_batches_tracked")


def batch_norms(model: nn.Module) -> list[_BatchNorm]:
    return [m for m in model.modules() if isinstance(m, _BatchNorm) and m.track_running_stats]


def _state(norms: list[_BatchNorm]) -> list[list[Tensor]]:
    return [[getattr(m, b).clone() for b in _BUFFERS] for m in norms]


def _load(norms: list[_BatchNorm], state: list[list[Tensor]]) -> None:
    for m, buffers in zip(norms, state):
        for name, value in zip(_BUFFERS, buffers):
            getattr(m, name).copy_(value)


@torch.no_grad()
def _accumulate(model: nn.Module, norms: list[_BatchNorm], images: Tensor) -> None:
    """One forward with only the BatchNorm layers in training mode (dropout stays off), each folding
    this batch into its cumulative average."""
    modes = [m.training for m in model.modules()]
    momenta = [m.momentum for m in norms]
    model.eval()
    for m in norms:
        m.train()
        m.momentum = None
    model(images)
    for m, momentum in zip(norms, momenta):
        m.momentum = momentum
    for m, mode in zip(model.modules(), modes):
        m.training = mode


def recompute_bn_statistics(model: nn.Module, batches: Iterable[Tensor]) -> None:
    """Replace every BatchNorm layer's running statistics by their average over ``batches``."""
    norms = batch_norms(model)
    if not norms:
        return
    for m in norms:
        m.reset_running_stats()
    for images in batches:
        _accumulate(model, norms, images)


class HospitalStatistics:
    """One set of BatchNorm statistics per hospital, swapped into the model around that hospital's
    images. The model's own statistics are restored after every call."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.norms = batch_norms(model)
        self.states: dict[str, list[list[Tensor]]] = {}

    @classmethod
    def from_batches(
        cls, model: nn.Module, batches: Iterable[tuple[Tensor, Sequence[str]]], batch_size: int
    ) -> HospitalStatistics:
        """Statistics of each hospital's images among ``batches`` of (images, hospital per image).

        The images are regrouped into forwards of ``batch_size`` images of one hospital, in the order
        they come: a hospital gets the statistics one pass over its own images in batches of that size
        gives, however the batches mixed hospitals (a batch's statistics weigh by batch, not image)."""
        stats = cls(model)
        waiting: dict[str, list[Tensor]] = {}
        for images, domains in batches:
            for domain, index in _groups(domains):
                queue = waiting.setdefault(domain, [])
                queue.extend(images[index].unbind(0))
                while len(queue) >= batch_size:
                    stats.accumulate(torch.stack(queue[:batch_size]), [domain] * batch_size)
                    del queue[:batch_size]
        for domain, queue in waiting.items():
            if queue:
                stats.accumulate(torch.stack(queue), [domain] * len(queue))
        return stats

    def accumulate(self, images: Tensor, domains: Sequence[str]) -> None:
        if not self.norms:
            return
        own = _state(self.norms)
        try:
            for domain, index in _groups(domains):
                if domain in self.states:
                    _load(self.norms, self.states[domain])
                else:
                    for m in self.norms:
                        m.reset_running_stats()
                _accumulate(self.model, self.norms, images[index])
                self.states[domain] = _state(self.norms)
        finally:
            _load(self.norms, own)

    def apply(self, images: Tensor, domains: Sequence[str], fn: Callable[[Tensor], Tensor]) -> Tensor:
        """``fn`` of each hospital's images under that hospital's statistics, in the batch's order."""
        if not self.norms:
            return fn(images)
        missing = sorted(set(domains) - self.states.keys())
        if missing:
            raise KeyError(f"no BatchNorm statistics for hospital(s) {', '.join(missing)}")
        own = _state(self.norms)
        parts: list[tuple[list[int], Tensor]] = []
        try:
            for domain, index in _groups(domains):
                _load(self.norms, self.states[domain])
                parts.append((index, fn(images[index])))
        finally:
            _load(self.norms, own)
        first = parts[0][1]
        out = first.new_empty((len(domains), *first.shape[1:]))
        for index, values in parts:
            out[index] = values
        return out


def _groups(domains: Sequence[str]) -> list[tuple[str, list[int]]]:
    """Each hospital with the positions of its images, hospitals in order of first appearance."""
    groups: dict[str, list[int]] = {}
    for i, domain in enumerate(domains):
        groups.setdefault(domain, []).append(i)
    return list(groups.items())
