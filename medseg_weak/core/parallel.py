"""The process pool the data generators share: a function over work items, results in item order.

Results come back in the order of the items whatever the number of processes, so that anything built
from them (records, manifests) never depends on ``workers``.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import Any, TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")


def ordered_map(
    fn: Callable[[Item], Result],
    items: Sequence[Item],
    workers: int = 1,
    initializer: Callable[..., None] | None = None,
    initargs: tuple[Any, ...] = (),
) -> Iterator[Result]:
    """Yield ``fn(item)`` for every item, in order; ``workers`` > 1 runs them in a process pool.

    ``initializer(*initargs)`` runs once in each worker process (not when the items are mapped in
    this process): e.g. :func:`medseg_weak.logs.forwarded_logs` sends the workers' log records here.

    ``fn`` and the items must be picklable (a module-level function, frozen dataclasses). The pool
    uses spawn, not fork: the caller may already hold threads (torch, BLAS, a progress bar) that a
    forked child would inherit in an undefined state. As with any spawn pool, a calling script needs
    an ``if __name__ == "__main__":`` guard.
    """
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    if workers == 1 or len(items) <= 1:
        yield from map(fn, items)
        return
    context = multiprocessing.get_context("spawn")
    # Chunks amortise the pickling of small items, but stay small enough that every process gets work.
    chunksize = max(1, min(8, len(items) // (4 * workers)))
    with ProcessPoolExecutor(
        max_workers=min(workers, len(items)), mp_context=context, initializer=initializer, initargs=initargs
    ) as pool:
        yield from pool.map(fn, items, chunksize=chunksize)
