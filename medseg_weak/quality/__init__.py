"""Fundus image quality: a UNet whose encoder grades Good / Usable / Reject and whose decoder says
where the photograph is degraded, its data, EyeQ-style metrics, training, and ``predict`` for any
classifier of the project.

Submodules are imported by name (``medseg_weak.quality.model``, ...): this package file imports
nothing. Its config section is ``medseg_weak.config.QualityConfig`` (``quality`` in a run's config).
"""
