"""Runs one direction of one layer of a cell: allocates the kernel buffers and calls
the fused forward or BPTT kernel, the single-threaded variant when the plan
(_threads.Plan) has one thread.
Knows shapes and buffers, nothing of validation."""

import functools

import numpy as np

from . import _blas, _threads
from ._kernels import elman, gru, lstm
from ._kernels.sequence import fill_weight_blocks, fill_weight_blocks_parallel, product_scratch


def _recurrent_weight(w_hh):
    """W_hh^T (H, G) for the per-step products of a sequence of at least
    _MIN_STEPS_FOR_COPY steps. For a small W_hh, a row-major copy: BLAS runs the
    smallest per-step products up to twice as fast on it as on the transposed
    view (measured: (16, 32) x (32, 128) in 1.2 against 2.7 us). From about
    (32, 128) x (128, 512) on both layouts run alike."""
    if w_hh.size <= _SMALL_WEIGHT:
        return np.ascontiguousarray(w_hh.T)
    return w_hh.T


_SMALL_WEIGHT = 1 << 14
_MIN_STEPS_FOR_COPY = 16
_MIN_BLOCK = 32
_PARALLEL_COPY_SIZE = 1 << 18  # weights from about (1024, 256) up are copied by all threads


def _block_shape(rows, inner, columns):
    """(k, d) cutting a (rows, inner) x (inner, columns) product into blocks of
    rows * k * d within BLAS's small-matrix size: the fewest row chunks k of the
    weight (k divides inner) that admit a column width d >= _MIN_BLOCK (the widest
    dividing columns, or all columns); None if none does."""
    for k_chunks in range(1, inner + 1):
        if inner % k_chunks:
            continue
        k_width = inner // k_chunks
        if k_width < _MIN_BLOCK and k_chunks > 1:
            return None
        limit = _blas.SMALL_PRODUCT // max(1, rows * k_width)
        if columns <= limit:
            return k_width, columns
        for width in range(min(limit, columns // 2), _MIN_BLOCK - 1, -1):
            if columns % width == 0:
                return k_width, width
    return None


def _weight_blocks(w, rows, n_steps, blocked, threads=1):
    """The per-step product weight w (K, N) as contiguous blocks (n_k, n_n, k, d)
    for sequence.blocked_product, sized for `rows` rows per thread; (0, 0, K, 0)
    (no blocks) when the plan does not block, for a short sequence (one copy of
    the weight costs about one product) or when no block shape fits. `threads`
    copy a large weight."""
    inner, columns = w.shape
    if not blocked or n_steps < _MIN_STEPS_FOR_COPY:
        return _no_blocks(inner, w.dtype)
    shape = _block_shape(rows, inner, columns)
    if shape is None:
        return _no_blocks(inner, w.dtype)
    k_width, width = shape
    blocks = np.empty((inner // k_width, columns // width, k_width, width), dtype=w.dtype)
    # Not C-contiguous: W_hh^T, a view of the stored W_hh (any other layout is
    # made contiguous first).
    transposed = not w.flags.c_contiguous
    source = np.ascontiguousarray(w.T if transposed else w)
    if _fills_in_parallel(w, threads):
        fill_weight_blocks_parallel(source, transposed, blocks, threads)
    else:
        fill_weight_blocks(source, transposed, blocks, 0, source.shape[0])
    return blocks


def _fills_in_parallel(w, threads):
    return threads > 1 and w.size >= _PARALLEL_COPY_SIZE


@functools.lru_cache(maxsize=64)
def _no_blocks(inner, dtype):
    """The empty blocks array, shared (kernels never write to it): a streaming call
    skips allocating one."""
    return np.empty((0, 0, inner, 0), dtype=dtype)


def _step_weights(w_hh, n_steps, batch, plan):
    """(W_hh^T, its blocks) for the forward time loop: the kernels use the
    blocks when there are any, else W_hh^T (see _recurrent_weight). A short
    sequence (a streaming call) would pay a copy of the weight for a step or
    two: it takes the transposed view, with no blocks."""
    if n_steps < _MIN_STEPS_FOR_COPY:
        weights = w_hh.T, _no_blocks(w_hh.shape[1], w_hh.dtype)
    else:
        blocks = _weight_blocks(w_hh.T, _rows_per_thread(batch, plan), n_steps, plan.blocked,
                                plan.threads)
        weights = (w_hh.T, blocks) if blocks.shape[0] else (_recurrent_weight(w_hh), blocks)
    if _threads.observing():
        _report("forward", w_hh, n_steps, batch, plan, *weights)
    return weights


def _backward_blocks(w_hh, d_out, plan):
    """Blocks of W_hh (G, H) for BPTT's per-step dh = dG W_hh."""
    n_steps, batch = d_out.shape[:2]
    blocks = _weight_blocks(w_hh, _rows_per_thread(batch, plan), n_steps, plan.blocked,
                            plan.threads)
    if _threads.observing():
        _report("backward", w_hh, n_steps, batch, plan, w_hh, blocks)
    return blocks


def _report(pass_name, w_hh, n_steps, batch, plan, step_weight, blocks):
    """Tells _threads.observed_runs which path one direction's kernel call takes:
    its plan, and its per-step product: "blocked" (weight blocks, `block_grid`
    row chunks x column blocks, copied by all threads if `parallel_fill`),
    "weight_major", "weight_copy" (a contiguous W_hh^T), "transposed_view", or
    "plain" (BPTT's unblocked product on W_hh itself)."""
    rows = _rows_per_thread(batch, plan)
    if blocks.shape[0]:
        product = "blocked"
    elif pass_name == "backward":
        product = "plain"
    elif product_scratch(np.empty((rows, w_hh.shape[1]), w_hh.dtype), w_hh.shape[0],
                         blocks)[1].shape[0]:
        product = "weight_major"
    elif step_weight.flags.c_contiguous:
        product = "weight_copy"
    else:
        product = "transposed_view"
    _threads.report_run({
        "pass": pass_name, "threads": plan.threads, "blocked": plan.blocked,
        "blas_threads": plan.blas_threads, "product": product,
        "block_grid": blocks.shape[:2],
        "parallel_fill": bool(blocks.shape[0]) and _fills_in_parallel(w_hh, plan.threads),
        "rows_per_thread": rows, "steps": n_steps, "batch": batch})


def _cache_array(n_steps, batch, width, dtype, keep):
    """A (T, B, width) array the forward kernel fills for BPTT; without `keep`
    (inference) an empty (0, B, width) one, which tells the kernel to skip it."""
    return np.empty((n_steps if keep else 0, batch, width), dtype=dtype)


def _rows_per_thread(batch, plan):
    return -(-batch // plan.threads)


class ElmanCell:
    n_gates = 1
    has_cell_state = False

    def __init__(self, use_relu):
        self.use_relu = use_relu

    def forward(self, x, w_ih, w_hh, b_ih, b_hh, h0, c0, lengths, reverse, plan, keep, h_n, c_n):
        n_steps, batch, hidden = x.shape[0] // h0.shape[0], h0.shape[0], h0.shape[1]
        gates = np.empty((n_steps, batch, hidden), dtype=x.dtype)
        h_prev = _cache_array(n_steps, batch, hidden, x.dtype, keep)
        out = np.empty_like(gates)
        buffers = (gates, h_prev, out, h_n)
        inputs = (x, w_ih.T, *_step_weights(w_hh, n_steps, batch, plan),
                  b_ih + b_hh, h0, lengths, reverse, self.use_relu)
        n_threads = plan.threads
        if n_threads == 1:
            elman.elman_forward_serial(*inputs, *buffers)
        else:
            elman.elman_forward(*inputs, n_threads, *buffers)
        return out, (gates, h_prev) if keep else None

    def backward(self, cache, x, w_ih, w_hh, lengths, reverse, d_out, d_hn, d_cn,
                 clip_hidden, plan, dw_ih, dw_hh, db_ih, db_hh):
        gates, h_prev = cache
        dx = np.empty_like(x)
        dh0 = np.empty_like(d_hn)
        arrays = (gates, h_prev, d_out, d_hn, np.empty_like(gates), dx, dh0,
                  dw_ih, dw_hh, db_ih, db_hh)
        w_hh_blocks = _backward_blocks(w_hh, d_out, plan)
        n_threads = plan.threads
        if n_threads == 1:
            elman.elman_backward_serial(x, w_ih, w_hh, w_hh_blocks, lengths, reverse, self.use_relu,
                                        clip_hidden, *arrays)
        else:
            elman.elman_backward(x, w_ih, w_hh, w_hh_blocks, lengths, reverse, self.use_relu, n_threads,
                                 clip_hidden, *arrays)
        return dx, dh0, None


class LSTMCell:
    n_gates = 4
    has_cell_state = True

    def forward(self, x, w_ih, w_hh, b_ih, b_hh, h0, c0, lengths, reverse, plan, keep, h_n, c_n):
        n_steps, batch, hidden = x.shape[0] // h0.shape[0], h0.shape[0], h0.shape[1]
        gates = np.empty((n_steps, batch, 4 * hidden), dtype=x.dtype)
        h_prev = _cache_array(n_steps, batch, hidden, x.dtype, keep)
        c_prev = _cache_array(n_steps, batch, hidden, x.dtype, keep)
        tanh_c = _cache_array(n_steps, batch, hidden, x.dtype, keep)
        out = np.empty((n_steps, batch, hidden), dtype=x.dtype)
        buffers = (gates, h_prev, c_prev, tanh_c, out, h_n, c_n)
        inputs = (x, w_ih.T, *_step_weights(w_hh, n_steps, batch, plan),
                  b_ih + b_hh, h0, c0, lengths, reverse)
        n_threads = plan.threads
        if n_threads == 1:
            lstm.lstm_forward_serial(*inputs, *buffers)
        else:
            lstm.lstm_forward(*inputs, n_threads, *buffers)
        return out, (gates, h_prev, c_prev, tanh_c) if keep else None

    def backward(self, cache, x, w_ih, w_hh, lengths, reverse, d_out, d_hn, d_cn,
                 clip_hidden, plan, dw_ih, dw_hh, db_ih, db_hh):
        gates, h_prev, c_prev, tanh_c = cache
        dx = np.empty_like(x)
        dh0 = np.empty_like(d_hn)
        dc0 = np.empty_like(d_cn)
        arrays = (gates, h_prev, c_prev, tanh_c, d_out, d_hn, d_cn, np.empty_like(gates),
                  dx, dh0, dc0, dw_ih, dw_hh, db_ih, db_hh)
        w_hh_blocks = _backward_blocks(w_hh, d_out, plan)
        n_threads = plan.threads
        if n_threads == 1:
            lstm.lstm_backward_serial(x, w_ih, w_hh, w_hh_blocks, lengths, reverse,
                                      clip_hidden, *arrays)
        else:
            lstm.lstm_backward(x, w_ih, w_hh, w_hh_blocks, lengths, reverse, n_threads,
                               clip_hidden, *arrays)
        return dx, dh0, dc0


class GRUCell:
    n_gates = 3
    has_cell_state = False

    def forward(self, x, w_ih, w_hh, b_ih, b_hh, h0, c0, lengths, reverse, plan, keep, h_n, c_n):
        n_steps, batch, hidden = x.shape[0] // h0.shape[0], h0.shape[0], h0.shape[1]
        gates = np.empty((n_steps, batch, 3 * hidden), dtype=x.dtype)
        hidden_n = _cache_array(n_steps, batch, hidden, x.dtype, keep)
        h_prev = _cache_array(n_steps, batch, hidden, x.dtype, keep)
        out = np.empty((n_steps, batch, hidden), dtype=x.dtype)
        buffers = (gates, hidden_n, h_prev, out, h_n)
        inputs = (x, w_ih.T, *_step_weights(w_hh, n_steps, batch, plan),
                  b_ih, b_hh, h0, lengths, reverse)
        n_threads = plan.threads
        if n_threads == 1:
            gru.gru_forward_serial(*inputs, *buffers)
        else:
            gru.gru_forward(*inputs, n_threads, *buffers)
        return out, (gates, hidden_n, h_prev) if keep else None

    def backward(self, cache, x, w_ih, w_hh, lengths, reverse, d_out, d_hn, d_cn,
                 clip_hidden, plan, dw_ih, dw_hh, db_ih, db_hh):
        gates, hidden_n, h_prev = cache
        dx = np.empty_like(x)
        dh0 = np.empty_like(d_hn)
        arrays = (gates, hidden_n, h_prev, d_out, d_hn, np.empty_like(gates),
                  dx, dh0, dw_ih, dw_hh, db_ih, db_hh)
        w_hh_blocks = _backward_blocks(w_hh, d_out, plan)
        n_threads = plan.threads
        if n_threads == 1:
            gru.gru_backward_serial(x, w_ih, w_hh, w_hh_blocks, lengths, reverse,
                                 clip_hidden, *arrays)
        else:
            gru.gru_backward(x, w_ih, w_hh, w_hh_blocks, lengths, reverse, n_threads,
                          clip_hidden, *arrays)
        return dx, dh0, None


CELLS = {
    "rnn_tanh": ElmanCell(use_relu=False),
    "rnn_relu": ElmanCell(use_relu=True),
    "lstm": LSTMCell(),
    "gru": GRUCell(),
}
