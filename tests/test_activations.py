"""The scalar pieces of the gate loops: float32 activations against float64 numpy,
the per-column gate activation, and clamping with NaN passing through."""

import numba
import numpy as np
import pytest

from fastrnn._kernels.activations import gate_activation, sigmoid, tanh
from fastrnn._kernels.sequence import clamp


@numba.njit
def _apply(kind, values):
    out = np.empty_like(values)
    for k in range(values.size):
        if kind == 0:
            out[k] = tanh(values[k])
        elif kind == 1:
            out[k] = sigmoid(values[k])
        elif kind == 2:
            out[k] = gate_activation(values[k], True)
        else:
            out[k] = gate_activation(values[k], False)
    return out


@numba.njit
def _clamp_all(values, bound):
    out = np.empty_like(values)
    for k in range(values.size):
        out[k] = clamp(values[k], bound)
    return out


def _grid(dtype):
    dense = np.linspace(-12.0, 12.0, 200_001)
    extremes = np.array([0.0, -0.0, 1e-30, -1e-30, 7.9, -7.9, 8.0, 50.0, -50.0, 1e30, -1e30])
    return np.concatenate([dense, extremes]).astype(dtype)


def _exact_sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


@pytest.mark.parametrize("dtype, tolerance", [(np.float32, 5e-7), (np.float64, 1e-15)])
def test_activations_match_float64(dtype, tolerance):
    x = _grid(dtype)
    exact = x.astype(np.float64)
    with np.errstate(over="ignore"):
        expected_sigmoid = _exact_sigmoid(exact)
    for kind, expected in ((0, np.tanh(exact)), (1, expected_sigmoid),
                           (2, np.tanh(exact)), (3, expected_sigmoid)):
        got = _apply(kind, x)
        assert got.dtype == dtype
        assert np.max(np.abs(got.astype(np.float64) - expected)) <= tolerance, kind


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_gate_activation_is_tanh_or_sigmoid_exactly(dtype):
    x = _grid(dtype)
    np.testing.assert_array_equal(_apply(2, x), _apply(0, x))
    np.testing.assert_array_equal(_apply(3, x), _apply(1, x))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_activations_keep_nan_and_saturate_at_inf(dtype):
    x = np.array([np.nan, np.inf, -np.inf], dtype=dtype)
    for kind, at_inf in ((0, (1.0, -1.0)), (1, (1.0, 0.0)), (2, (1.0, -1.0)), (3, (1.0, 0.0))):
        got = _apply(kind, x)
        assert np.isnan(got[0])
        # float32 saturates within its tolerance of the limit (tanh(7.9) rounds below 1)
        np.testing.assert_allclose(got[1:], at_inf, rtol=0, atol=5e-7)


def test_clamp_limits_both_sides_and_passes_nan():
    values = np.array([-3.0, -1.0, 0.5, 1.0, 3.0, np.nan, np.inf, -np.inf])
    got = _clamp_all(values, 1.0)
    np.testing.assert_array_equal(got[:5], [-1.0, -1.0, 0.5, 1.0, 1.0])
    assert np.isnan(got[5])
    assert (got[6], got[7]) == (1.0, -1.0)
    np.testing.assert_array_equal(_clamp_all(values[:5], np.inf), values[:5])
