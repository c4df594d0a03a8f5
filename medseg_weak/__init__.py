"""medseg-weak: weakly supervised medical image segmentation from image-level labels.

``import medseg_weak as mw`` gives one typed function per stage (``mw.train_classifier``,
``mw.make_cams``, ``mw.train_segmenter``, ``mw.evaluate``, ``mw.run_pipeline``, ``mw.report``,
``mw.train_quality``, ``mw.predict``, ``mw.interpret``, ``mw.invariance``, ``mw.dg_benchmark``) and
``mw.config`` to build a config; importing the package does not import torch.
"""

import types
from typing import Any

from medseg_weak import evaluate as _evaluate_package
from medseg_weak import interpret as _interpret_package
from medseg_weak import invariance as _invariance_package
from medseg_weak import report as _report_package
from medseg_weak.api import (
    config,
    dg_benchmark,
    inspect,
    invariance_matrix,
    make_cams,
    predict,
    run_config,
    run_pipeline,
    train_classifier,
    train_quality,
    train_segmenter,
)
from medseg_weak.errors import ConfigError, InputError, MedsegError

__version__ = "0.1.0"


class _CallableModule(types.ModuleType):
    """``mw.evaluate(run)`` is the API function and ``medseg_weak.evaluate`` the package of metrics
    (likewise ``report``, ``interpret`` and ``invariance``): Python binds the package to the attribute
    ``medseg_weak.<name>`` whenever it is imported, so the package forwards calls to
    ``medseg_weak.api.<name>`` instead of shadowing it."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        from medseg_weak import api

        return getattr(api, self.__name__.rsplit(".", 1)[-1])(*args, **kwargs)


for _package in (_evaluate_package, _interpret_package, _invariance_package, _report_package):
    _package.__class__ = _CallableModule
evaluate = _evaluate_package
interpret = _interpret_package
invariance = _invariance_package
report = _report_package

__all__ = [
    "ConfigError",
    "InputError",
    "MedsegError",
    "__version__",
    "config",
    "dg_benchmark",
    "evaluate",
    "inspect",
    "interpret",
    "invariance",
    "invariance_matrix",
    "make_cams",
    "predict",
    "report",
    "run_config",
    "run_pipeline",
    "train_classifier",
    "train_quality",
    "train_segmenter",
]
