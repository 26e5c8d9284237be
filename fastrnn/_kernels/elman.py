"""Elman cell: h_t = f(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh), f = tanh or relu.

Same layout and conventions as the LSTM kernels; `gates` caches h_t itself
(the activated pre-activation), which is all BPTT needs for f'; `h_prev` is
empty for inference.
"""

import numpy as np
from numba import prange

from ._jit import kernel, parallel_kernel
from .activations import tanh
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
def _forward_rows(start, stop, w_hh_t, w_blocks, bias, h0, lengths, reverse, use_relu,
                  gates, h_prev, out, h_n):
    n_steps = gates.shape[0]
    keep = h_prev.shape[0] > 0
    hidden = h0.shape[1]
    h = h0[start:stop].copy()
    recurrent = np.empty_like(h)
    scratch = product_scratch(h, hidden, w_blocks)
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
            for j in range(hidden):
                pre = gates[t, b, j] + recurrent[row, j] + bias[j]
                if use_relu:
                    h_new = pre if (pre > 0.0 or pre != pre) else 0.0  # NaN propagates, like torch
                else:
                    h_new = tanh(pre)
                gates[t, b, j] = h_new
                h[row, j] = h_new
                out[t, b, j] = h_new
    copy_rows(h, h_n, start)


@parallel_kernel
def elman_forward(x, w_ih_t, w_hh_t, w_blocks, bias, h0, lengths, reverse, use_relu, n_threads,
                  gates, h_prev, out, h_n):
    """Forward over the whole sequence; bias = b_ih + b_hh (H,)."""
    n_steps, batch, width = gates.shape
    # Input projection of every step at once: one GEMM before the time loop.
    rows_dot(x, w_ih_t, gates.reshape(n_steps * batch, width), n_threads)
    n_chunks = batch_chunks(n_threads, batch)
    for chunk in prange(n_chunks):
        start, stop = chunk_bounds(chunk, n_chunks, batch)
        _forward_rows(start, stop, w_hh_t, w_blocks, bias, h0, lengths, reverse, use_relu,
                      gates, h_prev, out, h_n)


@kernel
def _backward_rows(start, stop, w_hh, w_hh_blocks, lengths, reverse, use_relu, clip_hidden,
                   gates, d_out, d_hn, d_gates, dh0):
    n_steps = gates.shape[0]
    one = np.ones(1, dtype=gates.dtype)[0]  # keeps float32 arithmetic in float32
    bound = np.full(1, clip_hidden, dtype=gates.dtype)[0]
    hidden = d_hn.shape[1]
    dh = d_hn[start:stop].copy()
    recurrent = np.empty_like(dh)
    block_buffers = block_scratch(stop - start, w_hh_blocks)
    for back_step in range(n_steps):
        t = time_index(n_steps - 1 - back_step, n_steps, reverse)
        for row in range(stop - start):
            b = start + row
            if t >= lengths[b]:
                d_gates[t, b] = 0.0
                continue
            for j in range(hidden):
                dh_total = clamp(dh[row, j] + d_out[t, b, j], bound)
                h_new = gates[t, b, j]
                if use_relu:
                    d_gates[t, b, j] = dh_total if h_new > 0.0 else 0.0
                else:
                    d_gates[t, b, j] = dh_total * (one - h_new * h_new)
        blocked_product(d_gates[t, start:stop], w_hh, w_hh_blocks, recurrent, block_buffers)
        for row in range(stop - start):
            if t < lengths[start + row]:
                for j in range(hidden):
                    dh[row, j] = recurrent[row, j]
    copy_rows(dh, dh0, start)


@parallel_kernel
def elman_backward(x, w_ih, w_hh, w_hh_blocks, lengths, reverse, use_relu, n_threads, clip_hidden,
                   gates, h_prev, d_out, d_hn, d_gates, dx, dh0, dw_ih, dw_hh, db_ih, db_hh):
    """BPTT over the whole sequence; parameter gradients are accumulated."""
    n_steps, batch, width = gates.shape
    n_chunks = batch_chunks(n_threads, batch)
    for chunk in prange(n_chunks):
        start, stop = chunk_bounds(chunk, n_chunks, batch)
        _backward_rows(start, stop, w_hh, w_hh_blocks, lengths, reverse, use_relu, clip_hidden,
                       gates, d_out, d_hn, d_gates, dh0)
    d_gates_2d = d_gates.reshape(n_steps * batch, width)
    rows_dot(d_gates_2d, w_ih, dx, n_threads)
    accumulate_param_grads_parallel(d_gates_2d, x, dw_ih, db_ih, n_threads)
    h_prev_2d = h_prev.reshape(n_steps * batch, width)
    accumulate_param_grads_parallel(d_gates_2d, h_prev_2d, dw_hh, db_hh, n_threads)


# Single-threaded variants: the same arithmetic without a parallel region, whose
# launch costs more than a small problem's whole time loop (and streaming calls).
@kernel
def elman_forward_serial(x, w_ih_t, w_hh_t, w_blocks, bias, h0, lengths, reverse, use_relu,
                         gates, h_prev, out, h_n):
    n_steps, batch, width = gates.shape
    np.dot(x, w_ih_t, gates.reshape(n_steps * batch, width))
    _forward_rows(0, gates.shape[1], w_hh_t, w_blocks, bias, h0, lengths, reverse, use_relu,
                  gates, h_prev, out, h_n)


@kernel
def elman_backward_serial(x, w_ih, w_hh, w_hh_blocks, lengths, reverse, use_relu, clip_hidden,
                          gates, h_prev, d_out, d_hn, d_gates, dx, dh0, dw_ih, dw_hh, db_ih,
                          db_hh):
    n_steps, batch, width = gates.shape
    _backward_rows(0, gates.shape[1], w_hh, w_hh_blocks, lengths, reverse, use_relu, clip_hidden,
                   gates, d_out, d_hn, d_gates, dh0)
    d_gates_2d = d_gates.reshape(n_steps * batch, width)
    np.dot(d_gates_2d, w_ih, dx)
    accumulate_param_grads(d_gates_2d, x, dw_ih, db_ih)
    accumulate_param_grads(d_gates.reshape(n_steps * batch, width),
                           h_prev.reshape(n_steps * batch, h_prev.shape[2]), dw_hh, db_hh)
