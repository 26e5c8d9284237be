"""Pieces shared by every cell's forward and BPTT kernels.

Parallel pieces split rows across threads, each thread calling (single-threaded)
BLAS on its own slice and writing its own slab of output: no races, no atomics.
"""

import numpy as np
from numba import prange

from ._jit import borrowing_helper, helper, kernel, parallel_kernel
from .gemm import matmul, matmul_blocks


@helper
def time_index(step, n_steps, reverse):
    """Time index of processing step `step`: the reverse direction walks T-1..0."""
    return n_steps - 1 - step if reverse else step


@helper
def clamp(value, bound):
    """value limited to [-bound, bound]; NaN passes through (it compares false)."""
    value = bound if value > bound else value
    return -bound if value < -bound else value


@borrowing_helper
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


@borrowing_helper
def copy_rows(src, dst, start):
    """dst[start:start + len(src)] = src, element by element: numba's slice
    assignment checks shapes with a formatted error message whose compilation
    took seconds of every cold kernel compile."""
    for row in range(src.shape[0]):
        for col in range(src.shape[1]):
            dst[start + row, col] = src[row, col]


@helper
def copy_columns(matrix, col0, col1):
    """A new C-contiguous copy of matrix[:, col0:col1] (a 2-D array)."""
    rows = matrix.shape[0]
    out = np.empty((rows, col1 - col0), dtype=matrix.dtype)
    for row in range(rows):
        for col in range(col0, col1):
            out[row, col - col0] = matrix[row, col]
    return out


@helper
def product_scratch(h, width, w_blocks):
    """Scratch for recurrent_product: (H, B) and (G, B) for the weight-major
    product, which is used only without blocks and for a batch small against a
    large hidden size (there h @ W_hh^T makes BLAS repack the whole weight every
    step; (W_hh h^T)^T does not, and ran 1.7x faster with its transposes included
    for (16, 1024) x (1024, 4096)); else both empty."""
    rows, hidden = h.shape
    if w_blocks.shape[0] == 0 and rows * 16 <= hidden and hidden >= 512:
        return np.empty((hidden, rows), dtype=h.dtype), np.empty((width, rows), dtype=h.dtype)
    return np.empty((0, rows), dtype=h.dtype), np.empty((0, rows), dtype=h.dtype)


@borrowing_helper
def recurrent_product(h, w_hh, w_hh_t, w_blocks, out, scratch):
    """out = h @ W_hh^T: weight-major (from w_hh (G, H) as stored), blocked (from
    w_blocks), on the contiguous copy w_hh_t (H, G), or, where that is empty
    (0, G), on w_hh transposed by BLAS (see product_scratch)."""
    h_t, out_t = scratch
    if out_t.shape[0] != 0:
        transpose_into(h, h_t)
        matmul(w_hh, h_t, out_t, False, False, False)
        transpose_into(out_t, out)
        return
    if w_blocks.shape[0] == 0 and w_hh_t.shape[0] == 0:
        matmul(h, w_hh, out, False, True, False)
        return
    blocked_product(h, w_hh_t, w_blocks, out)


@kernel
def fill_weight_blocks(w, transposed, blocks, first, last):
    """Writes what source rows [first, last) of w hold into blocks (n_k, n_n, k, d)
    of the product weight: w (K, N) itself, or w.T if `transposed` (w stored
    (N, K), as W_hh is for the forward h @ W_hh^T).

    The source is read row by row, so that memory is walked in order; the
    transposed copy goes through 16 x 16 tiles. For large weights this is several
    times faster than numpy's strided copy, which walks block by block."""
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


@borrowing_helper
def blocked_product(a, w, w_blocks, out):
    """out = a @ w (K, N), through w_blocks (n_k, n_n, k, d) unless that is empty:
    w cut into n_k row chunks of k and n_n column blocks of d, each contiguous.

    Each block's product is small enough (rows * k * d <= 1e6) for OpenBLAS's
    small-matrix kernels, which skip packing the weight; a packed GEMM repacks
    the whole weight on every step (per-step products 1.5-3x faster blocked;
    cutting K as well, for BPTT's dh = dG W_hh at large H, 950 -> 615 us).
    """
    if w_blocks.shape[0] == 0:
        matmul(a, w, out, False, False, False)
    else:
        matmul_blocks(a, w_blocks, out)


@helper
def chunk_bounds(chunk, n_chunks, rows):
    """Rows [start, stop) of slice `chunk`: near-equal slices, one per thread."""
    return chunk * rows // n_chunks, (chunk + 1) * rows // n_chunks


@helper
def batch_chunks(n_threads, batch):
    """How many batch slices the recurrence runs on (each needs at least one row)."""
    return max(1, min(n_threads, batch))


@kernel
def add_column_sums(matrix, row0, row1, col0, col1, out):
    """out[col0:col1] += column sums of matrix[row0:row1, col0:col1].

    A kernel, not a helper: compiled as a helper, its loop made the LSTM's
    BPTT at the mid shape 25% slower (8.7 against 7.0 ms)."""
    for row in range(row0, row1):
        for col in range(col0, col1):
            out[col] += matrix[row, col]


# Input sizes (the width of W_ih) from 2 up to this run the input-side products as
# loops: BLAS spends more on packing an operand that narrow than on the product
# (one input size is a matrix-vector product, which BLAS runs well).
NARROW_WIDTH = 4


@helper
def is_narrow(weight):
    """Whether `weight` (G, I) is narrow enough for narrow_rows_dot and
    narrow_weight_gradient."""
    return 2 <= weight.shape[1] <= NARROW_WIDTH


@helper
def narrow_rows_dot(a, weight, out, transpose):
    """out = a @ weight.T (a (N, I)) if `transpose`, else a @ weight (a (N, G));
    weight (G, I) narrow: each row's products run over contiguous rows of
    weight.T, a vectorised loop."""
    weight_t = np.ascontiguousarray(weight.T)
    inputs, width = weight_t.shape
    for row in range(a.shape[0]):
        if transpose:
            first = a[row, 0]
            for g in range(width):
                out[row, g] = first * weight_t[0, g]
            for i in range(1, inputs):
                value = a[row, i]
                for g in range(width):
                    out[row, g] += value * weight_t[i, g]
        else:
            for i in range(inputs):
                total = out.dtype.type(0.0)
                for g in range(width):
                    total += a[row, g] * weight_t[i, g]
                out[row, i] = total


@helper
def narrow_weight_gradient(d_gates, inputs, target, accumulate):
    """target (G, I) = d_gates^T inputs, or += that if `accumulate`, for narrow
    inputs (N, I): one pass over d_gates into an (I, G) sum."""
    width = d_gates.shape[1]
    sums = np.zeros((inputs.shape[1], width), dtype=target.dtype)
    for row in range(d_gates.shape[0]):
        for i in range(inputs.shape[1]):
            value = inputs[row, i]
            for g in range(width):
                sums[i, g] += d_gates[row, g] * value
    for g in range(width):
        for i in range(inputs.shape[1]):
            target[g, i] = target[g, i] + sums[i, g] if accumulate else sums[i, g]
