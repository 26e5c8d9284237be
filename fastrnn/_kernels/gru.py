"""GRU cell, torch's variant (gate order r, z, n):

    r = sigmoid(W_ir x + b_ir + W_hr h + b_hr),  z = sigmoid(W_iz x + b_iz + W_hz h + b_hz)
    n = tanh(W_in x + b_in + r * (W_hn h + b_hn)),  h' = (1 - z) * n + z * h

Same layout and conventions as the LSTM kernels. `gates` caches r, z, n and
`hidden_n` caches W_hn h + b_hn. Because r multiplies the recurrent part of n,
the gradients of the input-side and recurrent-side pre-activations differ in
the n block; BPTT keeps one (T, B, 3H) array for the input side and turns it
into the recurrent side in place after the loop. For inference `hidden_n` and
`h_prev` are empty and the forward skips them.
"""

import numpy as np
from numba import prange

from ._jit import kernel, parallel_kernel
from .activations import sigmoid, tanh
from .sequence import (
    accumulate_param_grads,
    accumulate_param_grads_parallel,
    batch_chunks,
    block_scratch,
    blocked_product,
    chunk_bounds,
    clamp,
    copy_rows,
    product_scratch,
    recurrent_product,
    rows_dot,
    time_index,
)


@kernel
def _forward_rows(start, stop, w_hh_t, w_blocks, b_ih, b_hh, h0, lengths, reverse,
                  gates, hidden_n, h_prev, out, h_n):
    n_steps = gates.shape[0]
    keep = h_prev.shape[0] > 0
    one = np.ones(1, dtype=gates.dtype)[0]  # keeps float32 arithmetic in float32
    hidden = h0.shape[1]
    h = h0[start:stop].copy()
    recurrent = np.empty((stop - start, 3 * hidden), dtype=gates.dtype)
    scratch = product_scratch(h, 3 * hidden, w_blocks)
    for step in range(n_steps):
        t = time_index(step, n_steps, reverse)
        if keep:
            copy_rows(h, h_prev[t], start)
        recurrent_product(h, w_hh_t, w_blocks, recurrent, scratch)
        for row in range(stop - start):
            b = start + row
            if t >= lengths[b]:
                out[t, b] = 0.0
                continue
            for k in range(2 * hidden):
                gates[t, b, k] = sigmoid(gates[t, b, k] + b_ih[k] + recurrent[row, k] + b_hh[k])
            for j in range(hidden):
                hn = recurrent[row, 2 * hidden + j] + b_hh[2 * hidden + j]
                if keep:  # loop-invariant: LLVM compiles the loop once each way
                    hidden_n[t, b, j] = hn
                gates[t, b, 2 * hidden + j] = tanh(gates[t, b, 2 * hidden + j]
                                                   + b_ih[2 * hidden + j] + gates[t, b, j] * hn)
            for j in range(hidden):
                z_gate = gates[t, b, hidden + j]
                h_new = (one - z_gate) * gates[t, b, 2 * hidden + j] + z_gate * h[row, j]
                h[row, j] = h_new
                out[t, b, j] = h_new
    copy_rows(h, h_n, start)


@parallel_kernel
def gru_forward(x, w_ih_t, w_hh_t, w_blocks, b_ih, b_hh, h0, lengths, reverse, n_threads,
                gates, hidden_n, h_prev, out, h_n):
    """Forward over the whole sequence."""
    n_steps, batch, width = gates.shape
    # Input projection of every step at once: one GEMM before the time loop.
    rows_dot(x, w_ih_t, gates.reshape(n_steps * batch, width), n_threads)
    n_chunks = batch_chunks(n_threads, batch)
    for chunk in prange(n_chunks):
        start, stop = chunk_bounds(chunk, n_chunks, batch)
        _forward_rows(start, stop, w_hh_t, w_blocks, b_ih, b_hh, h0, lengths, reverse,
                      gates, hidden_n, h_prev, out, h_n)


@kernel
def _backward_rows(start, stop, w_hh, w_hh_blocks, lengths, reverse, clip_hidden,
                   gates, hidden_n, h_prev, d_out, d_hn, d_gates, dh0):
    n_steps = gates.shape[0]
    hidden = d_hn.shape[1]
    one = np.ones(1, dtype=gates.dtype)[0]  # keeps float32 arithmetic in float32
    bound = np.full(1, clip_hidden, dtype=gates.dtype)[0]
    dh = d_hn[start:stop].copy()
    recurrent = np.empty_like(dh)
    block_buffers = block_scratch(stop - start, w_hh_blocks)
    # Gradient of this slice's recurrent pre-activations at one step; only the
    # input-side gradients (d_gates) are kept for the whole sequence.
    d_hidden_gates = np.zeros((stop - start, 3 * hidden), dtype=gates.dtype)
    d_state = np.empty(hidden, dtype=gates.dtype)
    for back_step in range(n_steps):
        t = time_index(n_steps - 1 - back_step, n_steps, reverse)
        for row in range(stop - start):
            b = start + row
            if t >= lengths[b]:
                d_gates[t, b] = 0.0
                d_hidden_gates[row] = 0.0
                continue
            # Short loops over few arrays each vectorise (as in the LSTM kernel).
            for j in range(hidden):
                d_state[j] = clamp(dh[row, j] + d_out[t, b, j], bound)  # dL/dh'
            for j in range(hidden):
                z_gate = gates[t, b, hidden + j]
                n_gate = gates[t, b, 2 * hidden + j]
                d_pre_z = d_state[j] * (h_prev[t, b, j] - n_gate) * z_gate * (one - z_gate)
                d_gates[t, b, hidden + j] = d_pre_z
                d_hidden_gates[row, hidden + j] = d_pre_z
                d_gates[t, b, 2 * hidden + j] = d_state[j] * (one - z_gate) * (one - n_gate * n_gate)
                # The direct path h -> h' through z; the matrix path is added below.
                dh[row, j] = d_state[j] * z_gate
            for j in range(hidden):
                r_gate = gates[t, b, j]
                d_pre_n = d_gates[t, b, 2 * hidden + j]
                d_pre_r = d_pre_n * hidden_n[t, b, j] * r_gate * (one - r_gate)
                d_gates[t, b, j] = d_pre_r
                d_hidden_gates[row, j] = d_pre_r
                d_hidden_gates[row, 2 * hidden + j] = d_pre_n * r_gate
        blocked_product(d_hidden_gates, w_hh, w_hh_blocks, recurrent, block_buffers)
        for row in range(stop - start):
            if t < lengths[start + row]:
                dh[row] += recurrent[row]
    copy_rows(dh, dh0, start)


@kernel
def _to_hidden_gate_grads(d_gates, gates):
    """Turn input-side gate gradients into recurrent-side ones, in place: they differ
    only in the n block, where the recurrent product is scaled by r."""
    n_steps, batch, width = d_gates.shape
    hidden = width // 3
    for t in range(n_steps):
        for b in range(batch):
            for j in range(hidden):
                d_gates[t, b, 2 * hidden + j] *= gates[t, b, j]


@parallel_kernel
def gru_backward(x, w_ih, w_hh, w_hh_blocks, lengths, reverse, n_threads, clip_hidden,
                 gates, hidden_n, h_prev, d_out, d_hn, d_gates,
                 dx, dh0, dw_ih, dw_hh, db_ih, db_hh):
    """BPTT over the whole sequence; parameter gradients are accumulated.

    d_gates (T, B, 3H) is scratch: it ends holding the recurrent-side gradients.
    """
    n_steps, batch, width = gates.shape
    n_chunks = batch_chunks(n_threads, batch)
    for chunk in prange(n_chunks):
        start, stop = chunk_bounds(chunk, n_chunks, batch)
        _backward_rows(start, stop, w_hh, w_hh_blocks, lengths, reverse, clip_hidden,
                       gates, hidden_n, h_prev, d_out, d_hn, d_gates, dh0)
    d_gates_2d = d_gates.reshape(n_steps * batch, width)
    rows_dot(d_gates_2d, w_ih, dx, n_threads)
    accumulate_param_grads_parallel(d_gates_2d, x, dw_ih, db_ih, n_threads)
    _to_hidden_gate_grads(d_gates, gates)
    h_prev_2d = h_prev.reshape(n_steps * batch, h_prev.shape[2])
    accumulate_param_grads_parallel(d_gates_2d, h_prev_2d, dw_hh, db_hh, n_threads)


# Single-threaded variants: the same arithmetic without a parallel region, whose
# launch costs more than a small problem's whole time loop (and streaming calls).
@kernel
def gru_forward_serial(x, w_ih_t, w_hh_t, w_blocks, b_ih, b_hh, h0, lengths, reverse,
                       gates, hidden_n, h_prev, out, h_n):
    n_steps, batch, width = gates.shape
    np.dot(x, w_ih_t, gates.reshape(n_steps * batch, width))
    _forward_rows(0, gates.shape[1], w_hh_t, w_blocks, b_ih, b_hh, h0, lengths, reverse,
                  gates, hidden_n, h_prev, out, h_n)


@kernel
def gru_backward_serial(x, w_ih, w_hh, w_hh_blocks, lengths, reverse, clip_hidden,
                        gates, hidden_n, h_prev, d_out, d_hn, d_gates,
                        dx, dh0, dw_ih, dw_hh, db_ih, db_hh):
    n_steps, batch, width = gates.shape
    _backward_rows(0, gates.shape[1], w_hh, w_hh_blocks, lengths, reverse, clip_hidden,
                   gates, hidden_n, h_prev, d_out, d_hn, d_gates, dh0)
    d_gates_2d = d_gates.reshape(n_steps * batch, width)
    np.dot(d_gates_2d, w_ih, dx)
    accumulate_param_grads(d_gates_2d, x, dw_ih, db_ih)
    _to_hidden_gate_grads(d_gates, gates)
    accumulate_param_grads(d_gates_2d, h_prev.reshape(n_steps * batch, h_prev.shape[2]),
                           dw_hh, db_hh)
