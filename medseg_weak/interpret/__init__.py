"""Interpretability report for any classifier: faithfulness, localisation and sanity checks of CAMs.

Above ``explain`` in the layering: it computes maps with :func:`medseg_weak.explain.compute_cams`
and scores them; it never imports segment, evaluate, pipeline or cli.
"""

from __future__ import annotations

from medseg_weak.lazy import lazy_exports

_EXPORTS = {
    "BASELINES": "baselines",
    "no_better_than_random": "baselines",
    "REPLACEMENTS": "faithfulness",
    "confidence_change": "faithfulness",
    "curve_area": "faithfulness",
    "perturbation_curves": "faithfulness",
    "DEFAULT_METHODS": "measure",
    "interpret_classifier": "measure",
    "write_interpret_outputs": "outputs",
    "METRICS": "results",
    "InterpretResult": "results",
    "MethodScores": "results",
    "headline": "results",
    "summary_table": "results",
    "road_scores": "road",
    "SANITY_THRESHOLD": "sanity",
    "RandomisationResult": "sanity",
    "cam_explainer": "sanity",
    "cascading_randomisation": "sanity",
    "data_randomisation": "sanity",
}
__getattr__ = lazy_exports(__name__, _EXPORTS)
__all__ = sorted(_EXPORTS)
