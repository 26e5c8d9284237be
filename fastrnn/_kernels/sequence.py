"""Pieces shared by every cell's forward and BPTT kernels.

Parallel pieces split rows across threads, each thread calling (single-threaded)
BLAS on its own slice and writing its own slab of output: no races, no atomics.
"""

import numpy as np
from numba import prange

from ._jit import kernel, parallel_kernel
from .gemm import accumulate_at_transposed


@kernel
def time_index(step, n_steps, reverse):
    """Time index of processing step `step`: the reverse direction walks T-1..0."""
    return n_steps - 1 - step if reverse else step


@kernel
def clamp(value, bound):
    """value limited to [-bound, bound]; NaN passes through (it compares false)."""
    value = bound if value > bound else value
    return -bound if value < -bound else value


@kernel
def transpose_into(src, dst):
    """dst = src.T for a small matrix, in 16 x 16 tiles."""
    rows, cols = src.shape
    for row0 in range(0, rows, 16):
        row1 = min(row0 + 16, rows)
        for col0 in range(0, cols, 16):
            col1 = min(col0 + 16, cols)
            for row in range(row0, row1):
                for col in range(col0, col1):
                    dst[col, row] = src[row, col]


@kernel
def copy_rows(src, dst, start):
    """dst[start:start + len(src)] = src, element by element: numba's slice
    assignment checks shapes with a formatted error message whose compilation
    took seconds of every cold kernel compile."""
    for row in range(src.shape[0]):
        for col in range(src.shape[1]):
            dst[start + row, col] = src[row, col]


@kernel
def product_scratch(h, width, w_blocks):
    """Scratch for recurrent_product: (H, B) and (G, B) for the weight-major
    product, which is used only without blocks and for a batch small against a
    large hidden size (there h @ W_hh^T makes BLAS repack the whole weight every
    step; (W_hh h^T)^T does not, and ran 1.7x faster with its transposes included
    for (16, 1024) x (1024, 4096)); and block_scratch's buffers."""
    rows, hidden = h.shape
    blocks = block_scratch(rows, w_blocks)
    if w_blocks.shape[0] == 0 and rows * 16 <= hidden and hidden >= 512:
        return (np.empty((hidden, rows), dtype=h.dtype), np.empty((width, rows), dtype=h.dtype),
                blocks)
    return np.empty((0, rows), dtype=h.dtype), np.empty((0, rows), dtype=h.dtype), blocks


@kernel
def recurrent_product(h, w_hh_t, w_blocks, out, scratch):
    """out = h @ w_hh_t: blocked, weight-major or plain (see product_scratch)."""
    h_t, out_t, blocks = scratch
    if out_t.shape[0] == 0:
        blocked_product(h, w_hh_t, w_blocks, out, blocks)
        return
    transpose_into(h, h_t)
    np.dot(w_hh_t.T, h_t, out_t)
    transpose_into(out_t, out)


@kernel
def block_scratch(rows, w_blocks):
    """Scratch for blocked_product: a contiguous copy of one K-chunk of the left
    operand (rows, k) and the blocks' products (n, rows, d); each is empty where
    the blocks do not need it."""
    n_k, n_n, k_width, width = w_blocks.shape
    chunk = np.empty((rows, k_width if n_k > 1 else 0), dtype=w_blocks.dtype)
    if n_k > 1 or n_n > 1:
        return chunk, np.empty((n_n, rows, width), dtype=w_blocks.dtype)
    return chunk, np.empty((0, rows, 0), dtype=w_blocks.dtype)


@kernel
def fill_weight_blocks(w, transposed, blocks, first, last):
    """Writes what source rows [first, last) of w hold into blocks (n_k, n_n, k, d)
    of the product weight: w (K, N) itself, or w.T if `transposed` (w stored
    (N, K), as W_hh is for the forward h @ W_hh^T).

    The source is read row by row, so that memory is walked in order; the
    transposed copy goes through 16 x 16 tiles. Walking block by block instead
    (numpy's strided copy) took 3 ms for a 4096 x 1024 weight and 12 ms for its
    transpose, a quarter of the wide LSTM's forward."""
    n_k, n_n, k_width, width = blocks.shape
    if not transposed:
        for row in range(first, last):
            k_block, i = row // k_width, row % k_width
            for n_block in range(n_n):
                base = n_block * width
                for j in range(width):
                    blocks[k_block, n_block, i, j] = w[row, base + j]
        return
    tile = np.empty((16, 16), dtype=blocks.dtype)
    for row0 in range(first, last, 16):
        rows = min(16, last - row0)
        for k_block in range(n_k):
            for i0 in range(0, k_width, 16):
                cols = min(16, k_width - i0)
                col0 = k_block * k_width + i0
                j0 = row0 % width
                if rows == 16 and cols == 16 and j0 + 16 <= width:
                    # Whole tile, its rows side by side in one block: constant
                    # trip counts, which LLVM unrolls and vectorises (2.6x faster).
                    block = blocks[k_block, row0 // width]
                    for r in range(16):
                        for i in range(16):
                            tile[i, r] = w[row0 + r, col0 + i]
                    for i in range(16):
                        for r in range(16):
                            block[i0 + i, j0 + r] = tile[i, r]
                    continue
                for r in range(rows):
                    n_block, j = (row0 + r) // width, (row0 + r) % width
                    for i in range(cols):
                        blocks[k_block, n_block, i0 + i, j] = w[row0 + r, col0 + i]


@parallel_kernel
def fill_weight_blocks_parallel(w, transposed, blocks, n_threads):
    """fill_weight_blocks for all of w, its rows split across threads."""
    n_rows = w.shape[0]
    n_chunks = max(1, min(n_threads, n_rows // 16))
    for chunk in prange(n_chunks):
        first, last = chunk_bounds(chunk, n_chunks, n_rows // 16)
        fill_weight_blocks(w, transposed, blocks, 16 * first,
                           n_rows if chunk == n_chunks - 1 else 16 * last)


@kernel
def blocked_product(a, w, w_blocks, out, scratch):
    """out = a @ w (K, N), through w_blocks (n_k, n_n, k, d) unless that is empty:
    w cut into n_k row chunks of k and n_n column blocks of d, each contiguous.

    Each block's product is small enough (rows * k * d <= 1e6) for OpenBLAS's
    small-matrix kernels, which skip packing the weight; a packed GEMM repacks
    the whole weight on every step (per-step products 1.5-3x faster blocked;
    cutting K as well, for BPTT's dh = dG W_hh at large H, 950 -> 615 us).
    """
    n_k, n_n, k_width, width = w_blocks.shape
    if n_k == 0:
        np.dot(a, w, out)
        return
    if n_k == 1 and n_n == 1:
        np.dot(a, w_blocks[0, 0], out)
        return
    chunk, block_out = scratch
    if n_k == 1:
        _block_products(a, w_blocks[0], out, block_out, False)
        return
    for k_block in range(n_k):
        base = k_block * k_width
        for row in range(a.shape[0]):
            for j in range(k_width):
                chunk[row, j] = a[row, base + j]
        _block_products(chunk, w_blocks[k_block], out, block_out, k_block > 0)


@kernel
def _block_products(left, column_blocks, out, block_out, accumulate):
    """out (+)= left @ the column blocks (n, k, d) laid side by side."""
    rows = left.shape[0]
    width = column_blocks.shape[2]
    for block in range(column_blocks.shape[0]):
        np.dot(left, column_blocks[block], block_out[block])
        base = block * width
        if accumulate:
            for row in range(rows):
                for j in range(width):
                    out[row, base + j] += block_out[block, row, j]
        else:
            for row in range(rows):
                for j in range(width):
                    out[row, base + j] = block_out[block, row, j]


@kernel
def chunk_bounds(chunk, n_chunks, rows):
    """Rows [start, stop) of slice `chunk`: near-equal slices, one per thread."""
    return chunk * rows // n_chunks, (chunk + 1) * rows // n_chunks


@kernel
def batch_chunks(n_threads, batch):
    """How many batch slices the recurrence runs on (each needs at least one row)."""
    return max(1, min(n_threads, batch))


@parallel_kernel
def rows_dot(a, b, out, n_threads):
    """out = a @ b with the rows of a split across threads."""
    n_chunks = max(1, min(n_threads, a.shape[0]))
    for chunk in prange(n_chunks):
        start, stop = chunk_bounds(chunk, n_chunks, a.shape[0])
        np.dot(a[start:stop], b, out[start:stop])


@kernel
def add_column_sums(matrix, row0, row1, col0, col1, out):
    """out[col0:col1] += column sums of matrix[row0:row1, col0:col1]."""
    for row in range(row0, row1):
        for col in range(col0, col1):
            out[col] += matrix[row, col]


@kernel
def accumulate_param_grads(d_gates, inputs, d_weight, d_bias):
    """Single-threaded accumulate_param_grads_parallel."""
    n_rows, n_gates = d_gates.shape
    accumulate_at_transposed(d_gates, inputs, d_weight, 0, n_rows, 0, n_gates)
    add_column_sums(d_gates, 0, n_rows, 0, n_gates, d_bias)


@parallel_kernel
def accumulate_param_grads_parallel(d_gates, inputs, d_weight, d_bias, n_threads):
    """d_weight += d_gates^T inputs and d_bias += column sums of d_gates.

    d_gates is (N, G) with zero rows at padded steps, inputs (N, K): the whole
    sequence's weight gradient as one GEMM after the time loop, split across
    threads one of two ways (measured, 2 threads):
    - by rows N, the first thread accumulating into d_weight and each other one
      into a partial sum added afterwards: the faster split where each thread
      has at least K rows (mid to large: 1.1-1.5x);
    - by gate columns G in multiples of 16, each thread accumulating into its
      own rows of d_weight: no partial sums, which for few rows against a large
      weight cost more than the product (wide LSTM: 32 -> 18 ms, 32 MB less).
    """
    # Checked here: an exception raised inside a parallel region reaches Python
    # as a SystemError.
    if not (d_gates.flags.c_contiguous and inputs.flags.c_contiguous
            and d_weight.flags.c_contiguous):
        raise ValueError("accumulate_param_grads_parallel needs C-contiguous arrays")
    n_rows, n_gates = d_gates.shape
    inner = inputs.shape[1]
    if n_rows >= n_threads * inner or n_threads == 1:
        n_chunks = max(1, min(n_threads, n_rows))
        parts = np.empty((n_chunks - 1, n_gates, inner), dtype=d_weight.dtype)
        bias_parts = np.zeros((n_chunks, n_gates), dtype=d_bias.dtype)
        for chunk in prange(n_chunks):
            start, stop = chunk_bounds(chunk, n_chunks, n_rows)
            if chunk == 0:
                accumulate_at_transposed(d_gates, inputs, d_weight, start, stop, 0, n_gates)
            else:
                np.dot(d_gates[start:stop].T, inputs[start:stop], parts[chunk - 1])
            add_column_sums(d_gates, start, stop, 0, n_gates, bias_parts[chunk])
        # Explicit loops: in a parallel kernel an array expression becomes a nested
        # parallel loop of its own, slower to compile and to start.
        for chunk in prange(n_chunks):
            first, last = chunk_bounds(chunk, n_chunks, n_gates)
            for row in range(first, last):
                for part in range(n_chunks - 1):
                    for col in range(inner):
                        d_weight[row, col] += parts[part, row, col]
                for part in range(n_chunks):
                    d_bias[row] += bias_parts[part, row]
        return
    units = (n_gates + 15) // 16
    n_chunks = max(1, min(n_threads, units))
    for chunk in prange(n_chunks):
        start, stop = chunk_bounds(chunk, n_chunks, units)
        start, stop = min(16 * start, n_gates), min(16 * stop, n_gates)
        accumulate_at_transposed(d_gates, inputs, d_weight, 0, n_rows, start, stop - start)
        add_column_sums(d_gates, 0, n_rows, start, stop, d_bias)
