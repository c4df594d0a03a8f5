"""Evaluation: overlap and distance metrics, per-hospital tables, held-out protocols."""
