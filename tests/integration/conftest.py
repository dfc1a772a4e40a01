"""Integration fixtures."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def keep_torch_threads():
    """The trainer sets the process-wide CPU thread count (--threads 1); put it back for other tests."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)
