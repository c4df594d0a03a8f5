"""Loading local weight files into a module whatever format wrote them (timm, torchvision, smp, ours).

Key prefixes that differ between these formats are stripped or added until the most keys match;
shape mismatches are skipped (an RGB stem is summed into a grey one, as timm adapts ``in_chans``);
nothing matching is an error, never a silently random model. Nothing is ever downloaded.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import Tensor, nn

from medseg_weak.errors import InputError

log = logging.getLogger(__name__)
_PREFIXES = ("model.", "backbone.", "body.", "encoder.", "module.", "net.", "features.")


def match_state_keys(state: dict[str, Tensor], target: dict[str, Tensor]) -> dict[str, Tensor]:
    """Strip / add known prefixes until the most keys match the target."""
    best, best_hits = state, len(set(state) & set(target))
    candidates = [state]
    for _ in range(3):
        nxt = []
        for cand in candidates:
            for prefix in _PREFIXES:
                stripped = {k[len(prefix) :]: v for k, v in cand.items() if k.startswith(prefix)}
                if stripped:
                    nxt.append(stripped)
                nxt.append({prefix + k: v for k, v in cand.items()})
        candidates = nxt[:64]
        for cand in candidates:
            hits = len(set(cand) & set(target))
            if hits > best_hits:
                best, best_hits = cand, hits
    return best


def read_state_dict(path: str | Path, where: str) -> dict[str, Tensor]:
    """The tensors of a local weights file (a state dict, or a Lightning checkpoint's ``state_dict``).

    ``where`` names the config key the path came from, for the error message."""
    path = Path(path)
    if not path.is_file():
        raise InputError(path, f"weights file not found ({where})")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for a bad file; all mean "cannot use it"
        raise InputError(path, f"cannot read weights ({type(err).__name__}: {err}) ({where})") from err
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise InputError(path, f"is not a state dict of tensors ({where})")
    return state


def load_matching_weights(module: nn.Module, path: str | Path, where: str) -> tuple[list[str], list[str]]:
    """Load what fits of ``path`` into ``module``; returns (missing, unexpected) keys for logging."""
    state = read_state_dict(path, where)
    target = module.state_dict()
    state = match_state_keys(state, target)
    usable: dict[str, Tensor] = {}
    for key, value in state.items():
        want = target.get(key)
        if want is None:
            continue
        if value.shape == want.shape:
            usable[key] = value
        elif value.ndim == 4 and want.ndim == 4 and value.shape[1] == 3 and want.shape[1] == 1:
            usable[key] = value.sum(dim=1, keepdim=True)  # RGB stem -> grey stem, as timm adapts in_chans
    if not usable:
        raise InputError(path, f"no tensor matches the '{type(module).__name__}' parameters ({where})")
    # nn.Module's own method: smp encoders override load_state_dict and return None instead of the keys.
    result = nn.Module.load_state_dict(module, usable, strict=False)
    log.info("loaded %d tensors from %s (%d missing)", len(usable), path, len(result.missing_keys))
    return list(result.missing_keys), sorted(set(state) - set(usable))
