"""The model guard of CAM computation: the model leaves with the state it came with, on any exit.

Hooks, submodules, parameter ``.grad`` and train/eval flags are restored even when a method raises
mid-call (pytorch-grad-cam issues #78, #132, #195, #483); the library's own ``with`` block is not
used because its ``__exit__`` swallows ``IndexError``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from torch import nn

_HOOK_DICTS = (
    "_forward_hooks",
    "_forward_hooks_with_kwargs",
    "_forward_hooks_always_called",
    "_forward_pre_hooks",
    "_forward_pre_hooks_with_kwargs",
    "_backward_hooks",
    "_backward_pre_hooks",
)


@contextmanager
def model_state_restored(model: nn.Module) -> Iterator[None]:
    """Give the model back with its hooks, submodules, ``.grad`` and train/eval flags as they were.

    pytorch-grad-cam can leave state behind when something raises: AblationCAM swaps the target layer
    for an AblationLayer and swaps it back only on success, registers a hook it removes only on
    success, and every gradient method's ``backward()`` overwrites parameter ``.grad``. Restoring a
    snapshot covers all of them, whichever method ran. Each submodule's own train flag is restored
    (not ``model.train(mode)``), so a partly frozen model stays partly frozen.
    """
    modules = list(model.modules())
    training = [m.training for m in modules]
    children = [(m, dict(m._modules)) for m in modules]
    hooks = [(m, {name: set(getattr(m, name, {})) for name in _HOOK_DICTS}) for m in modules]
    params = list(model.parameters())
    grads = [p.grad for p in params]
    try:
        yield
    finally:
        for parent, kids in children:
            for name, child in kids.items():
                if parent._modules.get(name) is not child:
                    parent._modules[name] = child
        for module, before in hooks:
            for name, keys in before.items():
                registered = getattr(module, name, None)
                if registered is None:
                    continue
                for key in [k for k in registered if k not in keys]:
                    del registered[key]
        for param, grad in zip(params, grads):
            param.grad = grad
        for module, flag in zip(modules, training):
            module.training = flag
