"""Range checks for the config sections' ``__post_init__``: each failure names its dotted key."""

from __future__ import annotations

import math
from typing import ClassVar

from medseg_weak.errors import ConfigError


def fail(key: str, must: str, value: object) -> None:
    raise ConfigError(f"'{key}' must be {must}; got {value!r}")


def is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


class Checked:
    """Helpers for ``__post_init__`` range checks that name the dotted key."""

    KEY: ClassVar[str] = ""

    def _check(self, name: str, ok: bool, must: str) -> None:
        if not ok:
            fail(f"{self.KEY}.{name}", must, getattr(self, name))

    def _range(self, name: str, low: float, high: float, *, low_open: bool = False) -> None:
        v = getattr(self, name)
        ok = is_number(v) and (low < v if low_open else low <= v) and v <= high
        self._check(name, ok, f"in {'(' if low_open else '['}{low:g}, {high:g}]")

    def _at_least(self, name: str, low: float) -> None:
        v = getattr(self, name)
        self._check(name, is_number(v) and v >= low, f">= {low:g}")

    def _positive(self, name: str) -> None:
        v = getattr(self, name)
        self._check(name, is_number(v) and v > 0, "> 0")
