"""Where the measured activations come from: named layers of any model, and batches of input samples.

One responsibility: resolve layer names against ``model.named_modules()`` (a wrong name lists the
valid ones), record those layers' outputs during a forward pass with forward hooks that are always
removed, and read samples from a tensor or a dataset in chunks, so nothing holds all N images.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Protocol

import torch
from torch import nn

from medseg_weak.errors import ConfigError, InputError

__all__ = ["LayerTap", "SampleSource", "eval_mode", "model_device", "resolve_layers"]


class _MapDataset(Protocol):
    def __len__(self) -> int: ...
    def __getitem__(self, index: int) -> Any: ...


def model_device(model: nn.Module) -> torch.device:
    param = next(model.parameters(), None)
    if param is None:
        buffer = next(model.buffers(), None)
        return torch.device("cpu") if buffer is None else buffer.device
    return param.device


def resolve_layers(model: nn.Module, layers: Sequence[str]) -> dict[str, nn.Module]:
    """``{name: module}`` for names as in ``model.named_modules()``; unknown names list the valid ones."""
    if isinstance(layers, str):
        layers = [layers]
    if not layers:
        raise ConfigError("'layers' is empty: name at least one module of the model (model.named_modules())")
    modules = {name: m for name, m in model.named_modules() if name}
    missing = [name for name in layers if name not in modules]
    if missing:
        hints = []
        for name in missing:
            close = difflib.get_close_matches(name, modules, n=1)
            hints.append(f"'{name}'" + (f" (did you mean '{close[0]}'?)" if close else ""))
        raise ConfigError(
            f"unknown layer(s) {', '.join(hints)} in '{type(model).__name__}'. Valid: {', '.join(modules)}"
        )
    if len(set(layers)) != len(layers):
        raise ConfigError(f"'layers' names a layer twice: {list(layers)}")
    return {name: modules[name] for name in layers}


class LayerTap:
    """Forward hooks that keep the latest output of each named layer (detached), removed on exit.

    ViT blocks give token activations ``[B, N, D]``; a layer returning a tuple contributes its first
    tensor (e.g. attention modules returning (output, weights)).
    """

    def __init__(self, layers: dict[str, nn.Module]) -> None:
        self.layers = layers
        self.outputs: dict[str, torch.Tensor] = {}
        self._handles: list[Any] = []

    def __enter__(self) -> LayerTap:
        for name, module in self.layers.items():
            self._handles.append(module.register_forward_hook(self._hook(name)))
        return self

    def __exit__(self, *exc: object) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def _hook(self, name: str) -> Any:
        def hook(module: nn.Module, inputs: Any, output: Any) -> None:
            if name in self.outputs:
                raise ConfigError(
                    f"layer '{name}' runs more than once per forward pass (a shared module); "
                    "its activations are ambiguous: pick a layer that runs once"
                )
            if isinstance(output, tuple | list) and output and isinstance(output[0], torch.Tensor):
                output = output[0]
            if not isinstance(output, torch.Tensor):
                raise ConfigError(f"layer '{name}' returns {type(output).__name__}, not a tensor")
            self.outputs[name] = output.detach()

        return hook

    def run(self, model: nn.Module, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """One forward pass; ``{layer: activations [B, ...]}`` for every named layer."""
        self.outputs = {}
        model(images)
        missing = [name for name in self.layers if name not in self.outputs]
        if missing:
            raise ConfigError(f"layer(s) {', '.join(missing)} did not run in the model's forward pass")
        return self.outputs


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """Eval mode for the measurement (dropout off, batch-norm statistics frozen); flags restored after."""
    flags = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for m, flag in flags:
            m.training = flag


class SampleSource:
    """Samples from a tensor ``[N, C, H, W]`` or a map-style dataset, read a chunk at a time.

    Dataset items may be tensors ``[C, H, W]`` / ``[H, W]``, dicts with an ``"image"`` tensor (the
    project's datasets) or tuples whose first element is the image.
    """

    def __init__(self, images: torch.Tensor | _MapDataset) -> None:
        if isinstance(images, torch.Tensor):
            if images.ndim != 4:
                raise ConfigError(f"'images' must be a tensor [N, C, H, W]; got shape {tuple(images.shape)}")
        elif not (hasattr(images, "__len__") and hasattr(images, "__getitem__")):
            raise ConfigError(
                f"'images' must be a tensor [N, C, H, W] or a map-style dataset; got {type(images).__name__}"
            )
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def batch(self, indices: Sequence[int]) -> torch.Tensor:
        if isinstance(self.images, torch.Tensor):
            return self.images[list(indices)]
        return torch.stack([self._item(i) for i in indices])

    def _item(self, index: int) -> torch.Tensor:
        item = self.images[index]
        if isinstance(item, dict):
            if "image" not in item:
                raise InputError(
                    None, f"dataset item {index} is a dict without an 'image' key: {sorted(item)}"
                )
            item = item["image"]
        elif isinstance(item, tuple | list):
            item = item[0]
        if not isinstance(item, torch.Tensor):
            item = torch.as_tensor(item)
        if item.ndim == 2:
            item = item[None]
        if item.ndim != 3:
            raise InputError(None, f"dataset item {index}: image must be [C, H, W]; got {tuple(item.shape)}")
        return item.float() if not item.is_floating_point() else item
