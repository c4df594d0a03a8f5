"""pytorch-grad-cam's CAM normalisation, on tensors: the one definition both CAM paths finish with."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def scale_cams(cams: torch.Tensor, size: tuple[int, int] | None = None) -> torch.Tensor:
    """pytorch-grad-cam's ``scale_cam_image`` for ``[B, h, w]`` on any device.

    Per map: subtract the min, divide by ``1e-7 + max``, then resize bilinearly (half-pixel centres,
    as cv2's ``INTER_LINEAR``; measured within 4e-7 of ``cv2.resize`` on float32 maps).
    """
    cams = cams - cams.flatten(1).min(dim=1).values[:, None, None]
    cams = cams / (1e-7 + cams.flatten(1).max(dim=1).values[:, None, None])
    if size is not None and tuple(cams.shape[-2:]) != tuple(size):
        cams = F.interpolate(cams[:, None], size=size, mode="bilinear", align_corners=False)[:, 0]
    return cams


def finish_cams(raw: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Raw ``[B, h, w]`` CAMs -> final maps, in pytorch-grad-cam's order for one target layer.

    ``compute_cam_per_layer`` (ReLU, normalise, resize) then ``aggregate_multi_layers`` (ReLU, mean
    over the one layer, normalise again): the second normalisation is kept so the maps match exactly.
    """
    cams = scale_cams(raw.clamp(min=0), size)
    return scale_cams(cams.clamp(min=0))
