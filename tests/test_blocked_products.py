"""Per-step products split into column blocks for BLAS's small-matrix kernels
(fastrnn._cells._column_blocks, sequence.blocked_product): the block sizes obey
the size limit, the blocks hold the right columns, and layers computed through
blocks match the numpy reference on every path (serial and batch-split)."""

import contextlib

import numpy as np
import pytest
from reference import CELLS
from test_layers_reference import assert_matches_reference, layer_for, make_case, run

import fastrnn
from fastrnn import _blas, _cells, _threads


@pytest.mark.parametrize("rows, inner, columns", [
    (1, 64, 256), (16, 32, 128), (16, 128, 512), (32, 512, 128), (32, 256, 1024),
    (8, 1024, 4096), (32, 512, 2048), (3, 7, 400), (2, 1000, 97),
])
def test_block_width_fits_small_kernels_and_divides_columns(rows, inner, columns):
    width = _cells._block_width(rows, inner, columns)
    if width == 0:  # no admissible width: every divisor >= 16 is too wide
        assert all(columns % d or rows * inner * d > _blas.SMALL_PRODUCT
                   for d in range(_cells._MIN_BLOCK, columns + 1))
        return
    assert columns % width == 0
    assert rows * inner * width <= _blas.SMALL_PRODUCT
    assert width == columns or width >= _cells._MIN_BLOCK
    # the widest admissible divisor: one wider either does not divide or does not fit
    for wider in range(width + 1, columns + 1):
        assert columns % wider or rows * inner * wider > _blas.SMALL_PRODUCT


def test_block_width_examples():
    assert _cells._block_width(16, 32, 128) == 128          # small: one block
    assert _cells._block_width(16, 128, 512) == 256         # 16*128*256 = 524288
    assert _cells._block_width(32, 256, 1024) == 64         # 32*256*128 > 1e6
    assert _cells._block_width(32, 2048, 512) == 0          # would need d <= 15


@pytest.mark.parametrize("layout", ["C", "F"])
def test_column_blocks_hold_the_columns(layout):
    w = np.arange(6 * 64, dtype=np.float32).reshape(6, 64)
    w = np.asfortranarray(w) if layout == "F" else w
    blocks = _cells._column_blocks(w, rows=1, n_steps=16, blocked=True)
    assert blocks.shape == (1, 6, 64) and blocks.flags.c_contiguous
    np.testing.assert_array_equal(blocks[0], w)
    forced = _cells._column_blocks(w, rows=10**4, n_steps=16, blocked=True)
    assert forced.shape == (4, 6, 16) and forced.flags.c_contiguous
    for block in range(4):
        np.testing.assert_array_equal(forced[block], w[:, 16 * block:16 * (block + 1)])


def test_no_blocks_when_not_planned_or_sequence_short():
    w = np.ones((8, 32))
    for blocked, n_steps in ((False, 100), (True, _cells._MIN_STEPS_FOR_COPY - 1)):
        blocks = _cells._column_blocks(w, rows=4, n_steps=n_steps, blocked=blocked)
        assert blocks.shape == (0, 8, 0) and blocks.dtype == w.dtype


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("cell", CELLS)
def test_blocked_layers_match_reference(cell, threads, monkeypatch):
    """Forces four blocks per product (forward W_hh^T and BPTT W_hh), on the
    single-threaded kernels and on the batch split, whatever BLAS this is."""
    if threads > _threads._max_threads():
        pytest.skip("needs two cores")
    shapes = []

    def four_blocks(rows, inner, columns):
        return columns // 4

    real_column_blocks = _cells._column_blocks

    def recording_column_blocks(w, rows, n_steps, blocked):
        blocks = real_column_blocks(w, rows, n_steps, blocked)
        shapes.append(blocks.shape)
        return blocks

    def plan(work=None, step_work=None, batch=None):
        return contextlib.nullcontext(_threads.Plan(min(threads, batch), True))

    monkeypatch.setattr(_cells, "_block_width", four_blocks)
    monkeypatch.setattr(_cells, "_column_blocks", recording_column_blocks)
    monkeypatch.setattr(_threads, "kernel_threads", plan)
    sizes = (_cells._MIN_STEPS_FOR_COPY + 1, 3, 5, 8)
    problem, cotangents = make_case(cell, 2, True, seed=11, sizes=sizes)
    layer = layer_for(cell, problem)
    fast = run(layer, problem, cotangents, clip_hidden=2.0)
    assert_matches_reference(cell, problem, cotangents, layer, fast, clip_hidden=2.0)
    gates = {"rnn_tanh": 1, "rnn_relu": 1, "lstm": 4, "gru": 3}[cell] * sizes[3]
    assert (4, sizes[3], gates // 4) in shapes          # forward: W_hh^T in 4 blocks
    assert (4, gates, sizes[3] // 4) in shapes          # BPTT: W_hh in 4 blocks


def test_blocked_float32_matches_unblocked(monkeypatch):
    """float32, the benchmark's dtype: blocked and plain products agree to rounding."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((20, 6, 16)).astype(np.float32)

    def forward_backward():
        layer = fastrnn.LSTM(16, 32, dtype=np.float32, seed=2)
        out, _ = layer(x)
        dx, _ = layer.backward(np.ones_like(out))
        return out, dx

    def plan(work=None, step_work=None, batch=None):
        return contextlib.nullcontext(_threads.Plan(1, blocked))

    monkeypatch.setattr(_threads, "kernel_threads", plan)
    monkeypatch.setattr(_cells, "_block_width", lambda rows, inner, columns: columns // 2)
    blocked = True
    with_blocks = forward_backward()
    blocked = False
    without = forward_backward()
    for got, want in zip(with_blocks, without):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
