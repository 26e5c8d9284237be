"""Per-step products split into column blocks for BLAS's small-matrix kernels
(fastrnn._cells._column_blocks, sequence.blocked_product): the block sizes obey
the size limit, the blocks hold the right columns, and layers computed through
blocks match the numpy reference on every path (serial and batch-split)."""

import contextlib

import numpy as np
import pytest
from reference import CELLS, gate_count
from test_layers_reference import assert_matches_reference, layer_for, make_case, run

import fastrnn
from fastrnn import _blas, _cells, _threads
from fastrnn._kernels import sequence


@pytest.mark.parametrize("rows, inner, columns", [
    (1, 64, 256), (16, 32, 128), (16, 128, 512), (32, 512, 128), (32, 256, 1024),
    (8, 1024, 4096), (32, 512, 2048), (32, 2048, 512), (8, 4096, 1024), (3, 7, 400),
    (2, 1000, 97), (64, 4096, 4096),
])
def test_block_shape_fits_small_kernels_and_divides_the_weight(rows, inner, columns):
    shape = _cells._block_shape(rows, inner, columns)
    small = _blas.SMALL_PRODUCT
    if shape is None:  # no admissible shape: even chunks of _MIN_BLOCK rows leave d too small
        assert rows * _cells._MIN_BLOCK * _cells._MIN_BLOCK > small
        return
    k_width, width = shape
    assert inner % k_width == 0 and columns % width == 0
    assert rows * k_width * width <= small
    assert width == columns or width >= _cells._MIN_BLOCK
    # the fewest row chunks: the whole of K (or a larger chunk) admits no width
    for wider_k in range(k_width + 1, inner + 1):
        if inner % wider_k == 0:
            assert all(columns % d or rows * wider_k * d > small
                       for d in range(_cells._MIN_BLOCK, columns + 1))
    # the widest column block for that chunk
    for wider in range(width + 1, columns + 1):
        assert columns % wider or rows * k_width * wider > small


def test_block_shape_examples():
    assert _cells._block_shape(16, 32, 128) == (32, 128)       # small: one block
    assert _cells._block_shape(16, 128, 512) == (128, 256)     # 16*128*256 = 524288
    assert _cells._block_shape(32, 256, 1024) == (256, 64)     # 32*256*128 > 1e6
    assert _cells._block_shape(32, 2048, 512) == (512, 32)     # K cut in 4 chunks
    assert _cells._block_shape(8, 4096, 1024) == (2048, 32)


@pytest.mark.parametrize("layout", ["C", "F"])
def test_weight_blocks_hold_the_weight(layout):
    w = np.arange(64 * 128, dtype=np.float32).reshape(64, 128)
    w = np.asfortranarray(w) if layout == "F" else w
    whole = _cells._weight_blocks(w, rows=1, n_steps=16, blocked=True)
    assert whole.shape == (1, 1, 64, 128) and whole.flags.c_contiguous
    np.testing.assert_array_equal(whole[0, 0], w)
    cut = _cells._weight_blocks(w, rows=600, n_steps=16, blocked=True)
    k_chunks, n_blocks, k_width, width = cut.shape
    assert (k_chunks, n_blocks) == (2, 4) and cut.flags.c_contiguous
    for k in range(k_chunks):
        for block in range(n_blocks):
            np.testing.assert_array_equal(
                cut[k, block], w[k * k_width:(k + 1) * k_width, block * width:(block + 1) * width])


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("transposed", [False, True])
@pytest.mark.parametrize("inner, columns, k_width, width", [
    (64, 128, 32, 32), (64, 128, 64, 128), (96, 48, 48, 16), (40, 56, 20, 28),
    (37, 50, 37, 25), (256, 1024, 128, 64),
])
def test_fill_weight_blocks_matches_numpy(inner, columns, k_width, width, transposed,
                                          threads):
    """Whole 16 x 16 tiles, ragged edges and row chunks split across threads."""
    w = np.random.default_rng(0).standard_normal((inner, columns)).astype(np.float32)
    source = np.ascontiguousarray(w.T) if transposed else w
    blocks = np.full((inner // k_width, columns // width, k_width, width), np.nan,
                     dtype=np.float32)
    if threads == 1:
        sequence.fill_weight_blocks(source, transposed, blocks, 0, source.shape[0])
    else:
        sequence.fill_weight_blocks_parallel(source, transposed, blocks, threads)
    expected = w.reshape(inner // k_width, k_width, columns // width, width)
    np.testing.assert_array_equal(blocks, expected.transpose(0, 2, 1, 3))


def test_no_blocks_when_not_planned_or_sequence_short():
    w = np.ones((8, 32))
    for blocked, n_steps in ((False, 100), (True, _cells._MIN_STEPS_FOR_COPY - 1)):
        blocks = _cells._weight_blocks(w, rows=4, n_steps=n_steps, blocked=blocked)
        assert blocks.shape == (0, 0, 8, 0) and blocks.dtype == w.dtype


@pytest.mark.parametrize("k_chunks", [1, 2])
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("cell", CELLS)
def test_blocked_layers_match_reference(cell, threads, k_chunks, monkeypatch):
    """Forces two row chunks and four column blocks per product (forward W_hh^T
    and BPTT W_hh), or four column blocks only, on the single-threaded kernels
    and on the batch split, whatever BLAS this is."""
    if threads > _threads.max_threads():
        pytest.skip("needs two cores")
    shapes = []

    def forced_shape(rows, inner, columns):
        return (inner // k_chunks, columns // 4)

    real_weight_blocks = _cells._weight_blocks

    def recording_weight_blocks(w, rows, n_steps, blocked, threads=1):
        blocks = real_weight_blocks(w, rows, n_steps, blocked, threads)
        shapes.append(blocks.shape)
        return blocks

    def plan(work=None, step_work=None, batch=None, forward=False):
        return contextlib.nullcontext(_threads.Plan(min(threads, batch), True))

    monkeypatch.setattr(_cells, "_block_shape", forced_shape)
    monkeypatch.setattr(_cells, "_weight_blocks", recording_weight_blocks)
    monkeypatch.setattr(_threads, "kernel_threads", plan)
    sizes = (_cells._MIN_STEPS_FOR_COPY + 1, 3, 5, 8)
    problem, cotangents = make_case(cell, 2, True, seed=11, sizes=sizes)
    layer = layer_for(cell, problem)
    fast = run(layer, problem, cotangents, clip_hidden=2.0)
    assert_matches_reference(cell, problem, cotangents, layer, fast, clip_hidden=2.0)
    gates = gate_count(cell) * sizes[3]
    hidden = sizes[3]
    assert (k_chunks, 4, hidden // k_chunks, gates // 4) in shapes  # forward: W_hh^T
    assert (k_chunks, 4, gates // k_chunks, hidden // 4) in shapes  # BPTT: W_hh


def test_blocked_float32_matches_unblocked(monkeypatch):
    """float32, the benchmark's dtype: blocked and plain products agree to rounding."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((20, 6, 16)).astype(np.float32)

    def forward_backward():
        layer = fastrnn.LSTM(16, 32, dtype=np.float32, seed=2)
        out, _ = layer(x)
        dx, _ = layer.backward(np.ones_like(out))
        return out, dx

    def plan(work=None, step_work=None, batch=None, forward=False):
        return contextlib.nullcontext(_threads.Plan(1, blocked))

    monkeypatch.setattr(_threads, "kernel_threads", plan)
    monkeypatch.setattr(_cells, "_block_shape",
                        lambda rows, inner, columns: (inner // 2, columns // 2))
    blocked = True
    with_blocks = forward_backward()
    blocked = False
    without = forward_backward()
    for got, want in zip(with_blocks, without):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
