"""spread: a small sample covers every hospital, then every class, deterministically."""

from __future__ import annotations

from collections import Counter

from medseg_weak.data.manifest import Record
from medseg_weak.data.sample import spread


def _records() -> list[Record]:
    return [
        Record(f"{d}{lab}{i}", "x.png", lab, d, f"p{d}{lab}{i}")
        for d in "XYZ"
        for lab in "AB"
        for i in range(3)
    ]


def test_spread_takes_hospitals_in_turn_then_labels():
    chosen = spread(_records(), 6, seed=1)
    assert Counter((r.domain, r.label) for r in chosen) == {(d, lab): 1 for d in "XYZ" for lab in "AB"}
    assert Counter(r.domain for r in spread(_records(), 4)) == {"X": 2, "Y": 1, "Z": 1}
    assert spread(_records(), 7, seed=3) == spread(_records(), 7, seed=3)
    assert spread(_records(), 7, seed=3) != spread(_records(), 7, seed=4)
    assert spread(_records(), 0) == _records() and len(spread(_records(), 100)) == 18
