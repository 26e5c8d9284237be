"""The weight-gradient products: fastrnn._kernels.gemm (BLAS GEMM on sub-matrices,
accumulating) and the parameter-gradient kernels built on it, against numpy."""

import numpy as np
import pytest

from fastrnn._kernels import engine
from fastrnn._kernels.gemm import accumulate_at_transposed


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("rows, gates, inner, row0, row1, col0, columns", [
    (10, 12, 5, 0, 10, 0, 12), (10, 12, 5, 3, 8, 4, 5), (7, 3, 2, 0, 7, 1, 2),
    (100, 384, 64, 20, 100, 128, 128), (6, 4, 3, 2, 2, 0, 4), (5, 9, 1, 0, 5, 8, 1),
])
def test_accumulate_at_transposed_matches_numpy(dtype, rows, gates, inner, row0, row1, col0,
                                                columns):
    rng = np.random.default_rng(rows + gates)
    left = rng.standard_normal((rows, gates)).astype(dtype)
    right = rng.standard_normal((rows, inner)).astype(dtype)
    out = rng.standard_normal((gates, inner)).astype(dtype)
    expected = out.copy()
    expected[col0:col0 + columns] += left[row0:row1, col0:col0 + columns].T @ right[row0:row1]
    accumulate_at_transposed(left, right, out, row0, row1, col0, columns)
    rtol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(out, expected, rtol=rtol, atol=rtol)


def test_accumulate_at_transposed_refuses_non_contiguous_arrays():
    """It indexes raw data pointers, which only C-contiguous arrays make right."""
    left = np.ones((6, 8))
    with pytest.raises(ValueError, match="C-contiguous"):
        accumulate_at_transposed(left[:, ::2], np.ones((6, 3)), np.ones((4, 3)), 0, 6, 0, 4)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("rows, gates, inner", [
    (200, 48, 8),     # rows >= threads * inner: split by rows, partial sums
    (12, 40, 64),     # few rows against the weight: split by gate columns
    (9, 37, 5),       # ragged
    (3, 7, 2),        # fewer rows than some thread counts
])
def test_parameter_gradients_accumulate_like_numpy(dtype, threads, rows, gates, inner):
    rng = np.random.default_rng(rows * gates)
    d_gates = rng.standard_normal((rows, gates)).astype(dtype)
    inputs = rng.standard_normal((rows, inner)).astype(dtype)
    d_weight = rng.standard_normal((gates, inner)).astype(dtype)
    d_bias = rng.standard_normal(gates).astype(dtype)
    expected_weight = d_weight + d_gates.T @ inputs
    expected_bias = d_bias + d_gates.sum(axis=0)
    serial_weight, serial_bias = d_weight.copy(), d_bias.copy()
    chunk = engine.grads_chunk_address(dtype)
    engine.param_grads_parallel(d_gates, inputs, d_weight, d_bias, threads, chunk)
    engine.param_grads_serial(d_gates, inputs, serial_weight, serial_bias, 1, chunk)
    rtol = 1e-5 if dtype == np.float32 else 1e-12
    for weight, bias in ((d_weight, d_bias), (serial_weight, serial_bias)):
        np.testing.assert_allclose(weight, expected_weight, rtol=rtol, atol=rtol)
        np.testing.assert_allclose(bias, expected_bias, rtol=rtol, atol=rtol)
