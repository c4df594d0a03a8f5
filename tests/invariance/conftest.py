"""Fixtures of the invariance tests: one intra-op thread, and tiny models with known invariances."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(scope="package", autouse=True)
def one_thread():
    # Tiny models gain nothing from intra-op threads, and on a shared CPU their spin-waits slow the
    # tests down many times; restored afterwards so other test packages keep their setting.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
