"""pytest configuration shared by all fastrnn tests.

Hypothesis profiles:
  fastrnn (default)  25 examples, no deadline: the first call of a Numba kernel compiles
                     it, which would trip hypothesis' per-example deadline at random.
  fuzz               many more examples, for a long local/nightly run:
                     HYPOTHESIS_PROFILE=fuzz python -m pytest tests
"""

from __future__ import annotations

import os
import sys

import numpy as np
import pytest
from hypothesis import settings

# The shared helpers (reference.py, helpers.py) are imported as top-level modules.
# pytest's default "prepend" import mode already puts this folder on sys.path, but
# "importlib" mode does not, so add it here to work under either.
_TESTS_DIR = os.path.dirname(os.path.abspath(__file__))
if _TESTS_DIR not in sys.path:
    sys.path.insert(0, _TESTS_DIR)

# Tests force plans that split the batch across up to 3 threads on any machine
# (fastrnn._threads.forced_plan), which numba allows only up to NUMBA_NUM_THREADS;
# fastrnn's own default stays the cores this process may use.
_CORES = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
os.environ.setdefault("NUMBA_NUM_THREADS", str(max(3, _CORES)))
os.environ.setdefault("FASTRNN_NUM_THREADS",
                      str(min(_CORES, int(os.environ["NUMBA_NUM_THREADS"]))))

from helpers import random_params

settings.register_profile("fastrnn", deadline=None, max_examples=25)
settings.register_profile("fuzz", deadline=None, max_examples=1000)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "fastrnn"))


@pytest.fixture
def rng():
    """A fresh, fixed-seed numpy Generator per test, so every test is reproducible alone."""
    return np.random.default_rng(12345)


@pytest.fixture
def make_params(rng):
    """Factory: make_params(cell, input_size, hidden_size, num_layers=1,
    bidirectional=False, bias=True, dtype=np.float64, scale=None) -> torch-named dict,
    drawn from this test's seeded rng."""

    def factory(cell, input_size, hidden_size, num_layers=1, bidirectional=False, bias=True,
                dtype=np.float64, scale=None):
        return random_params(cell, input_size, hidden_size, num_layers, bidirectional, bias,
                             rng=rng, dtype=dtype, scale=scale)

    return factory
