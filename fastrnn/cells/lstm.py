"""LSTM cell, torch's gate order i, f, g, o:

    i, f, o = sigmoid(.), g = tanh(.) of  W_ih x_t + b_ih + W_hh h_{t-1} + b_hh
    c_t = f * c_{t-1} + i * g,   h_t = o * tanh(c_t)

`gates` keeps the activated gates; the extra cache holds c_{t-1} and tanh(c_t)
side by side (2H per step).
"""

from .._kernels._jit import gate_math
from .._kernels.activations import gate_activation, tanh
from . import same_recurrent_grads, spec


@gate_math
def _forward_step(t, start, stop, lengths, one, gates, recurrent, bias, b_ih, b_hh,
                  h, c, extra, keep, out, w_hh, scratch):
    # Elements are indexed directly rather than through per-row views: each view
    # costs reference counting, more than the arithmetic at small H.
    hidden = h.shape[1]
    for row in range(stop - start):
        b = start + row
        if t >= lengths[b]:
            continue
        for k in range(4 * hidden):
            gates[t, b, k] = gate_activation(gates[t, b, k] + recurrent[row, k] + bias[k],
                                             (k >= 2 * hidden) & (k < 3 * hidden))
        for j in range(hidden):
            c_old = c[row, j]
            c_new = gates[t, b, hidden + j] * c_old + gates[t, b, j] * gates[t, b, 2 * hidden + j]
            tanh_new = tanh(c_new)
            h_new = gates[t, b, 3 * hidden + j] * tanh_new
            c[row, j] = c_new
            h[row, j] = h_new
            out[t, b, j] = h_new
            if keep:  # loop-invariant: LLVM compiles the loop once each way
                extra[t, b, j] = c_old
                extra[t, b, hidden + j] = tanh_new


@gate_math
def _backward_step(t, start, stop, lengths, one, d_total, gates, h_prev, extra,
                   d_gates, d_hidden, dh, dc, w_hh, scratch):
    hidden = dh.shape[1]
    for row in range(stop - start):
        b = start + row
        if t >= lengths[b]:
            continue
        # Short loops, each over few arrays: LLVM vectorises them where one loop
        # over all of them stays mostly scalar.
        for j in range(hidden):
            o_gate = gates[t, b, 3 * hidden + j]
            tc = extra[t, b, hidden + j]
            d_gates[t, b, 3 * hidden + j] = d_total[row, j] * tc * o_gate * (one - o_gate)
            d_total[row, j] = dc[row, j] + d_total[row, j] * o_gate * (one - tc * tc)  # dL/dc_t
        for j in range(hidden):
            i_gate = gates[t, b, j]
            g_gate = gates[t, b, 2 * hidden + j]
            d_gates[t, b, j] = d_total[row, j] * g_gate * i_gate * (one - i_gate)
            d_gates[t, b, 2 * hidden + j] = d_total[row, j] * i_gate * (one - g_gate * g_gate)
        for j in range(hidden):
            f_gate = gates[t, b, hidden + j]
            d_gates[t, b, hidden + j] = d_total[row, j] * extra[t, b, j] * f_gate * (one - f_gate)
            dc[row, j] = d_total[row, j] * f_gate


SPEC = spec("lstm", n_gates=4, state_count=2, cache_width=2,
            forward_step=_forward_step, backward_step=_backward_step,
            recurrent_grads=same_recurrent_grads, recurrent_grads_differ=False,
            direct_state_path=False, module_file=__file__,
            # Five float32 tanh approximations per hidden unit: on AVX-512 CPUs,
            # 512-bit registers run them faster than the default 256 bits.
            forward_vector_width=512)
