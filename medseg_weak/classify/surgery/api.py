"""The functional entry points: ``combine`` (flat ``[H, n]``) and ``combine_parameters`` (per parameter).

Both resolve a rule name through ``RULES`` and call the same rule code; the flat form is the
per-parameter form with a single parameter, so the two agree by construction.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from medseg_weak.classify.surgery.base import RULES, GradientRule


def make_rule(rule: str | GradientRule) -> GradientRule:
    """A fresh default-configured instance for a name (the registry's error lists valid names)."""
    return rule if isinstance(rule, GradientRule) else RULES.get(rule)()


def combine(
    rule: str | GradientRule,
    grads: Tensor,
    generator: torch.Generator | None = None,
    *,
    losses: Tensor | None = None,
) -> Tensor:
    """Combine flat per-hospital gradients ``[hospitals, parameters]`` into ``[parameters]``.

    ``rule`` is a registered name (a fresh instance with default hyper-parameters, so group DRO starts
    from uniform weights) or a configured ``GradientRule`` instance. ``generator`` (on the gradients'
    device) drives agr_rand's noise and pcgrad's order; ``losses`` ``[hospitals]`` is for group_dro.
    """
    if not isinstance(grads, Tensor) or grads.dim() != 2:
        shape = tuple(grads.shape) if isinstance(grads, Tensor) else type(grads).__name__
        raise ValueError(f"combine expects flat gradients [hospitals, parameters]; got {shape}")
    return make_rule(rule)([grads], generator=generator, losses=losses)[0]


def combine_parameters(
    rule: str | GradientRule,
    grads: Sequence[Tensor],
    generator: torch.Generator | None = None,
    losses: Tensor | None = None,
) -> list[Tensor]:
    """Per-parameter form: ``grads[k]`` is ``[hospitals, *shape_k]``, the result ``[*shape_k]``.

    Gives the same result as flattening, ``combine`` and unflattening (global statistics such as
    agr_rand's mean and pcgrad's dot products run across the list), without copying every gradient
    into one flat vector.
    """
    return make_rule(rule)(grads, generator=generator, losses=losses)
