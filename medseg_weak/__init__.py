"""medseg-weak: weakly supervised medical image segmentation from image-level labels.

``import medseg_weak as mw`` gives one typed function per stage (``mw.train_classifier``,
``mw.make_cams``, ``mw.train_segmenter``, ``mw.evaluate``, ``mw.run_pipeline``) and ``mw.config``
to build a config; importing the package does not import torch.
"""

from medseg_weak.api import (
    config,
    evaluate,
    make_cams,
    run_config,
    run_pipeline,
    train_classifier,
    train_segmenter,
)
from medseg_weak.errors import ConfigError, InputError, MedsegError

__version__ = "0.1.0"

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
