"""medseg-weak: weakly supervised medical image segmentation from image-level labels.

``import medseg_weak as mw`` gives one typed function per stage (``mw.train_classifier``,
``mw.make_cams``, ``mw.train_segmenter``, ``mw.evaluate``, ``mw.run_pipeline``) and ``mw.config``
to build a config; importing the package does not import torch.
"""

import types
from typing import Any

from medseg_weak import evaluate as _evaluate_package
from medseg_weak.api import (
    config,
    make_cams,
    run_config,
    run_pipeline,
    train_classifier,
    train_segmenter,
)
from medseg_weak.errors import ConfigError, InputError, MedsegError

__version__ = "0.1.0"


class _CallableModule(types.ModuleType):
    """``mw.evaluate(run)`` is the API function and ``medseg_weak.evaluate`` the package of metrics:
    Python binds the package to the attribute ``medseg_weak.evaluate`` whenever it is imported, so
    the package forwards calls to :func:`medseg_weak.api.evaluate` instead of shadowing it."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        from medseg_weak.api import evaluate as evaluate_run

        return evaluate_run(*args, **kwargs)


_evaluate_package.__class__ = _CallableModule
evaluate = _evaluate_package

__all__ = [
    "ConfigError",
    "InputError",
    "MedsegError",
    "__version__",
    "config",
    "evaluate",
    "make_cams",
    "run_config",
    "run_pipeline",
    "train_classifier",
    "train_segmenter",
]
