"""ordered_map: results in item order whatever the number of processes."""

from __future__ import annotations

import os

import pytest

from medseg_weak.core.parallel import ordered_map


def _square_and_pid(x: int) -> tuple[int, int]:
    return x * x, os.getpid()


def test_sequential_runs_in_this_process_in_order() -> None:
    results = list(ordered_map(_square_and_pid, [3, 1, 2], workers=1))
    assert [r for r, _ in results] == [9, 1, 4]
    assert {pid for _, pid in results} == {os.getpid()}


def test_a_pool_gives_the_same_results_in_the_same_order() -> None:
    items = list(range(11))
    results = list(ordered_map(_square_and_pid, items, workers=2))
    assert [r for r, _ in results] == [x * x for x in items]
    assert os.getpid() not in {pid for _, pid in results}  # it really ran in the pool


def test_no_items_and_bad_worker_counts() -> None:
    assert list(ordered_map(_square_and_pid, [], workers=3)) == []
    with pytest.raises(ValueError, match="workers"):
        list(ordered_map(_square_and_pid, [1], workers=0))
