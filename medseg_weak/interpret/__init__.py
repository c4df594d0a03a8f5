"""Interpretability report for any classifier: faithfulness, localisation and sanity checks of CAMs.

Above ``explain`` in the layering: it computes maps with :func:`medseg_weak.explain.compute_cams`
and scores them; it never imports segment, evaluate, pipeline or cli.
"""

from __future__ import annotations

from medseg_weak.interpret.baselines import BASELINES, no_better_than_random
from medseg_weak.interpret.faithfulness import (
    REPLACEMENTS,
    confidence_change,
    curve_area,
    perturbation_curves,
)
from medseg_weak.interpret.measure import DEFAULT_METHODS, interpret_classifier
from medseg_weak.interpret.outputs import write_interpret_outputs
from medseg_weak.interpret.results import METRICS, InterpretResult, MethodScores, headline, summary_table
from medseg_weak.interpret.road import road_scores
from medseg_weak.interpret.sanity import (
    SANITY_THRESHOLD,
    RandomisationResult,
    cam_explainer,
    cascading_randomisation,
    data_randomisation,
)

__all__ = [
    "BASELINES",
    "DEFAULT_METHODS",
    "METRICS",
    "REPLACEMENTS",
    "SANITY_THRESHOLD",
    "InterpretResult",
    "MethodScores",
    "RandomisationResult",
    "cam_explainer",
    "cascading_randomisation",
    "confidence_change",
    "curve_area",
    "data_randomisation",
    "headline",
    "interpret_classifier",
    "no_better_than_random",
    "perturbation_curves",
    "road_scores",
    "summary_table",
    "write_interpret_outputs",
]
