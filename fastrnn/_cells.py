"""Runs one direction of one layer of a cell: allocates the kernel buffers and calls
the fused forward or BPTT kernel. Knows shapes and buffers, nothing of validation."""

import numpy as np

from ._kernels.elman import elman_backward, elman_forward
from ._kernels.gru import gru_backward, gru_forward
from ._kernels.lstm import lstm_backward, lstm_forward


class ElmanCell:
    n_gates = 1
    has_cell_state = False

    def __init__(self, use_relu):
        self.use_relu = use_relu

    def forward(self, x, w_ih, w_hh, b_ih, b_hh, h0, c0, lengths, reverse, n_threads):
        n_steps, batch, hidden = x.shape[0] // h0.shape[0], h0.shape[0], h0.shape[1]
        gates = np.empty((n_steps, batch, hidden), dtype=x.dtype)
        h_prev = np.empty_like(gates)
        out = np.empty_like(gates)
        h_n = np.empty_like(h0)
        elman_forward(x, w_ih.T, w_hh.T, b_ih + b_hh, h0, lengths, reverse, self.use_relu,
                      n_threads, gates, h_prev, out, h_n)
        return out, h_n, None, (gates, h_prev)

    def backward(self, cache, x, w_ih, w_hh, lengths, reverse, d_out, d_hn, d_cn,
                 clip_hidden, n_threads, dw_ih, dw_hh, db_ih, db_hh):
        gates, h_prev = cache
        d_gates = np.empty_like(gates)
        dx = np.empty_like(x)
        dh0 = np.empty_like(d_hn)
        elman_backward(x, w_ih, w_hh, lengths, reverse, self.use_relu, n_threads, clip_hidden,
                       gates, h_prev, d_out, d_hn, d_gates, dx, dh0, dw_ih, dw_hh, db_ih, db_hh)
        return dx, dh0, None


class LSTMCell:
    n_gates = 4
    has_cell_state = True

    def forward(self, x, w_ih, w_hh, b_ih, b_hh, h0, c0, lengths, reverse, n_threads):
        n_steps, batch, hidden = x.shape[0] // h0.shape[0], h0.shape[0], h0.shape[1]
        gates = np.empty((n_steps, batch, 4 * hidden), dtype=x.dtype)
        h_prev = np.empty((n_steps, batch, hidden), dtype=x.dtype)
        c_prev = np.empty_like(h_prev)
        tanh_c = np.empty_like(h_prev)
        out = np.empty_like(h_prev)
        h_n = np.empty_like(h0)
        c_n = np.empty_like(c0)
        lstm_forward(x, w_ih.T, w_hh.T, b_ih + b_hh, h0, c0, lengths, reverse, n_threads,
                     gates, h_prev, c_prev, tanh_c, out, h_n, c_n)
        return out, h_n, c_n, (gates, h_prev, c_prev, tanh_c)

    def backward(self, cache, x, w_ih, w_hh, lengths, reverse, d_out, d_hn, d_cn,
                 clip_hidden, n_threads, dw_ih, dw_hh, db_ih, db_hh):
        gates, h_prev, c_prev, tanh_c = cache
        d_gates = np.empty_like(gates)
        dx = np.empty_like(x)
        dh0 = np.empty_like(d_hn)
        dc0 = np.empty_like(d_cn)
        lstm_backward(x, w_ih, w_hh, lengths, reverse, n_threads, clip_hidden,
                      gates, h_prev, c_prev, tanh_c, d_out, d_hn, d_cn,
                      d_gates, dx, dh0, dc0, dw_ih, dw_hh, db_ih, db_hh)
        return dx, dh0, dc0


class GRUCell:
    n_gates = 3
    has_cell_state = False

    def forward(self, x, w_ih, w_hh, b_ih, b_hh, h0, c0, lengths, reverse, n_threads):
        n_steps, batch, hidden = x.shape[0] // h0.shape[0], h0.shape[0], h0.shape[1]
        gates = np.empty((n_steps, batch, 3 * hidden), dtype=x.dtype)
        hidden_n = np.empty((n_steps, batch, hidden), dtype=x.dtype)
        h_prev = np.empty_like(hidden_n)
        out = np.empty_like(hidden_n)
        h_n = np.empty_like(h0)
        gru_forward(x, w_ih.T, w_hh.T, b_ih, b_hh, h0, lengths, reverse, n_threads,
                    gates, hidden_n, h_prev, out, h_n)
        return out, h_n, None, (gates, hidden_n, h_prev)

    def backward(self, cache, x, w_ih, w_hh, lengths, reverse, d_out, d_hn, d_cn,
                 clip_hidden, n_threads, dw_ih, dw_hh, db_ih, db_hh):
        gates, hidden_n, h_prev = cache
        d_gates_x = np.empty_like(gates)
        d_gates_h = np.empty_like(gates)
        dx = np.empty_like(x)
        dh0 = np.empty_like(d_hn)
        gru_backward(x, w_ih, w_hh, lengths, reverse, n_threads, clip_hidden,
                     gates, hidden_n, h_prev, d_out, d_hn, d_gates_x, d_gates_h,
                     dx, dh0, dw_ih, dw_hh, db_ih, db_hh)
        return dx, dh0, None


CELLS = {
    "rnn_tanh": ElmanCell(use_relu=False),
    "rnn_relu": ElmanCell(use_relu=True),
    "lstm": LSTMCell(),
    "gru": GRUCell(),
}
