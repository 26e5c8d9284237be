"""LSTM cell (torch's gate order i, f, g, o): whole-sequence forward and BPTT.

    i, f, o = sigmoid(.), g = tanh(.) of  W_ih x_t + b_ih + W_hh h_{t-1} + b_hh
    c_t = f * c_{t-1} + i * g,   h_t = o * tanh(c_t)

Array layout: x (T*B, I); weights are passed transposed, w_ih_t (I, 4H) and
w_hh_t (H, 4H), for the forward GEMMs and untransposed for BPTT. Caches are
(T, B, .) in time order: `gates` holds the activated gates, `h_prev`/`c_prev`
the state each step started from, `tanh_c` tanh(c_t); for inference they are
empty (0, B, H) and the forward skips them. Steps at or past a sequence's length
leave its state frozen and give zero output.
"""

import numpy as np
from numba import prange

from ._jit import kernel, parallel_kernel
from .activations import gate_activation, tanh
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
def _forward_rows(start, stop, w_hh_t, w_blocks, bias, h0, c0, lengths, reverse,
                  gates, h_prev, c_prev, tanh_c, out, h_n, c_n):
    # Elements are indexed directly rather than through per-row views: each view
    # costs reference counting, which at small H cost more than the arithmetic.
    n_steps = gates.shape[0]
    keep = h_prev.shape[0] > 0
    hidden = h0.shape[1]
    h = h0[start:stop].copy()
    c = c0[start:stop].copy()
    recurrent = np.empty((stop - start, 4 * hidden), dtype=gates.dtype)
    scratch = product_scratch(h, 4 * hidden, w_blocks)
    for step in range(n_steps):
        t = time_index(step, n_steps, reverse)
        if keep:
            copy_rows(h, h_prev[t], start)
            copy_rows(c, c_prev[t], start)
        recurrent_product(h, w_hh_t, w_blocks, recurrent, scratch)
        for row in range(stop - start):
            b = start + row
            if t >= lengths[b]:
                out[t, b] = 0.0
                continue
            for k in range(4 * hidden):
                gates[t, b, k] = gate_activation(
                    gates[t, b, k] + recurrent[row, k] + bias[k],
                    (k >= 2 * hidden) & (k < 3 * hidden))
            for j in range(hidden):
                c_new = (gates[t, b, hidden + j] * c[row, j]
                         + gates[t, b, j] * gates[t, b, 2 * hidden + j])
                tanh_new = tanh(c_new)
                h_new = gates[t, b, 3 * hidden + j] * tanh_new
                c[row, j] = c_new
                h[row, j] = h_new
                out[t, b, j] = h_new
                if keep:  # loop-invariant: LLVM compiles the loop once each way
                    tanh_c[t, b, j] = tanh_new
    copy_rows(h, h_n, start)
    copy_rows(c, c_n, start)


@parallel_kernel
def lstm_forward(x, w_ih_t, w_hh_t, w_blocks, bias, h0, c0, lengths, reverse, n_threads,
                 gates, h_prev, c_prev, tanh_c, out, h_n, c_n):
    """Forward over the whole sequence; bias = b_ih + b_hh (4H,)."""
    n_steps, batch, width = gates.shape
    # Input projection of every step at once: one GEMM before the time loop.
    rows_dot(x, w_ih_t, gates.reshape(n_steps * batch, width), n_threads)
    n_chunks = batch_chunks(n_threads, batch)
    for chunk in prange(n_chunks):
        start, stop = chunk_bounds(chunk, n_chunks, batch)
        _forward_rows(start, stop, w_hh_t, w_blocks, bias, h0, c0, lengths, reverse,
                      gates, h_prev, c_prev, tanh_c, out, h_n, c_n)


@kernel
def _backward_rows(start, stop, w_hh, w_hh_blocks, lengths, reverse, clip_hidden,
                   gates, c_prev, tanh_c, d_out, d_hn, d_cn, d_gates, dh0, dc0):
    n_steps = gates.shape[0]
    one = np.ones(1, dtype=gates.dtype)[0]  # keeps float32 arithmetic in float32
    bound = np.full(1, clip_hidden, dtype=gates.dtype)[0]
    hidden = d_hn.shape[1]
    dh = d_hn[start:stop].copy()
    dc = d_cn[start:stop].copy()
    recurrent = np.empty_like(dh)
    block_buffers = block_scratch(stop - start, w_hh_blocks)
    d_state = np.empty(hidden, dtype=gates.dtype)
    for back_step in range(n_steps):
        t = time_index(n_steps - 1 - back_step, n_steps, reverse)
        for row in range(stop - start):
            b = start + row
            if t >= lengths[b]:
                # Frozen state: the gradient passes through untouched.
                d_gates[t, b] = 0.0
                continue
            # Four short loops, each over few arrays: LLVM vectorises them where
            # one loop over all ten arrays stayed mostly scalar (2.4x faster at H=32).
            for j in range(hidden):
                d_state[j] = clamp(dh[row, j] + d_out[t, b, j], bound)  # dL/dh_t
            for j in range(hidden):
                o_gate = gates[t, b, 3 * hidden + j]
                tc = tanh_c[t, b, j]
                d_gates[t, b, 3 * hidden + j] = d_state[j] * tc * o_gate * (one - o_gate)
                d_state[j] = dc[row, j] + d_state[j] * o_gate * (one - tc * tc)  # dL/dc_t
            for j in range(hidden):
                i_gate = gates[t, b, j]
                g_gate = gates[t, b, 2 * hidden + j]
                d_gates[t, b, j] = d_state[j] * g_gate * i_gate * (one - i_gate)
                d_gates[t, b, 2 * hidden + j] = d_state[j] * i_gate * (one - g_gate * g_gate)
            for j in range(hidden):
                f_gate = gates[t, b, hidden + j]
                d_gates[t, b, hidden + j] = d_state[j] * c_prev[t, b, j] * f_gate * (one - f_gate)
                dc[row, j] = d_state[j] * f_gate
        # dh_{t-1} = dG_t W_hh; padded rows have dG = 0 and keep their dh.
        blocked_product(d_gates[t, start:stop], w_hh, w_hh_blocks, recurrent, block_buffers)
        for row in range(stop - start):
            if t < lengths[start + row]:
                for j in range(hidden):
                    dh[row, j] = recurrent[row, j]
    copy_rows(dh, dh0, start)
    copy_rows(dc, dc0, start)


@parallel_kernel
def lstm_backward(x, w_ih, w_hh, w_hh_blocks, lengths, reverse, n_threads, clip_hidden,
                  gates, h_prev, c_prev, tanh_c, d_out, d_hn, d_cn,
                  d_gates, dx, dh0, dc0, dw_ih, dw_hh, db_ih, db_hh):
    """BPTT over the whole sequence; parameter gradients are accumulated."""
    n_steps, batch, width = gates.shape
    n_chunks = batch_chunks(n_threads, batch)
    for chunk in prange(n_chunks):
        start, stop = chunk_bounds(chunk, n_chunks, batch)
        _backward_rows(start, stop, w_hh, w_hh_blocks, lengths, reverse, clip_hidden,
                       gates, c_prev, tanh_c, d_out, d_hn, d_cn, d_gates, dh0, dc0)
    d_gates_2d = d_gates.reshape(n_steps * batch, width)
    rows_dot(d_gates_2d, w_ih, dx, n_threads)
    accumulate_param_grads_parallel(d_gates_2d, x, dw_ih, db_ih, n_threads)
    h_prev_2d = h_prev.reshape(n_steps * batch, h_prev.shape[2])
    accumulate_param_grads_parallel(d_gates_2d, h_prev_2d, dw_hh, db_hh, n_threads)


# Single-threaded variants: the same arithmetic without a parallel region, whose
# launch costs more than a small problem's whole time loop (and streaming calls).
@kernel
def lstm_forward_serial(x, w_ih_t, w_hh_t, w_blocks, bias, h0, c0, lengths, reverse,
                        gates, h_prev, c_prev, tanh_c, out, h_n, c_n):
    n_steps, batch, width = gates.shape
    np.dot(x, w_ih_t, gates.reshape(n_steps * batch, width))
    _forward_rows(0, gates.shape[1], w_hh_t, w_blocks, bias, h0, c0, lengths, reverse,
                  gates, h_prev, c_prev, tanh_c, out, h_n, c_n)


@kernel
def lstm_backward_serial(x, w_ih, w_hh, w_hh_blocks, lengths, reverse, clip_hidden,
                         gates, h_prev, c_prev, tanh_c, d_out, d_hn, d_cn,
                         d_gates, dx, dh0, dc0, dw_ih, dw_hh, db_ih, db_hh):
    n_steps, batch, width = gates.shape
    _backward_rows(0, gates.shape[1], w_hh, w_hh_blocks, lengths, reverse, clip_hidden,
                   gates, c_prev, tanh_c, d_out, d_hn, d_cn, d_gates, dh0, dc0)
    d_gates_2d = d_gates.reshape(n_steps * batch, width)
    np.dot(d_gates_2d, w_ih, dx)
    accumulate_param_grads(d_gates_2d, x, dw_ih, db_ih)
    accumulate_param_grads(d_gates.reshape(n_steps * batch, width),
                           h_prev.reshape(n_steps * batch, h_prev.shape[2]), dw_hh, db_hh)
