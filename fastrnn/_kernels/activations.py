"""Scalar activations used inside the fused gate loops.

float64 uses the exact libm functions (parity with torch to 1e-10). float32 uses
a branch-free rational approximation of tanh that LLVM can vectorise: without
SVML, libm's tanh is a scalar call of about 19 ns per element and would dominate
the gate math. Its error is a few float32 ulps (tested against float64).
sigmoid(x) = (1 + tanh(x / 2)) / 2 reuses it, which lets `gate_activation` apply
sigmoid or tanh by column in one loop with no branch.
"""

import numpy as np
from numba import types
from numba.extending import overload

from ._jit import helper

# Odd/even minimax coefficients of tanh(x) ~ x * P(x^2) / Q(x^2) on |x| <= 7.9053
# (the float32 rational approximation published with the Eigen library).
_CLAMP = np.float32(7.90531110763549805)
_A1 = np.float32(4.89352455891786e-03)
_A3 = np.float32(6.37261928875436e-04)
_A5 = np.float32(1.48572235717979e-05)
_A7 = np.float32(5.12229709037114e-08)
_A9 = np.float32(-8.60467152213735e-11)
_A11 = np.float32(2.00018790482477e-13)
_A13 = np.float32(-2.76076847742355e-16)
_B0 = np.float32(4.89352518554385e-03)
_B2 = np.float32(2.26843463243900e-03)
_B4 = np.float32(1.18534705686654e-04)
_B6 = np.float32(1.19825839466702e-06)


@helper
def _tanh_float32(x):
    # min/max written as selects keep NaN: a NaN compares false and passes through.
    x = _CLAMP if x > _CLAMP else x
    x = -_CLAMP if x < -_CLAMP else x
    x2 = x * x
    p = _A13
    p = p * x2 + _A11
    p = p * x2 + _A9
    p = p * x2 + _A7
    p = p * x2 + _A5
    p = p * x2 + _A3
    p = p * x2 + _A1
    q = _B6
    q = q * x2 + _B4
    q = q * x2 + _B2
    q = q * x2 + _B0
    return x * p / q


@helper
def _sigmoid_float32(x):
    return np.float32(0.5) + np.float32(0.5) * _tanh_float32(np.float32(0.5) * x)


@helper
def _sigmoid_exact(x):
    # exp(-x) overflows to inf for very negative x, giving exactly 0: no NaN.
    return 1.0 / (1.0 + np.exp(-x))


def tanh(x):
    """tanh: exact for float64, vectorisable approximation for float32."""
    return np.tanh(x)


def sigmoid(x):
    """Logistic sigmoid: exact for float64, vectorisable approximation for float32."""
    return _sigmoid_exact(x)


@overload(tanh)
def _tanh_overload(x):
    if x == types.float32:
        return lambda x: _tanh_float32(x)
    return lambda x: np.tanh(x)


@overload(sigmoid)
def _sigmoid_overload(x):
    if x == types.float32:
        return lambda x: _sigmoid_float32(x)
    return lambda x: _sigmoid_exact(x)


def gate_activation(x, is_tanh):
    """tanh(x) where is_tanh, else sigmoid(x).

    For float32 both are offset + scale * tanh(scale * x) (sigmoid: 0.5, 0.5; tanh:
    0, 1), a select rather than a branch, so one loop over all of a row's gates
    vectorises. float64 keeps the exact functions.
    """
    return np.tanh(x) if is_tanh else _sigmoid_exact(x)


@overload(gate_activation)
def _gate_activation_overload(x, is_tanh):
    if x == types.float32:
        def float32_gate(x, is_tanh):
            scale = np.float32(1.0) if is_tanh else np.float32(0.5)
            offset = np.float32(0.0) if is_tanh else np.float32(0.5)
            return offset + scale * _tanh_float32(scale * x)
        return float32_gate
    return lambda x, is_tanh: np.tanh(x) if is_tanh else _sigmoid_exact(x)
