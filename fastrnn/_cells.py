"""Runs one direction of one layer of any cell (fastrnn.cells): prepares the
per-step product's weights, allocates the kernel buffers from the cell's spec and
calls its fused forward or BPTT kernel, the single-threaded variant when the plan
(_threads.Plan) has one thread. Knows shapes and buffers, nothing of validation."""

import functools

import numpy as np

from . import _blas, _threads
from ._kernels.engine import dot_chunk_address, grads_chunk_address
from ._kernels.sequence import fill_weight_blocks, fill_weight_blocks_parallel, product_scratch
from .cells import SPECS


def _recurrent_weight(w_hh):
    """W_hh^T (H, G) for the unblocked per-step products of a sequence of at
    least _MIN_STEPS_FOR_COPY steps: for a small W_hh a row-major copy, on which
    BLAS runs the smallest products faster than on the transposed view; else
    the empty (0, G), which tells the kernels to use the transposed view (larger
    products run alike on both)."""
    if w_hh.size <= _SMALL_WEIGHT:
        return np.ascontiguousarray(w_hh.T)
    return _empty((0, w_hh.shape[0]), w_hh.dtype)


_SMALL_WEIGHT = 1 << 14
_MIN_STEPS_FOR_COPY = 16
_MIN_BLOCK = 32
_COMPILED_FILL_SIZE = 1 << 17  # smaller weights numpy copies as fast: no kernel to compile
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
    the weight costs about one product) or when no block shape fits. numpy
    copies a small weight, the compiled kernel a larger one (on all `threads`
    for the largest; see _weight_fill)."""
    inner, columns = w.shape
    if not blocked or n_steps < _MIN_STEPS_FOR_COPY:
        return _no_blocks(inner, w.dtype)
    shape = _block_shape(rows, inner, columns)
    if shape is None:
        return _no_blocks(inner, w.dtype)
    k_width, width = shape
    blocks = np.empty((inner // k_width, columns // width, k_width, width), dtype=w.dtype)
    fill = _weight_fill(w, threads)
    if fill == "numpy":
        np.copyto(blocks, w.reshape(blocks.shape[0], k_width, blocks.shape[1], width)
                  .transpose(0, 2, 1, 3))
        return blocks
    # Not C-contiguous: W_hh^T, a view of the stored W_hh (any other layout is
    # made contiguous first).
    transposed = not w.flags.c_contiguous
    source = np.ascontiguousarray(w.T if transposed else w)
    if fill == "parallel":
        fill_weight_blocks_parallel(source, transposed, blocks, threads)
    else:
        fill_weight_blocks(source, transposed, blocks, 0, source.shape[0])
    return blocks


def _weight_fill(w, threads):
    """Who copies w into its blocks: "numpy", the "compiled" kernel or its
    "parallel" variant."""
    if w.size < _COMPILED_FILL_SIZE:
        return "numpy"
    return "parallel" if threads > 1 and w.size >= _PARALLEL_COPY_SIZE else "compiled"


def _no_blocks(inner, dtype):
    return _empty((0, 0, inner, 0), dtype)


@functools.lru_cache(maxsize=256)
def _empty(shape, dtype):
    """An empty array, shared (kernels never write to it): a streaming call skips
    allocating one."""
    return np.empty(shape, dtype=dtype)


def _step_weights(w_hh, n_steps, batch, plan):
    """(W_hh^T copy, blocks) for the forward time loop: the kernels use the blocks
    when there are any, else the copy, else (both empty) the transposed view. A
    short sequence (a streaming call) would pay a copy of the weight for a step
    or two: it takes the transposed view."""
    if n_steps < _MIN_STEPS_FOR_COPY:
        weights = (_empty((0, w_hh.shape[0]), w_hh.dtype),
                   _no_blocks(w_hh.shape[1], w_hh.dtype))
    else:
        blocks = _weight_blocks(w_hh.T, _rows_per_thread(batch, plan), n_steps, plan.blocked,
                                plan.threads)
        weights = (_empty((0, w_hh.shape[0]), w_hh.dtype) if blocks.shape[0]
                   else _recurrent_weight(w_hh), blocks)
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
    row chunks x column blocks, copied by `fill` (see _weight_fill)),
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
    elif step_weight.shape[0]:
        product = "weight_copy"
    else:
        product = "transposed_view"
    _report_run(pass_name, plan, product, n_steps, batch, rows, block_grid=blocks.shape[:2],
                fill=_weight_fill(w_hh, plan.threads) if blocks.shape[0] else None)


def _report_run(pass_name, plan, product, n_steps, batch, rows_per_thread, **details):
    _threads.report_run({
        "pass": pass_name, "threads": plan.threads, "blocked": plan.blocked,
        "blas_threads": plan.blas_threads, "product": product, "rows_per_thread": rows_per_thread,
        "steps": n_steps, "batch": batch, **details})


def _cache_array(n_steps, batch, width, dtype, keep):
    """A (T, B, width) array the forward kernel fills for BPTT; without `keep`
    (inference) an empty (0, B, width) one, which tells the kernel to skip it."""
    return np.empty((n_steps if keep else 0, batch, width), dtype=dtype)


def _rows_per_thread(batch, plan):
    return -(-batch // plan.threads)


_MIN_UNIT_WIDTH = 16


def unit_blocks(hidden, threads):
    """How many blocks of units the unit split cuts H into on `threads` threads:
    the most, at most `threads`, that divide H into blocks of at least
    _MIN_UNIT_WIDTH units; 1 (no split) where none does."""
    for n_blocks in range(min(threads, hidden // _MIN_UNIT_WIDTH), 1, -1):
        if hidden % n_blocks == 0:
            return n_blocks
    return 1


def _unit_order(vector_or_rows, n_gates, n_blocks):
    """Gate rows (or bias values) reordered from gate-major (g, unit) to the unit
    split's block-major (block, g, unit in block)."""
    rows = vector_or_rows.shape[0]
    width = rows // (n_gates * n_blocks)
    tail = vector_or_rows.shape[1:]
    return np.ascontiguousarray(
        vector_or_rows.reshape(n_gates, n_blocks, width, *tail).swapaxes(0, 1)
    ).reshape(rows, *tail)


def _batch_order(blocked, n_values):
    """The inverse of _unit_order for a sequence's per-step values: (T, n, V*w),
    block k's V blocks of its w units in row k, to the batch layout (T, 1, V*H)
    (value block v of all H units together)."""
    n_steps, n_blocks, row = blocked.shape
    width = row // n_values if n_values else 0
    return np.ascontiguousarray(
        blocked.reshape(n_steps, n_blocks, n_values, width).swapaxes(1, 2)
    ).reshape(n_steps, 1, n_values * n_blocks * width)


class CellRunner:
    """Runs one cell kind's kernels (see fastrnn.cells for the spec)."""

    def __init__(self, spec):
        self.spec = spec
        self.n_gates = spec.n_gates
        self.has_cell_state = spec.has_cell_state

    def forward(self, x, w_ih, w_hh, b_ih, b_hh, h0, c0, lengths, reverse, plan, keep, h_n,
                c_n):
        """One direction over the whole sequence; x (T*B, I), h0 (B, H), c0 (B, H) or
        None, h_n and c_n (or None) the rows to write the final state into.
        Returns (out (T, B, H), the cache for backward or None without `keep`)."""
        spec = self.spec
        batch, hidden = h0.shape
        n_steps = x.shape[0] // batch
        dtype = x.dtype
        if plan.split_units and batch == 1 and spec.splits_units:
            n_blocks = unit_blocks(hidden, plan.threads)
            if n_blocks > 1 and n_steps >= _MIN_STEPS_FOR_COPY:
                return self._forward_units(x, w_ih, w_hh, b_ih, b_hh, h0, c0, lengths, reverse,
                                           plan, n_blocks, keep, h_n, c_n)
        gates = np.empty((n_steps, batch, spec.n_gates * hidden), dtype=dtype)
        h_prev = _cache_array(n_steps, batch, hidden, dtype, keep)
        extra = _cache_array(n_steps, batch, spec.cache_width * hidden, dtype, keep)
        out = np.empty((n_steps, batch, hidden), dtype=dtype)
        c0, c_n = self._cell_state(c0, c_n, batch, hidden, dtype)
        x = np.ascontiguousarray(x)
        arguments = (x, w_ih, w_hh, *_step_weights(w_hh, n_steps, batch, plan), b_ih + b_hh,
                     b_ih, b_hh, np.ascontiguousarray(h0), c0, lengths, reverse, plan.threads,
                     gates, h_prev, extra, out, h_n, c_n, _empty((0, 0), dtype),
                     _empty((0,), np.int64))
        kernels = spec.kernels
        addresses = (kernels.rows("forward", dtype, arguments), dot_chunk_address(dtype))
        if plan.threads == 1:
            kernels.forward_serial(*addresses, *arguments)
        else:
            kernels.forward_parallel(*addresses, *arguments)
        return out, (gates, h_prev, extra) if keep else None

    def _forward_units(self, x, w_ih, w_hh, b_ih, b_hh, h0, c0, lengths, reverse, plan,
                       n_blocks, keep, h_n, c_n):
        """`forward` of one sequence with its hidden units split into n_blocks
        blocks, one a thread (engine._forward_unit_rows)."""
        spec = self.spec
        hidden = h0.shape[1]
        n_steps = x.shape[0]
        dtype = x.dtype
        width = hidden // n_blocks
        g_width = spec.n_gates * width
        extra_width = spec.cache_width * width
        c0, c_n = self._cell_state(c0, c_n, 1, hidden, dtype)
        state_width = c0.shape[1] // n_blocks
        unit_state = np.empty((n_blocks, g_width + width + state_width), dtype=dtype)
        unit_state[:, g_width:g_width + width] = h0.reshape(n_blocks, width)
        unit_state[:, g_width + width:] = c0.reshape(n_blocks, state_width)
        in_order = functools.partial(_unit_order, n_gates=spec.n_gates, n_blocks=n_blocks)
        out = np.empty((n_steps, 1, hidden), dtype=dtype)
        gates = np.empty((n_steps, n_blocks, g_width), dtype=dtype)
        extra = np.empty((n_steps if keep else 0, n_blocks, extra_width), dtype=dtype)
        h0 = np.ascontiguousarray(h0)
        arguments = (np.ascontiguousarray(x), in_order(w_ih), w_hh,
                     _empty((0, w_hh.shape[0]), dtype), _no_blocks(hidden, dtype),
                     in_order(b_ih + b_hh), in_order(b_ih), in_order(b_hh), h0, c0, lengths,
                     reverse, plan.threads, gates, _empty((0, 1, hidden), dtype), extra,
                     out, h_n, c_n, unit_state, np.zeros(n_blocks + 1, dtype=np.int64))
        if _threads.observing():
            _report_run("forward", plan, "unit_split", n_steps, 1, 1, block_grid=(0, 0),
                        fill=None, unit_blocks=n_blocks)
        kernels = spec.kernels
        kernels.forward_parallel(kernels.rows("forward_units", dtype, arguments),
                                 dot_chunk_address(dtype), *arguments)
        if not keep:
            return out, None
        # BPTT's caches in the batch layout, h_{t-1} taken from the outputs.
        n_valid = int(lengths[0])
        h_prev = np.zeros((n_steps, 1, hidden), dtype=dtype)
        if reverse:
            h_prev[n_valid - 1] = h0
            h_prev[:n_valid - 1] = out[1:n_valid]
        else:
            h_prev[0] = h0
            h_prev[1:n_valid] = out[:n_valid - 1]
        return out, (_batch_order(gates, spec.n_gates), h_prev,
                     _batch_order(extra, spec.cache_width))

    def backward(self, cache, x, w_ih, w_hh, lengths, reverse, d_out, d_hn, d_cn,
                 clip_hidden, plan, dw_ih, dw_hh, db_ih, db_hh):
        """BPTT of one direction; accumulates into dw_ih .. db_hh. Returns
        (dx (T*B, I), dh0 (B, H), dc0 (B, H) or None)."""
        gates, h_prev, extra = cache
        batch, hidden = d_hn.shape
        x = np.ascontiguousarray(x)
        dx = np.empty_like(x)
        dh0 = np.empty_like(d_hn)
        d_cn, dc0 = self._cell_state(d_cn, None, batch, hidden, x.dtype)
        arguments = (x, w_ih, w_hh, _backward_blocks(w_hh, d_out, plan), lengths, reverse,
                     plan.threads, clip_hidden, gates, h_prev, extra, d_out,
                     np.ascontiguousarray(d_hn), d_cn, np.empty_like(gates), dx, dh0, dc0,
                     dw_ih, dw_hh, db_ih, db_hh)
        kernels = self.spec.kernels
        addresses = (kernels.rows("backward", x.dtype, arguments), dot_chunk_address(x.dtype),
                     grads_chunk_address(x.dtype))
        if plan.threads == 1:
            kernels.backward_serial(*addresses, *arguments)
        else:
            kernels.backward_parallel(*addresses, *arguments)
        return dx, dh0, dc0 if self.has_cell_state else None

    def _cell_state(self, state, target, batch, hidden, dtype):
        """(the cell state, the array the kernel writes the final one into): the
        caller's for a cell with a cell state (target None: a new one), else
        empty (B, 0) arrays."""
        if not self.has_cell_state:
            empty = _empty((batch, 0), dtype)
            return empty, empty
        return np.ascontiguousarray(state), np.empty_like(state) if target is None else target


CELLS = {name: CellRunner(spec) for name, spec in SPECS.items()}
