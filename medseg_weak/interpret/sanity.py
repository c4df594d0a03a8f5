"""Sanity checks for saliency maps (Adebayo et al., NeurIPS 2018): do the maps depend on the model?

* **Cascading model-parameter randomisation**: on a deep copy of the model (the caller's model is
  never touched), re-initialise the learnable layers one at a time from the top (the head) down,
  cumulatively, and after each step compare the new maps with the original ones.
* **Data randomisation**: compare the maps of the model with those of the same architecture trained
  on randomly permuted labels; a method whose maps barely differ is explaining the input, not what
  the model learned.

Similarity per image: Spearman rank correlation (average ranks for ties: CAMs have many exact zeros
after their ReLU) and SSIM (``skimage.metrics.structural_similarity``, data range 1). Rank
correlation of a constant map: 1 with another constant map (nothing changed), else 0.

**The rule** (``SANITY_THRESHOLD``): a method *fails* when the mean Spearman correlation between the
original maps and the maps of the fully randomised model (last cascade step), or of the random-label
model, is at least 0.5, i.e. the maps barely changed although the model did. Re-initialisation is each
layer's own ``reset_parameters()`` (the initialisation a fresh layer gets), seeded per layer.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from scipy.stats import rankdata
from skimage.metrics import structural_similarity
from torch import nn

from medseg_weak.errors import ConfigError
from medseg_weak.explain.cams import compute_cams

Explainer = Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]  # (model, images, ids) -> maps
SANITY_THRESHOLD = 0.5


@dataclass(frozen=True)
class RandomisationResult:
    """Per step (``steps[k]``: the layer randomised last, or ``random_labels``) and per image."""

    method: str
    steps: tuple[str, ...]
    spearman: np.ndarray  # [steps, N]
    ssim: np.ndarray  # [steps, N]

    @property
    def final_spearman(self) -> float:
        return float(np.nanmean(self.spearman[-1])) if self.spearman.size else float("nan")

    @property
    def passed(self) -> bool:
        return bool(self.final_spearman < SANITY_THRESHOLD)


def cam_explainer(method: str, target_layer: str | None = None, batch_size: int = 32) -> Explainer:
    """An explainer running ``compute_cams`` with one method (the layer named, so it resolves on copies)."""

    def explain(model: nn.Module, images: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        return compute_cams(
            model, images, target_layer=target_layer, method=method, targets=ids, batch_size=batch_size
        )

    return explain


def randomisable_layers(model: nn.Module, sample: torch.Tensor | None = None) -> list[tuple[str, nn.Module]]:
    """Learnable layers (own weight of rank >= 2: conv, linear) in forward-registration order.

    With ``sample``, only the layers a forward of it runs through: randomising a branch the class
    score never uses (the decoder of a UNet that also grades) cannot change a map and would look
    like a failed check."""
    layers = []
    for name, module in model.named_modules():
        weight = module._parameters.get("weight")
        if weight is not None and weight.ndim >= 2 and callable(getattr(module, "reset_parameters", None)):
            layers.append((name, module))
    if sample is None:
        return layers
    ran: set[str] = set()
    handles = [m.register_forward_hook(lambda *_, n=n: ran.add(n)) for n, m in layers]
    try:
        with torch.no_grad():
            model(sample[:1])
    finally:
        for handle in handles:
            handle.remove()
    return [(n, m) for n, m in layers if n in ran]


def cascading_randomisation(
    model: nn.Module,
    images: torch.Tensor,
    targets: torch.Tensor,
    explain: Explainer,
    method: str = "custom",
    seed: int = 0,
    original: torch.Tensor | None = None,
) -> RandomisationResult:
    """Randomise a copy of ``model`` from the top layer down; similarity to the original maps per step.

    ``original``: the maps of ``model`` when the caller has them already (else computed here).
    """
    original = explain(model, images, targets) if original is None else original
    randomised = copy.deepcopy(model)
    layers = randomisable_layers(randomised, images)
    if not layers:
        raise ConfigError(f"'{type(model).__name__}' has no conv or linear layer to randomise")
    steps, spearman, ssim = [], [], []
    with torch.random.fork_rng(devices=[]):  # the caller's random stream is left as it was
        for k, (name, layer) in enumerate(reversed(layers)):
            torch.manual_seed(seed + k)
            layer.reset_parameters()
            maps = explain(randomised, images, targets)
            steps.append(name or type(layer).__name__)
            spearman.append(spearman_per_image(original, maps))
            ssim.append(ssim_per_image(original, maps))
    return RandomisationResult(method, tuple(steps), np.stack(spearman), np.stack(ssim))


def data_randomisation(
    model: nn.Module,
    random_label_model: nn.Module,
    images: torch.Tensor,
    targets: torch.Tensor,
    explain: Explainer,
    method: str = "custom",
) -> RandomisationResult:
    """Similarity of the maps of ``model`` and of a model trained on random labels (same targets)."""
    a = explain(model, images, targets)
    b = explain(random_label_model, images, targets)
    return RandomisationResult(
        method, ("random_labels",), spearman_per_image(a, b)[None], ssim_per_image(a, b)[None]
    )


def spearman_per_image(a: torch.Tensor, b: torch.Tensor) -> np.ndarray:
    """``[N]`` Spearman rank correlation of each pair of maps (ties get average ranks)."""
    x = rankdata(_flat(a), axis=1)
    y = rankdata(_flat(b), axis=1)
    x -= x.mean(axis=1, keepdims=True)
    y -= y.mean(axis=1, keepdims=True)
    nx, ny = np.sqrt((x * x).sum(axis=1)), np.sqrt((y * y).sum(axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        r = (x * y).sum(axis=1) / (nx * ny)
    constant_x, constant_y = nx == 0, ny == 0
    r = np.where(constant_x & constant_y, 1.0, np.where(constant_x | constant_y, 0.0, r))
    return r.astype(np.float64)


def ssim_per_image(a: torch.Tensor, b: torch.Tensor) -> np.ndarray:
    """``[N]`` SSIM of each pair of maps in [0, 1]."""
    x = a.detach().float().cpu().numpy()
    y = b.detach().float().cpu().numpy()
    return np.array([structural_similarity(p, q, data_range=1.0) for p, q in zip(x, y)], dtype=np.float64)


def _flat(maps: torch.Tensor) -> np.ndarray:
    return maps.detach().double().cpu().numpy().reshape(maps.shape[0], -1)
