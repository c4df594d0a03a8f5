"""medseg-weak: weakly supervised medical image segmentation from image-level labels."""

from medseg_weak.errors import ConfigError, InputError, MedsegError

__version__ = "0.1.0"

__all__ = ["ConfigError", "InputError", "MedsegError", "__version__"]
