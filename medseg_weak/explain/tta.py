"""Test-time augmentation smoothing of CAMs: flipped and rescaled views, each mapped back, averaged."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from medseg_weak.explain.cam_scaling import scale_cams


@dataclass(frozen=True)
class AugView:
    """One test-time view of the input: an optional rescaling, then optional flips."""

    hflip: bool = False
    vflip: bool = False
    scale: float = 1.0

    def apply(self, images: torch.Tensor) -> torch.Tensor:
        if self.scale != 1.0:
            size = [max(1, round(s * self.scale)) for s in images.shape[-2:]]
            # antialias when shrinking, so the smaller view is not aliased
            images = F.interpolate(
                images, size=size, mode="bilinear", align_corners=False, antialias=self.scale < 1.0
            )
        return self._flip(images)

    def invert(self, cams: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """Map ``[B, h, w]`` CAMs of the view back onto the original image grid."""
        cams = self._flip(cams)
        if tuple(cams.shape[-2:]) != tuple(size):
            cams = F.interpolate(cams[:, None], size=size, mode="bilinear", align_corners=False)[:, 0]
        return cams

    def _flip(self, x: torch.Tensor) -> torch.Tensor:
        dims = [d for d, on in ((-1, self.hflip), (-2, self.vflip)) if on]
        return x.flip(dims) if dims else x


#: The four flips at full size, plus no-flip / h-flip at 0.75x and 1.25x (8 views). The set is closed
#: under a horizontal flip, so a mirror-symmetric image gets an exactly mirror-symmetric smoothed CAM
#: whatever the model (pytorch-grad-cam's ttach default, h-flip x intensity 0.9/1/1.1, has 6 views).
AUG_SMOOTH_VIEWS: tuple[AugView, ...] = (
    AugView(),
    AugView(hflip=True),
    AugView(vflip=True),
    AugView(hflip=True, vflip=True),
    AugView(scale=0.75),
    AugView(hflip=True, scale=0.75),
    AugView(scale=1.25),
    AugView(hflip=True, scale=1.25),
)


def smooth_over_views(
    run: Callable[[torch.Tensor, torch.Tensor | None], torch.Tensor],
    images: torch.Tensor,
    class_ids: torch.Tensor,
) -> torch.Tensor:
    size = (images.shape[-2], images.shape[-1])
    total = torch.zeros(images.shape[0], *size, dtype=torch.float32, device=images.device)
    for view in AUG_SMOOTH_VIEWS:
        total += view.invert(run(view.apply(images), class_ids), size)
    return scale_cams(total / len(AUG_SMOOTH_VIEWS))
