"""Scalar activations used inside the fused gate loops."""

import numpy as np

from ._jit import kernel


@kernel
def sigmoid(x):
    # exp(-x) overflows to inf for very negative x, giving exactly 0: no NaN, no warning.
    return 1.0 / (1.0 + np.exp(-x))


@kernel
def tanh(x):
    return np.tanh(x)
