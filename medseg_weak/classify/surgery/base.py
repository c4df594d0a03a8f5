"""The ``GradientRule`` base class and the ``RULES`` registry: a rule implements only ``combine``.

Every rule works on the *per-parameter* form: a list with one tensor ``[hospitals, *param.shape]`` per
trainable parameter, and returns one combined tensor ``[*param.shape]`` per parameter. The flat form of
the paper (one ``[hospitals, n_parameters]`` matrix) is the special case of a one-element list, so the
two forms share one implementation. Rules are pure functions of their inputs (and, for stateful rules
such as group DRO, of their own state): under DDP the caller all-reduces the per-hospital gradients
first, and every process then computes the same combined gradient.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from medseg_weak.registry import Registry


class GradientRule(ABC):
    """Combines per-hospital gradients into one update direction.

    Call an instance (``rule(grads, generator=..., losses=...)``) rather than ``combine``: ``__call__``
    validates the inputs once, so subclasses can assume well-formed tensors.
    """

    def __call__(
        self,
        grads: Sequence[Tensor],
        *,
        generator: torch.Generator | None = None,
        losses: Tensor | None = None,
    ) -> list[Tensor]:
        grads = check_gradients(grads)
        if losses is not None:
            check_losses(losses, grads[0].shape[0])
        return self.combine(grads, generator=generator, losses=losses)

    @abstractmethod
    def combine(
        self,
        grads: list[Tensor],
        *,
        generator: torch.Generator | None = None,
        losses: Tensor | None = None,
    ) -> list[Tensor]:
        """``grads[k]`` is ``[hospitals, *shape_k]``; return one ``[*shape_k]`` tensor per parameter.

        ``generator`` drives any randomness (draws must be reproducible from it alone); ``losses`` is
        the per-hospital loss ``[hospitals]``, needed only by rules that reweight hospitals.
        """

    def state_dict(self) -> dict[str, Any]:
        """State to checkpoint; stateless rules have none."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state:
            raise ValueError(f"{type(self).__name__} is stateless but got state keys {sorted(state)}")


# Holds classes, not instances: stateful rules (group DRO) need one instance per training run,
# created by ``RULES.get(name)(**hyper_parameters)``.
RULES: Registry[type[GradientRule]] = Registry("gradient rule")


def check_gradients(grads: Sequence[Tensor]) -> list[Tensor]:
    """Raise a clear ``ValueError`` unless ``grads`` is a non-empty list of ``[H, ...]`` float tensors."""
    if isinstance(grads, Tensor) or not isinstance(grads, Sequence):
        raise ValueError(
            "expected a list of per-parameter gradients [hospitals, *shape]; "
            f"got {type(grads).__name__} (use combine() for one flat [hospitals, n] tensor)"
        )
    if len(grads) == 0:
        raise ValueError("expected at least one parameter gradient, got an empty list")
    first = grads[0]
    for k, g in enumerate(grads):
        if not isinstance(g, Tensor) or g.dim() < 1 or not g.is_floating_point():
            what = f"{tuple(g.shape)} {g.dtype}" if isinstance(g, Tensor) else type(g).__name__
            raise ValueError(f"gradient {k} must be a float tensor [hospitals, *shape]; got {what}")
        if g.shape[0] != first.shape[0]:
            raise ValueError(
                f"all gradients need the same number of hospitals (dim 0): gradient 0 has "
                f"{first.shape[0]}, gradient {k} has {g.shape[0]} (shape {tuple(g.shape)})"
            )
        if g.device != first.device:
            raise ValueError(f"gradient {k} is on {g.device}, gradient 0 on {first.device}")
    if first.shape[0] == 0:
        raise ValueError("gradients have 0 hospitals")
    return list(grads)


def check_losses(losses: Tensor, hospitals: int) -> None:
    if not isinstance(losses, Tensor) or losses.shape != (hospitals,):
        shape = tuple(losses.shape) if isinstance(losses, Tensor) else type(losses).__name__
        raise ValueError(f"losses must be a tensor [hospitals] = [{hospitals}]; got {shape}")
