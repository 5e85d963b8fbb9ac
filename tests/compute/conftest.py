"""Fixtures shared by the compute tests."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture
def one_torch_thread():
    """torch on one thread for the test: on the shared 2-core machine torch's intra-op
    thread pool costs milliseconds per small op when the other core is busy, and the
    disk-fit batches of these tests are too small to gain from it."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
