"""GRU cells, gate order r, z, n, in two variants:

    r, z = sigmoid(W_i{r,z} x_t + b_i{r,z} + W_h{r,z} h_{t-1} + b_h{r,z})
    h_t = (1 - z) * n + z * h_{t-1}
    reset after (SPEC; torch, cuDNN, Keras's default, ONNX linear_before_reset=1):
        n = tanh(W_in x_t + b_in + r * (W_hn h_{t-1} + b_hn))
    reset before (RESET_BEFORE_SPEC; Cho et al. 2014, Keras reset_after=False,
    ONNX's default linear_before_reset=0):
        n = tanh(W_in x_t + b_in + W_hn (r * h_{t-1}) + b_hn)

`gates` keeps the activated gates. Reset after: the extra cache holds
W_hn h_{t-1} + b_hn (H per step), which BPTT needs for dr; the recurrent-side
gradient of the n block is r times the input side's. Reset before: the cell
multiplies r * h_{t-1} by W_hn itself (the engine's per-step product covers
the r and z blocks it needs; its n block goes unused), and keeps r * h_{t-1} as
the extra cache, the input of W_hn's gradient. In both, h_{t-1} reaches h_t
directly through z; reset before, also through r * h_{t-1}.
"""


from .._kernels._jit import gate_math
from .._kernels.activations import sigmoid, tanh
from .._kernels.gemm import matmul
from . import same_recurrent_grads, spec


@gate_math
def _forward_step(t, start, stop, lengths, one, gates, recurrent, bias, b_ih, b_hh,
                  h, c, extra, keep, out, w_hh, scratch):
    hidden = h.shape[1]
    for row in range(stop - start):
        b = start + row
        if t >= lengths[b]:
            continue
        for k in range(2 * hidden):
            gates[t, b, k] = sigmoid(gates[t, b, k] + b_ih[k] + recurrent[row, k] + b_hh[k])
        for j in range(hidden):
            hn = recurrent[row, 2 * hidden + j] + b_hh[2 * hidden + j]
            if keep:  # loop-invariant: LLVM compiles the loop once each way
                extra[t, b, j] = hn
            gates[t, b, 2 * hidden + j] = tanh(gates[t, b, 2 * hidden + j]
                                               + b_ih[2 * hidden + j] + gates[t, b, j] * hn)
        for j in range(hidden):
            z_gate = gates[t, b, hidden + j]
            h_new = (one - z_gate) * gates[t, b, 2 * hidden + j] + z_gate * h[row, j]
            h[row, j] = h_new
            out[t, b, j] = h_new


@gate_math
def _backward_step(t, start, stop, lengths, one, d_total, gates, h_prev, extra,
                   d_gates, d_hidden, dh, dc, w_hh, scratch):
    hidden = dh.shape[1]
    for row in range(stop - start):
        b = start + row
        if t >= lengths[b]:
            continue
        # Short loops over few arrays each vectorise (as in the LSTM cell).
        for j in range(hidden):
            z_gate = gates[t, b, hidden + j]
            n_gate = gates[t, b, 2 * hidden + j]
            d_pre_z = d_total[row, j] * (h_prev[t, b, j] - n_gate) * z_gate * (one - z_gate)
            d_gates[t, b, hidden + j] = d_pre_z
            d_hidden[row, hidden + j] = d_pre_z
            d_gates[t, b, 2 * hidden + j] = d_total[row, j] * (one - z_gate) * (one - n_gate * n_gate)
            dh[row, j] = d_total[row, j] * z_gate  # the direct path h -> h' through z
        for j in range(hidden):
            r_gate = gates[t, b, j]
            d_pre_n = d_gates[t, b, 2 * hidden + j]
            d_pre_r = d_pre_n * extra[t, b, j] * r_gate * (one - r_gate)
            d_gates[t, b, j] = d_pre_r
            d_hidden[row, j] = d_pre_r
            d_hidden[row, 2 * hidden + j] = d_pre_n * r_gate


@gate_math
def _recurrent_grads(d_gates, gates):
    """The n block's recurrent-side gradient is r times the input side's."""
    n_steps, batch, width = d_gates.shape
    hidden = width // 3
    for t in range(n_steps):
        for b in range(batch):
            for j in range(hidden):
                d_gates[t, b, 2 * hidden + j] *= gates[t, b, j]


SPEC = spec("gru", n_gates=3, state_count=1, cache_width=1,
            forward_step=_forward_step, backward_step=_backward_step,
            recurrent_grads=_recurrent_grads, recurrent_grads_differ=True,
            direct_state_path=True, module_file=__file__)


@gate_math
def _reset_before_forward_step(t, start, stop, lengths, one, gates, recurrent, bias, b_ih,
                               b_hh, h, c, extra, keep, out, w_hh, scratch):
    hidden = h.shape[1]
    gated, product = scratch[0], scratch[1]
    for row in range(stop - start):
        b = start + row
        if t >= lengths[b]:
            for j in range(hidden):
                gated[row, j] = 0.0
            continue
        for k in range(2 * hidden):
            gates[t, b, k] = sigmoid(gates[t, b, k] + recurrent[row, k] + bias[k])
        for j in range(hidden):
            gated[row, j] = gates[t, b, j] * h[row, j]
    matmul(gated, w_hh[2 * hidden:], product, False, True, False)  # W_hn (r * h_{t-1})
    for row in range(stop - start):
        b = start + row
        if t >= lengths[b]:
            if keep:  # W_hn's gradient reads every row (0 * garbage may be NaN)
                for j in range(hidden):
                    extra[t, b, j] = 0.0
            continue
        for j in range(hidden):
            if keep:
                extra[t, b, j] = gated[row, j]
            gates[t, b, 2 * hidden + j] = tanh(gates[t, b, 2 * hidden + j]
                                               + product[row, j] + bias[2 * hidden + j])
        for j in range(hidden):
            z_gate = gates[t, b, hidden + j]
            h_new = (one - z_gate) * gates[t, b, 2 * hidden + j] + z_gate * h[row, j]
            h[row, j] = h_new
            out[t, b, j] = h_new


@gate_math
def _reset_before_backward_step(t, start, stop, lengths, one, d_total, gates, h_prev, extra,
                                d_gates, d_hidden, dh, dc, w_hh, scratch):
    hidden = dh.shape[1]
    d_pre_n, d_gated = scratch[0], scratch[1]
    for row in range(stop - start):
        b = start + row
        if t >= lengths[b]:
            for j in range(hidden):
                d_pre_n[row, j] = 0.0
            continue
        for j in range(hidden):
            z_gate = gates[t, b, hidden + j]
            n_gate = gates[t, b, 2 * hidden + j]
            d_pre_z = d_total[row, j] * (h_prev[t, b, j] - n_gate) * z_gate * (one - z_gate)
            d_gates[t, b, hidden + j] = d_pre_z
            d_hidden[row, hidden + j] = d_pre_z
            d_n = d_total[row, j] * (one - z_gate) * (one - n_gate * n_gate)
            d_gates[t, b, 2 * hidden + j] = d_n
            d_hidden[row, 2 * hidden + j] = 0.0  # reaches h_{t-1} through r * h, below
            d_pre_n[row, j] = d_n
            dh[row, j] = d_total[row, j] * z_gate
    matmul(d_pre_n, w_hh[2 * hidden:], d_gated, False, False, False)  # dL/d(r * h_{t-1})
    for row in range(stop - start):
        b = start + row
        if t >= lengths[b]:
            continue
        for j in range(hidden):
            r_gate = gates[t, b, j]
            d_pre_r = d_gated[row, j] * h_prev[t, b, j] * r_gate * (one - r_gate)
            d_gates[t, b, j] = d_pre_r
            d_hidden[row, j] = d_pre_r
            dh[row, j] += d_gated[row, j] * r_gate


RESET_BEFORE_SPEC = spec("gru_reset_before", n_gates=3, state_count=1, cache_width=1,
                         forward_step=_reset_before_forward_step,
                         backward_step=_reset_before_backward_step,
                         recurrent_grads=same_recurrent_grads, recurrent_grads_differ=True,
                         direct_state_path=True, module_file=__file__, scratch_count=2,
                         gated_state_blocks=1)
