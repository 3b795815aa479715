"""Shared fixtures: seeded RNGs, the real Omniglot root (skipped with a message when absent)."""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib
import numpy as np
import pytest
import torch

matplotlib.use("Agg")

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"


@pytest.fixture(autouse=True)
def _deterministic_single_threaded_torch():
    """Seed torch and run each test with one intra-op thread.

    The tests use small tensors: on a 2-core machine shared with other work, OpenMP threads spinning
    against other processes made them 10-100x slower. Tests that measure threads set their own.
    """
    torch.manual_seed(0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


def real_data_root() -> Path | None:
    """REPANA_DATA_ROOT, else ../shared/data beside the checkout; None when neither holds Omniglot."""
    env = os.environ.get("REPANA_DATA_ROOT")
    for candidate in ([Path(env)] if env else []) + [SHARED_DATA]:
        if (candidate / "omniglot").is_dir():
            return candidate
    return None


@pytest.fixture
def omniglot_root() -> Path:
    """Folder holding the real Omniglot subset archives (``<root>/omniglot/*.zip``)."""
    root = real_data_root()
    if root is None:
        pytest.skip("real Omniglot data not found: set REPANA_DATA_ROOT to a folder with omniglot/ "
                    "(e.g. ../shared/data) to run this test")
    return root / "omniglot"
