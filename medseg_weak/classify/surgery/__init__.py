"""Gradient surgery for multi-hospital training: rules that combine per-hospital gradients.

A rule is one file with a ``GradientRule`` subclass registered in ``RULES``; importing that file here
is what registers it.
"""

from medseg_weak.classify.surgery import agr_rand, agr_sum, and_mask, erm, group_dro, pcgrad  # noqa: F401
from medseg_weak.classify.surgery.api import combine, combine_parameters, make_rule
from medseg_weak.classify.surgery.base import RULES, GradientRule
from medseg_weak.classify.surgery.coral import coral_penalty
from medseg_weak.classify.surgery.diagnostics import conflict_diagnostics
from medseg_weak.classify.surgery.gradients import assign_gradients, per_hospital_gradients

__all__ = [
    "RULES",
    "GradientRule",
    "assign_gradients",
    "combine",
    "combine_parameters",
    "conflict_diagnostics",
    "coral_penalty",
    "make_rule",
    "per_hospital_gradients",
]
