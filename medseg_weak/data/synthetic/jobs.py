"""What the synthetic generators share around their per-patient work: argument checks and the run loop.

Each generator turns one patient task into that patient's images; this module checks the arguments
common to every generator, runs the tasks (in the shared process pool of
:mod:`medseg_weak.core.parallel`) and reports progress once per image, in task order.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import TypeVar

from medseg_weak.core.parallel import ordered_map
from medseg_weak.errors import ConfigError

Task = TypeVar("Task")
Item = TypeVar("Item")

#: One argument check: (name, value, whether it holds, what the value must be).
Check = tuple[str, object, bool, str]


def common_checks(n_per_hospital: int, hospitals: int, workers: int, min_images: int = 1) -> list[Check]:
    """The checks every generator makes on its counts."""
    return [
        ("n_per_hospital", n_per_hospital, n_per_hospital >= min_images, f">= {min_images}"),
        ("hospitals", hospitals, hospitals >= 1, ">= 1"),
        ("workers", workers, workers >= 1, ">= 1"),
    ]


def raise_on_failed(generator: str, checks: Iterable[Check]) -> None:
    """One :class:`ConfigError` listing every failed check, before anything is written."""
    problems = [f"{name} must be {must}, got {value}" for name, value, holds, must in checks if not holds]
    if problems:
        raise ConfigError(f"synthetic {generator}: " + "; ".join(problems))


def run_patients(
    make_patient: Callable[[Task], list[Item]],
    tasks: Sequence[Task],
    workers: int,
    progress: Callable[[int], None] | None,
) -> list[Item]:
    """Every patient's items in task order, whatever ``workers``; ``progress(1)`` once per item."""
    items: list[Item] = []
    for patient in ordered_map(make_patient, tasks, workers):
        for item in patient:
            items.append(item)
            if progress is not None:
                progress(1)
    return items
