"""The kernels' matrix products, fastrnn._kernels.gemm.matmul (BLAS on 2-D arrays
and their slices, accumulating or not) and matmul_blocks (by a weight cut into
blocks), and the parameter-gradient kernels built on them, against numpy."""

import re

import numba
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fastrnn._kernels import engine
from fastrnn._kernels.gemm import matmul, matmul_blocks
from fastrnn._kernels.sequence import blocked_product, copy_rows, recurrent_product


@numba.njit
def _matmul(a, b, out, transpose_a, transpose_b, accumulate):
    matmul(a, b, out, transpose_a, transpose_b, accumulate)


@numba.njit
def _matmul_blocks(a, blocks, out):
    matmul_blocks(a, blocks, out)


def _operand(rng, shape, dtype, margin):
    """A random (rows, columns) matrix, as a column slice of a wider array when
    `margin` > 0: its rows are contiguous, its row stride longer than a row."""
    wide = rng.standard_normal((shape[0], shape[1] + 2 * margin)).astype(dtype)
    return wide[:, margin:margin + shape[1]]


@settings(max_examples=60)
@given(dtype=st.sampled_from([np.float32, np.float64]),
       rows=st.integers(0, 9), inner=st.integers(0, 7), columns=st.integers(0, 9),
       transpose_a=st.booleans(), transpose_b=st.booleans(), accumulate=st.booleans(),
       margins=st.tuples(st.integers(0, 2), st.integers(0, 2), st.integers(0, 2)),
       seed=st.integers(0, 2**16))
def test_matmul_matches_numpy(dtype, rows, inner, columns, transpose_a, transpose_b, accumulate,
                              margins, seed):
    """Every flag, one-row and one-column outputs (GEMV), an empty inner
    dimension, and operands that are column slices of wider arrays."""
    rng = np.random.default_rng(seed)
    a = _operand(rng, (inner, rows) if transpose_a else (rows, inner), dtype, margins[0])
    b = _operand(rng, (columns, inner) if transpose_b else (inner, columns), dtype, margins[1])
    out = _operand(rng, (rows, columns), dtype, margins[2])
    product = (a.T if transpose_a else a).astype(np.float64) @ (b.T if transpose_b else b)
    expected = out + product if accumulate else product
    kept_a, kept_b = a.copy(), b.copy()
    _matmul(a, b, out, transpose_a, transpose_b, accumulate)
    tolerance = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(out, expected, rtol=tolerance, atol=tolerance)
    np.testing.assert_array_equal(a, kept_a)
    np.testing.assert_array_equal(b, kept_b)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("flags", [(ta, tb, acc) for ta in (False, True) for tb in (False, True)
                                   for acc in (False, True)])
@pytest.mark.parametrize("rows, inner, columns", [(1, 5, 7), (6, 5, 1), (1, 4, 1)])
def test_matmul_gemv_paths_match_numpy(dtype, flags, rows, inner, columns):
    """One row or one column of output (the GEMV calls) under every flag."""
    transpose_a, transpose_b, accumulate = flags
    test_matmul_matches_numpy.hypothesis.inner_test(
        dtype, rows, inner, columns, transpose_a, transpose_b, accumulate, (0, 0, 0), rows + inner)


def test_matmul_leaves_the_output_outside_its_slice_alone():
    wide = np.full((4, 9), 7.0)
    _matmul(np.ones((4, 3)), np.ones((3, 5)), wide[:, 2:7], False, False, True)
    np.testing.assert_array_equal(wide[:, 2:7], 10.0)
    np.testing.assert_array_equal(wide[:, :2], 7.0)
    np.testing.assert_array_equal(wide[:, 7:], 7.0)


def test_matmul_refuses_rows_that_are_not_contiguous():
    """It hands BLAS row strides only: a column stride would be read wrong."""
    with pytest.raises(ValueError, match="rows must be contiguous"):
        _matmul(np.ones((6, 8))[:, ::2], np.ones((4, 3)), np.ones((6, 3)), False, False, False)


@pytest.mark.parametrize("a_shape, b_shape, out_shape", [
    ((3, 4), (5, 2), (3, 2)), ((3, 4), (4, 2), (3, 3)), ((3, 4), (4, 2), (2, 2))])
def test_matmul_refuses_shapes_that_do_not_match(a_shape, b_shape, out_shape):
    with pytest.raises(ValueError, match="shapes do not match"):
        _matmul(np.ones(a_shape), np.ones(b_shape), np.ones(out_shape), False, False, False)


@settings(max_examples=60)
@given(dtype=st.sampled_from([np.float32, np.float64]), rows=st.integers(0, 5),
       grid=st.tuples(st.integers(1, 3), st.integers(1, 3)),
       block=st.tuples(st.integers(1, 4), st.integers(1, 5)),
       margins=st.tuples(st.integers(0, 2), st.integers(0, 2), st.integers(0, 2)),
       seed=st.integers(0, 2**16))
def test_matmul_blocks_matches_numpy(dtype, rows, grid, block, margins, seed):
    """out = a @ w from w's blocks: several row chunks (accumulated) and column
    blocks, one-row blocks and outputs (GEMV), a and out column slices of wider
    arrays, and blocks whose rows are longer than a block's (a slice of a wider
    4-D array)."""
    (n_k, n_n), (k_width, width) = grid, block
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((n_k * k_width, n_n * width)).astype(dtype)
    wide_blocks = rng.standard_normal((n_k, n_n, k_width, width + margins[1])).astype(dtype)
    blocks = wide_blocks[..., :width]
    blocks[...] = w.reshape(n_k, k_width, n_n, width).transpose(0, 2, 1, 3)
    a = _operand(rng, (rows, n_k * k_width), dtype, margins[0])
    out = _operand(rng, (rows, n_n * width), dtype, margins[2])
    kept_blocks = wide_blocks.copy()
    _matmul_blocks(a, blocks, out)
    tolerance = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(out, a.astype(np.float64) @ w, rtol=tolerance, atol=tolerance)
    np.testing.assert_array_equal(wide_blocks, kept_blocks)


@pytest.mark.parametrize("a_shape, out_shape", [((3, 5), (3, 6)), ((3, 6), (3, 5)),
                                                ((3, 6), (2, 6))])
def test_matmul_blocks_refuses_shapes_that_do_not_match(a_shape, out_shape):
    with pytest.raises(ValueError, match="shapes do not match"):
        _matmul_blocks(np.ones(a_shape), np.ones((2, 3, 3, 2)), np.ones(out_shape))


@numba.njit
def _time_loop_products(h, w_hh, w_hh_t, w_blocks, out, scratch, kept, n_steps):
    for step in range(n_steps):
        recurrent_product(h, w_hh, w_hh_t, w_blocks, out, scratch)  # the forward's
        blocked_product(h, w_hh_t, w_blocks, out)  # as BPTT calls it
        copy_rows(h, kept, step * h.shape[0])


def test_the_per_step_products_change_no_reference_counts():
    """A time loop's per-step products (recurrent_product, blocked_product and
    the matmul and matmul_blocks they call) and its row copies run without reference counting:
    each count change is an atomic operation, and they took views of their
    arrays or counted their arguments at every step. In the loop's compiled
    module only the kernel's own code (its arguments, counted once a call)
    calls NRT_incref or NRT_decref; the helpers it calls do not."""
    rng = np.random.default_rng(0)
    h = rng.standard_normal((2, 8))
    w_hh = rng.standard_normal((32, 8))
    blocks = np.ascontiguousarray(w_hh.T.reshape(2, 4, 4, 8).transpose(0, 2, 1, 3))
    out, kept = np.empty((2, 32)), np.empty((6, 8))
    _time_loop_products(h, w_hh, np.empty((0, 32)), blocks, out,
                        (np.empty((0, 2)), np.empty((0, 2))), kept, 3)
    np.testing.assert_allclose(out, h @ w_hh.T, rtol=1e-12)
    np.testing.assert_array_equal(kept, np.vstack([h] * 3))
    ir = next(iter(_time_loop_products.inspect_llvm().values()))
    functions = {re.match(r'[^@]*@"?([^"(\s]+)', body).group(1): body
                 for body in re.split(r"\ndefine ", ir)[1:]}
    helpers = {name: body for name, body in functions.items()
               if "_time_loop_products" not in name}
    # recurrent_product stays a function of its own (LLVM does not inline it
    # whole): else this check would see none of its code.
    assert any("recurrent_product" in name for name in helpers), list(functions)
    counting = [name for name, body in helpers.items()
                if re.search(r"call .*@NRT_(?:incref|decref)", body)]
    assert counting == []


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("rows, gates, inner", [
    (200, 48, 8),     # rows >= threads * inner: split by rows, partial sums
    (12, 40, 64),     # few rows against the weight: split by gate columns
    (9, 37, 5),       # ragged
    (3, 7, 2),        # fewer rows than some thread counts
    (200, 48, 3),     # narrow inputs (loops, not BLAS): split by rows
    (5, 40, 4),       # narrow inputs split by gate columns
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
