"""Elman cell: h_t = f(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh), f = tanh or relu.

`gates` keeps h_t itself (the activated pre-activation), which is all BPTT
needs for f'; no extra cache, no cell state.
"""

from .._kernels._jit import gate_math
from .._kernels.activations import tanh
from . import same_recurrent_grads, spec


@gate_math
def _tanh_forward_step(t, start, stop, lengths, one, gates, recurrent, bias, b_ih, b_hh,
                       h, c, extra, keep, out, w_hh, scratch):
    hidden = h.shape[1]
    for row in range(stop - start):
        b = start + row
        if t >= lengths[b]:
            continue
        for j in range(hidden):
            h_new = tanh(gates[t, b, j] + recurrent[row, j] + bias[j])
            gates[t, b, j] = h_new
            h[row, j] = h_new
            out[t, b, j] = h_new


@gate_math
def _relu_forward_step(t, start, stop, lengths, one, gates, recurrent, bias, b_ih, b_hh,
                       h, c, extra, keep, out, w_hh, scratch):
    hidden = h.shape[1]
    for row in range(stop - start):
        b = start + row
        if t >= lengths[b]:
            continue
        for j in range(hidden):
            pre = gates[t, b, j] + recurrent[row, j] + bias[j]
            h_new = pre if (pre > 0.0 or pre != pre) else 0.0  # NaN propagates, like torch
            gates[t, b, j] = h_new
            h[row, j] = h_new
            out[t, b, j] = h_new


@gate_math
def _tanh_backward_step(t, start, stop, lengths, one, d_total, gates, h_prev, extra,
                        d_gates, d_hidden, dh, dc, w_hh, scratch):
    hidden = dh.shape[1]
    for row in range(stop - start):
        b = start + row
        if t >= lengths[b]:
            continue
        for j in range(hidden):
            h_new = gates[t, b, j]
            d_gates[t, b, j] = d_total[row, j] * (one - h_new * h_new)


@gate_math
def _relu_backward_step(t, start, stop, lengths, one, d_total, gates, h_prev, extra,
                        d_gates, d_hidden, dh, dc, w_hh, scratch):
    hidden = dh.shape[1]
    for row in range(stop - start):
        b = start + row
        if t >= lengths[b]:
            continue
        for j in range(hidden):
            d_gates[t, b, j] = d_total[row, j] if gates[t, b, j] > 0.0 else 0.0


TANH_SPEC = spec("rnn_tanh", n_gates=1, state_count=1, cache_width=0,
                 forward_step=_tanh_forward_step, backward_step=_tanh_backward_step,
                 recurrent_grads=same_recurrent_grads, recurrent_grads_differ=False,
                 direct_state_path=False, module_file=__file__)
RELU_SPEC = spec("rnn_relu", n_gates=1, state_count=1, cache_width=0,
                 forward_step=_relu_forward_step, backward_step=_relu_backward_step,
                 recurrent_grads=same_recurrent_grads, recurrent_grads_differ=False,
                 direct_state_path=False, module_file=__file__)
