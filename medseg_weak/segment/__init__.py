"""Stage 3: the segmenter trained on CAM pseudo-masks."""
