"""Pieces shared by every cell's forward and BPTT kernels."""

import numpy as np

from ._jit import kernel


@kernel
def time_index(step, n_steps, reverse):
    """Time index of processing step `step`: the reverse direction walks T-1..0."""
    return n_steps - 1 - step if reverse else step


@kernel
def chunk_bounds(chunk, n_chunks, batch):
    """Rows [start, stop) of batch slice `chunk`: near-equal slices, one per thread."""
    return chunk * batch // n_chunks, (chunk + 1) * batch // n_chunks


@kernel
def accumulate_param_grads(d_gates, inputs, d_weight, d_bias):
    """d_weight += d_gates^T inputs and d_bias += column sums of d_gates.

    d_gates is (N, G) with zero rows at padded steps, inputs (N, K): the whole
    sequence's weight gradient as one GEMM after the time loop.
    """
    d_weight += np.dot(d_gates.T, inputs)
    n_rows, n_cols = d_gates.shape
    for row in range(n_rows):
        for col in range(n_cols):
            d_bias[col] += d_gates[row, col]
