"""The UNet's prediction per image in the original geometry, for the gallery's prediction contour.

Same decision as the evaluation (probability >= 0.5 inside the breast region, in the model's view),
then mapped back onto the original image with the preprocessing geometry the cache recorded.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from medseg_weak.config import Config
from medseg_weak.data.dataset import PreprocessedDataset, preprocessed_from_cache
from medseg_weak.data.manifest import Manifest, Record
from medseg_weak.data.prepare import open_cache
from medseg_weak.report.gallery import Predictor
from medseg_weak.rundir import RunDir
from medseg_weak.segment.module import SegmenterModule

THRESHOLD = 0.5  # as in evaluate.heldout: a pixel is foreground when its probability reaches it


def unet_predictor(cfg: Config, manifest: Manifest, run: RunDir, checkpoint: Path) -> Predictor:
    """A function mapping a batch of records to their UNet masks (bool, original geometry) by id."""
    model = SegmenterModule.load_from_checkpoint(checkpoint, map_location="cpu", weights_only=False).eval()
    dataset = PreprocessedDataset(manifest, cfg.data.kind, cfg.data.image_size, open_cache(cfg, run))
    position = {r.id: i for i, r in enumerate(dataset.records)}

    @torch.no_grad()
    def predict(records: list[Record]) -> dict[str, np.ndarray]:
        loaded = [dataset.load(position[r.id]) for r in records]
        images = torch.stack([dataset.item(position[r.id], a)["image"] for r, (a, _) in zip(records, loaded)])
        probs = torch.sigmoid(model(images))[:, 0].numpy()
        out = {}
        for r, (arrays, geometry), p in zip(records, loaded, probs):
            pred = ((p >= THRESHOLD) & arrays["region"].astype(bool)).astype(np.uint8)
            out[r.id] = preprocessed_from_cache(arrays, geometry).to_original(pred, order=0) > 0
        return out

    return predict
