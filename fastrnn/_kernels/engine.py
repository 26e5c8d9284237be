"""The one recurrent engine: the sequence drivers, written once, made into each
cell's compiled kernels.

A driver runs one direction of one layer: the whole-sequence input GEMM, the
time loop with the per-step recurrent product (blocked, weight-major or plain,
see sequence.recurrent_product), lengths and direction, BPTT with the in-loop
hidden-gradient clip, and the whole-sequence weight-gradient GEMMs, with the
batch split across threads. What differs between cells is only the element-wise
gate math of one time step, which a cell module provides as two functions
(see fastrnn/cells/__init__.py for their contract):

    forward_step(t, start, stop, lengths, one, gates, recurrent, bias, b_ih, b_hh,
                 h, c, extra, keep, out, w_hh, scratch)
    backward_step(t, start, stop, lengths, one, d_total, gates, h_prev, extra,
                  d_gates, d_hidden, dh, dc, w_hh, scratch)

and `recurrent_grads(d_gates, gates)`, which turns the input-side gate gradients
into the recurrent side's in place (a no-op where they are the same).

`instantiate` compiles the templates below against one cell's functions: each
template's code is bound to a namespace holding that cell's functions and given
a name of its own, so numba caches each cell's kernels on disk in files of their
own. The serial and the parallel variants come from the same template (they
differ in the launcher they are bound to). numba's cache checks only the template
file's date, not the modules a kernel calls, so the names carry a hash of the
kernel sources and of the cell's module: editing either compiles afresh.

The drivers hold no parallel loop of their own: they run the cell's time loop
(_forward_rows, _backward_rows), the input products' row chunks and the weight
gradients' chunks through native.launch_serial or launch_parallel, each as a chunk
entry (_chunk_entry: the chunk kernel inlined, its arguments packed) whose
address the Python caller passes (see native.py). Each is compiled once, on first
use; the forward drivers then hold nothing of a cell's, and all cells share them.
"""

import functools
import glob
import hashlib
import os
import types

import numba
import numpy as np
from numba.core import types as numba_types

from ._jit import (
    borrowing_helper,
    called_by_address,
    helper,
    inlined,
    jit,
    prefer_vector_width,
    renamed,
)
from .atomics import atomic_add, atomic_load, compare_and_swap, spin_pause
from .gemm import matmul, row_times_row_blocks
from .native import argument_types, compiled_address, launch_parallel, launch_serial, pack, unpack
from .sequence import (
    add_column_sums,
    batch_chunks,
    blocked_product,
    chunk_bounds,
    clamp,
    copy_columns,
    copy_rows,
    is_narrow,
    narrow_rows_dot,
    narrow_weight_gradient,
    product_scratch,
    recurrent_product,
    time_index,
)

# What the templates call that `instantiate` binds, named here only: the cell's
# step functions; RECURRENT_GRADS_DIFFER (the cell writes d_hidden, its
# recurrent-side gate gradients, which differ from the input side's);
# DIRECT_STATE_PATH (backward_step writes the part of dh that does not go
# through W_hh, to which the driver adds dG W_hh; without one dh is dG W_hh);
# SCRATCH_COUNT, the (rows, H) scratch buffers the step functions get;
# GATED_STATE_BLOCKS, the trailing gate blocks whose W_hh rows multiply the
# gated state the cell keeps as its extra cache (the classic GRU's r * h_{t-1})
# instead of h_{t-1}, which their weight gradient is taken against;
# FORWARD_VECTOR_WIDTH, the register width (bits, 0: the CPU's default) LLVM
# vectorises the forward time loop with;
# rows_dot, param_grads and launch (native.launch_serial or launch_parallel), the
# serial or the parallel variant; in a chunk entry (_chunk_entry), TARGET, the
# chunk kernel it runs, and PAYLOAD, the numba type of that kernel's packed
# arguments.
cell_forward_step = cell_backward_step = cell_recurrent_grads = None
rows_dot = param_grads = launch = TARGET = PAYLOAD = None
RECURRENT_GRADS_DIFFER = DIRECT_STATE_PATH = False
N_GATES = CACHE_WIDTH = SCRATCH_COUNT = GATED_STATE_BLOCKS = FORWARD_VECTOR_WIDTH = 0


def _forward_rows(chunk, n_chunks, w_hh, w_hh_t, w_blocks, bias, b_ih, b_hh, h0, c0, lengths,
                  reverse, one, gates, h_prev, extra, out, h_n, c_n, unit_state, claims):
    """The time loop of the batch rows of slice `chunk` of n_chunks (unit_state
    and claims are the unit split's: see _forward_unit_rows)."""
    prefer_vector_width(FORWARD_VECTOR_WIDTH)
    n_steps = gates.shape[0]
    start, stop = chunk_bounds(chunk, n_chunks, gates.shape[1])
    keep = h_prev.shape[0] > 0
    h = h0[start:stop].copy()
    c = c0[start:stop].copy()
    recurrent = np.empty((stop - start, gates.shape[2]), dtype=gates.dtype)
    scratch = product_scratch(h, gates.shape[2], w_blocks)
    cell_scratch = np.empty((SCRATCH_COUNT, stop - start, h.shape[1]), dtype=gates.dtype)
    for step in range(n_steps):
        t = time_index(step, n_steps, reverse)
        if keep:
            copy_rows(h, h_prev[t], start)
        recurrent_product(h, w_hh, w_hh_t, w_blocks, recurrent, scratch)
        cell_forward_step(t, start, stop, lengths, one, gates, recurrent, bias,
                          b_ih, b_hh, h, c, extra, keep, out, w_hh, cell_scratch)
        for row in range(stop - start):
            if t >= lengths[start + row]:
                out[t, start + row] = 0.0
    copy_rows(h, h_n, start)
    copy_rows(c, c_n, start)


def _forward(rows, dot_chunk, x, w_ih, w_hh, w_hh_t, w_blocks, bias, b_ih, b_hh, h0, c0, lengths,
             reverse, n_threads, gates, h_prev, extra, out, h_n, c_n, unit_state, claims):
    """Forward over the whole sequence; `rows` is the address of the cell's
    time loop (_forward_rows compiled for these arguments: CellKernels.rows),
    `dot_chunk` that of _rows_dot_chunk (dot_chunk_address).

    x (T*B, I); w_ih (G, I), w_hh (G, H) as stored; w_hh_t a contiguous W_hh^T
    (H, G) or empty (0, G) to use the transposed view; w_blocks the per-step
    product's weight blocks or none (see sequence.blocked_product); bias =
    b_ih + b_hh; h0 (B, H), c0 (B, S) (S = 0 for cells without a cell state).
    Fills gates (T, B, G), out (T, B, H), h_n, c_n and, for BPTT (else they are
    empty (0, B, .)), h_prev (T, B, H) and the cell's extra cache (T, B, E).
    unit_state and claims are empty, except for the unit split's time loop
    (_forward_unit_rows), whose arguments differ as it says.
    """
    batch = gates.shape[1]
    one = gates.dtype.type(1.0)  # keeps float32 arithmetic in float32
    # Input projection of every step at once: one GEMM before the time loop.
    rows_dot(x, w_ih, gates.reshape(x.shape[0], w_ih.shape[0]), True, n_threads, dot_chunk)
    launch(rows, batch_chunks(n_threads, batch),
           pack((w_hh, w_hh_t, w_blocks, bias, b_ih, b_hh, h0, c0, lengths, reverse, one, gates,
                 h_prev, extra, out, h_n, c_n, unit_state, claims)))


def _forward_unit_rows(chunk, n_chunks, w_hh, w_hh_t, w_blocks, bias, b_ih, b_hh, h0, c0,
                       lengths, reverse, one, gates, h_prev, extra, out, h_n, c_n, unit_state,
                       claims):
    """The time loop of one sequence (B = 1) with its H hidden units
    split into n_chunks blocks of w = H / n_chunks: each thread keeps its block's
    share of W_hh in its own cache for the whole sequence, where the batch split
    has one thread read all of it every step.

    The arguments are _forward's for the blocks as batch rows: gates (T, n, G*w),
    block k's gate columns in row k (the gate blocks of its units side by side);
    bias, b_ih, b_hh (n*G*w,) in that order; extra (T, n, E*w) for BPTT (else
    empty (0, n, .)) likewise, block k's cache of its units in row k. w_hh
    (G*H, H), h0, c0, lengths, out (T, 1, H), h_n and c_n are the sequence's
    own (w_hh_t, w_blocks and h_prev go unused: each block multiplies its rows
    of W_hh as stored, and h_{t-1} is out's previous step). unit_state
    (n, G*w + w + S*w) holds each block's per-step product, h and c (S = 0 or 1
    blocks of cell state), its h and c set to h0's and c0's units; claims
    (n + 1,) int64 zeros is the hand-over: claims[0] counts the block steps
    done, claims[1 + k] the steps of block k taken.

    Thread `chunk` takes its own block's steps in order. A step of a block needs
    all blocks' previous step (their units of h_{t-1}); a thread that waits for
    them takes and does any block's step not yet taken, so the loop finishes
    even where the threads run one after another.
    """
    prefer_vector_width(FORWARD_VECTOR_WIDTH)
    n_valid = lengths[0]
    width = h0.shape[1] // n_chunks
    block_lengths = np.empty(n_chunks, dtype=np.int64)
    for block in range(n_chunks):
        block_lengths[block] = n_valid
    cell_scratch = np.empty((SCRATCH_COUNT, 1, width), dtype=gates.dtype)
    block_out = out.reshape(out.shape[0], n_chunks, width)
    for step in range(n_valid):
        if compare_and_swap(claims, 1 + chunk, step, step + 1):
            _await_unit_step(step - 1, n_valid, reverse, one, width, w_hh, bias, b_ih,
                             b_hh, h0, block_lengths, gates, extra, out, block_out, unit_state,
                             claims, cell_scratch)
            _unit_block_step(chunk, step, n_valid, reverse, one, width, w_hh, bias,
                             b_ih, b_hh, h0, block_lengths, gates, extra, out, block_out,
                             unit_state, claims, cell_scratch)
    _await_unit_step(n_valid - 1, n_valid, reverse, one, width, w_hh, bias, b_ih, b_hh,
                     h0, block_lengths, gates, extra, out, block_out, unit_state, claims,
                     cell_scratch)
    first = chunk * width
    g_width = N_GATES * width
    for j in range(width):
        h_n[0, first + j] = unit_state[chunk, g_width + j]
    for j in range(c_n.shape[1] // n_chunks):
        c_n[0, first + j] = unit_state[chunk, g_width + width + j]
    for t in range(n_valid, out.shape[0]):
        for j in range(width):
            out[t, 0, first + j] = 0.0


def _await_unit_step(step, n_valid, reverse, one, width, w_hh, bias, b_ih, b_hh, h0,
                     block_lengths, gates, extra, out, block_out, unit_state, claims,
                     cell_scratch):
    """Returns once every block has done `step` (none for step -1), doing the
    blocks' steps not yet taken meanwhile (only once `step - 1` is done)."""
    n_blocks = block_lengths.shape[0]
    target = (step + 1) * n_blocks
    while True:
        done = atomic_load(claims, 0)
        if done >= target:
            return
        if done >= step * n_blocks:
            for block in range(n_blocks):
                if compare_and_swap(claims, 1 + block, step, step + 1):
                    _unit_block_step(block, step, n_valid, reverse, one, width, w_hh,
                                     bias, b_ih, b_hh, h0, block_lengths, gates, extra, out,
                                     block_out, unit_state, claims, cell_scratch)
        spin_pause()


def _unit_block_step(block, step, n_valid, reverse, one, width, w_hh, bias, b_ih, b_hh,
                     h0, block_lengths, gates, extra, out, block_out, unit_state, claims,
                     cell_scratch):
    """Step `step` of one block of units (see _forward_unit_rows): its gates'
    share of h_{t-1} W_hh^T, the cell's gate math on its units, then counted done."""
    prefer_vector_width(FORWARD_VECTOR_WIDTH)
    hidden = h0.shape[1]
    g_width = N_GATES * width
    t = time_index(step, n_valid, reverse)
    state = unit_state[block]
    recurrent = state[:g_width].reshape(1, g_width)
    # Gate g's rows of this block's units in W_hh (G*H, H) as stored: g*H + block*w on.
    if step == 0:
        row_times_row_blocks(h0, 0, w_hh, block * width, hidden, width, N_GATES, state, 0)
    else:
        previous = time_index(step - 1, n_valid, reverse)
        row_times_row_blocks(out, previous * hidden, w_hh, block * width, hidden, width, N_GATES,
                             state, 0)
    c_width = unit_state.shape[1] - g_width - width
    span = slice(block * g_width, (block + 1) * g_width)
    cell_forward_step(t, block, block + 1, block_lengths, one, gates, recurrent, bias[span],
                      b_ih[span], b_hh[span], state[g_width:g_width + width].reshape(1, width),
                      state[g_width + width:].reshape(1, c_width), extra, extra.shape[0] > 0,
                      block_out, w_hh, cell_scratch)
    atomic_add(claims, 0, 1)


def _backward_rows(chunk, n_chunks, w_hh, w_hh_blocks, lengths, reverse, one, bound, gates,
                   h_prev, extra, d_out, d_hn, d_cn, d_gates, dh0, dc0):
    """The reverse time loop of the batch rows of slice `chunk` of n_chunks."""
    n_steps = gates.shape[0]
    start, stop = chunk_bounds(chunk, n_chunks, gates.shape[1])
    rows = stop - start
    hidden = d_hn.shape[1]
    dh = d_hn[start:stop].copy()
    dc = d_cn[start:stop].copy()
    d_total = np.empty_like(dh)
    recurrent = np.empty_like(dh)
    cell_scratch = np.empty((SCRATCH_COUNT, rows, hidden), dtype=gates.dtype)
    # This slice's recurrent-side gate gradients at one step, for cells whose
    # differ from the input side's (kept for the whole sequence in d_gates).
    d_hidden = np.zeros((rows, gates.shape[2] if RECURRENT_GRADS_DIFFER else 0),
                        dtype=gates.dtype)
    for back_step in range(n_steps):
        t = time_index(n_steps - 1 - back_step, n_steps, reverse)
        for row in range(rows):
            b = start + row
            if t >= lengths[b]:
                d_gates[t, b] = 0.0
                for k in range(d_hidden.shape[1]):
                    d_hidden[row, k] = 0.0
                continue
            for j in range(hidden):  # dL/dh_t, clipped
                d_total[row, j] = clamp(dh[row, j] + d_out[t, b, j], bound)
        cell_backward_step(t, start, stop, lengths, one, d_total, gates, h_prev,
                           extra, d_gates, d_hidden, dh, dc, w_hh, cell_scratch)
        # dh_{t-1} (+)= dG_t W_hh; padded rows have dG = 0 and keep their dh.
        if RECURRENT_GRADS_DIFFER:
            blocked_product(d_hidden, w_hh, w_hh_blocks, recurrent)
        else:
            blocked_product(d_gates[t, start:stop], w_hh, w_hh_blocks, recurrent)
        for row in range(rows):
            if t < lengths[start + row]:
                if DIRECT_STATE_PATH:
                    for j in range(hidden):
                        dh[row, j] += recurrent[row, j]
                else:
                    for j in range(hidden):
                        dh[row, j] = recurrent[row, j]
    copy_rows(dh, dh0, start)
    copy_rows(dc, dc0, start)


def _backward(rows, dot_chunk, grads_chunk, x, w_ih, w_hh, w_hh_blocks, lengths, reverse,
              n_threads, clip_hidden, gates, h_prev, extra, d_out, d_hn, d_cn, d_gates, dx, dh0,
              dc0, dw_ih, dw_hh, db_ih, db_hh):
    """BPTT over the whole sequence (caches from _forward); parameter gradients
    are accumulated. d_gates (T, B, G) is scratch; `rows` is the address of the
    cell's reverse time loop (_backward_rows, see CellKernels.rows), dot_chunk
    and grads_chunk those of _rows_dot_chunk and _param_grads_chunk
    (dot_chunk_address, grads_chunk_address)."""
    n_steps, batch, width = gates.shape
    one = gates.dtype.type(1.0)
    bound = gates.dtype.type(clip_hidden)
    launch(rows, batch_chunks(n_threads, batch),
           pack((w_hh, w_hh_blocks, lengths, reverse, one, bound, gates, h_prev, extra, d_out,
                 d_hn, d_cn, d_gates, dh0, dc0)))
    d_gates_2d = d_gates.reshape(n_steps * batch, width)
    rows_dot(d_gates_2d, w_ih, dx, False, n_threads, dot_chunk)
    param_grads(d_gates_2d, x, dw_ih, db_ih, n_threads, grads_chunk)
    cell_recurrent_grads(d_gates, gates)
    hidden = h_prev.shape[2]
    h_prev_2d = h_prev.reshape(n_steps * batch, hidden)
    if GATED_STATE_BLOCKS == 0:
        param_grads(d_gates_2d, h_prev_2d, dw_hh, db_hh, n_threads, grads_chunk)
    else:
        first = width - GATED_STATE_BLOCKS * hidden
        param_grads(copy_columns(d_gates_2d, 0, first), h_prev_2d, dw_hh[:first],
                    db_hh[:first], n_threads, grads_chunk)
        param_grads(copy_columns(d_gates_2d, first, width),
                    extra.reshape(n_steps * batch, hidden), dw_hh[first:], db_hh[first:],
                    n_threads, grads_chunk)


def _rows_dot(a, b, out, transpose, n_threads, chunk_address):
    """out = a @ b (a @ b.T if `transpose`) with the rows of a split across
    threads; `chunk_address` is _rows_dot_chunk's for these arrays (see
    dot_chunk_address)."""
    launch(chunk_address, max(1, min(n_threads, a.shape[0])), pack((a, b, out, transpose)))


def _rows_dot_chunk(chunk, n_chunks, a, b, out, transpose):
    start, stop = chunk_bounds(chunk, n_chunks, a.shape[0])
    if is_narrow(b):
        narrow_rows_dot(a[start:stop], b, out[start:stop], transpose)
    else:
        matmul(a[start:stop], b, out[start:stop], False, transpose, False)


def step_work_size(batch, input_size, hidden, n_gates, cache_width, scratch_count):
    """Size of a single-step cell's work buffer (see _step_views)."""
    width = n_gates * hidden
    return batch * (input_size + (2 + cache_width + scratch_count) * hidden + 4 * width) + width


def _step_views(work, batch, input_size, hidden):
    """A single-step cell's work buffer, in order: x and h as the call saw them,
    the gates (1, B, G), the extra cache (1, B, E), and scratch: the recurrent
    product (B, G), dL/dh (B, H), the input-side gate gradients (1, B, G), the
    recurrent side's (B, G), b_ih + b_hh (G,), and the cell's scratch."""
    width = N_GATES * hidden
    x_end = batch * input_size
    h_end = x_end + batch * hidden
    gates_end = h_end + batch * width
    extra_end = gates_end + batch * CACHE_WIDTH * hidden
    product_end = extra_end + batch * width
    d_h_end = product_end + batch * hidden
    d_gates_end = d_h_end + batch * width
    d_hidden_end = d_gates_end + batch * width
    bias_end = d_hidden_end + width
    scratch_end = bias_end + SCRATCH_COUNT * batch * hidden
    return (work[:x_end].reshape((batch, input_size)),
            work[x_end:h_end].reshape((batch, hidden)),
            work[h_end:gates_end].reshape((1, batch, width)),
            work[gates_end:extra_end].reshape((1, batch, CACHE_WIDTH * hidden)),
            work[extra_end:product_end].reshape((batch, width)),
            work[product_end:d_h_end].reshape((batch, hidden)),
            work[d_h_end:d_gates_end].reshape((1, batch, width)),
            work[d_gates_end:d_hidden_end].reshape((batch, width)),
            work[d_hidden_end:bias_end],
            work[bias_end:scratch_end].reshape((SCRATCH_COUNT, batch, hidden)))


def _param_views(params, input_size, hidden):
    width = N_GATES * hidden
    w_ih_end = width * input_size
    w_hh_end = w_ih_end + width * hidden
    return (params[:w_ih_end].reshape((width, input_size)),
            params[w_ih_end:w_hh_end].reshape((width, hidden)),
            params[w_hh_end:w_hh_end + width], params[w_hh_end + width:w_hh_end + 2 * width])


def _cell_forward(x, params, lengths, h, c, work, h1, c1):
    """One time step of the single-step cells: h1 (and c1) from x (B, I) and the
    state h (B, H), c (B, S). params holds W_ih, W_hh, b_ih, b_hh flat in that
    order; `work` (see _step_views) keeps what _cell_backward needs, and
    lengths (B,) are ones."""
    batch, input_size = x.shape
    hidden = h.shape[1]
    w_ih, w_hh, b_ih, b_hh = _param_views(params, input_size, hidden)
    x_kept, h_kept, gates, extra, recurrent, _, _, _, bias, scratch = _step_views(
        work, batch, input_size, hidden)
    copy_rows(x, x_kept, 0)
    copy_rows(h, h_kept, 0)
    copy_rows(h, h1, 0)
    copy_rows(c, c1, 0)
    for k in range(bias.shape[0]):
        bias[k] = b_ih[k] + b_hh[k]
    matmul(x, w_ih, gates[0], False, True, False)
    matmul(h, w_hh, recurrent, False, True, False)
    cell_forward_step(0, 0, batch, lengths, x.dtype.type(1.0), gates, recurrent, bias, b_ih,
                      b_hh, h1, c1, extra, True, h1.reshape((1, batch, hidden)), w_hh, scratch)


def _cell_backward(params, grads, lengths, d_h1, d_c1, work, input_size, dx, dh, dc):
    """BPTT through the last _cell_forward: dx, dh, dc from dL/dh1 and dL/dc1;
    accumulates the parameter gradients into grads (laid out as params)."""
    batch, hidden = d_h1.shape
    w_ih, w_hh, _, _ = _param_views(params, input_size, hidden)
    dw_ih, dw_hh, db_ih, db_hh = _param_views(grads, input_size, hidden)
    x_kept, h_kept, gates, extra, _, d_total, d_gates, d_hidden, _, scratch = _step_views(
        work, batch, input_size, hidden)
    copy_rows(d_h1, d_total, 0)
    copy_rows(d_c1, dc, 0)
    cell_backward_step(0, 0, batch, lengths, d_h1.dtype.type(1.0), d_total, gates,
                       h_kept.reshape((1, batch, hidden)), extra, d_gates, d_hidden, dh, dc,
                       w_hh, scratch)
    through_weight = d_total  # free once the cell's step has read it
    if RECURRENT_GRADS_DIFFER:
        matmul(d_hidden, w_hh, through_weight, False, False, False)
    else:
        matmul(d_gates[0], w_hh, through_weight, False, False, False)
    for row in range(batch):
        for j in range(hidden):
            if DIRECT_STATE_PATH:
                dh[row, j] += through_weight[row, j]
            else:
                dh[row, j] = through_weight[row, j]
    matmul(d_gates[0], w_ih, dx, False, False, False)
    width = d_gates.shape[2]
    matmul(d_gates[0], x_kept, dw_ih, True, False, True)
    add_column_sums(d_gates[0], 0, batch, 0, width, db_ih)
    cell_recurrent_grads(d_gates, gates)
    first = width - GATED_STATE_BLOCKS * hidden
    matmul(d_gates[0][:, :first], h_kept, dw_hh[:first], True, False, True)
    if GATED_STATE_BLOCKS:
        matmul(d_gates[0][:, first:], extra[0], dw_hh[first:], True, False, True)
    add_column_sums(d_gates[0], 0, batch, 0, width, db_hh)


def _param_grads(d_gates, inputs, d_weight, d_bias, n_threads, chunk_address):
    """d_weight += d_gates^T inputs and d_bias += column sums of d_gates.

    d_gates is (N, G) with zero rows at padded steps, inputs (N, K): the whole
    sequence's weight gradient as one GEMM after the time loop, split across
    threads one of two ways:
    - by rows N, the first thread accumulating into d_weight and each other one
      into a partial sum added afterwards: the faster split where each thread
      has at least K rows;
    - by gate columns G in multiples of 16, each thread accumulating into its
      own rows of d_weight: no partial sums, which for few rows against a large
      weight cost more than the product.
    Both run in one parallel loop over _param_grads_chunk, at `chunk_address`
    (see grads_chunk_address), the row split's partial sums in a second pass of it.
    """
    n_rows, n_gates = d_gates.shape
    inner = inputs.shape[1]
    by_rows = n_rows >= n_threads * inner or n_threads == 1
    if by_rows:
        n_chunks = max(1, min(n_threads, n_rows))
    else:
        n_chunks = max(1, min(n_threads, (n_gates + 15) // 16))
    partial = by_rows and n_chunks > 1
    parts = np.empty((n_chunks - 1 if partial else 0, n_gates, inner), dtype=d_weight.dtype)
    bias_parts = np.zeros((n_chunks if partial else 0, n_gates), dtype=d_bias.dtype)
    for sums in range(2 if partial else 1):
        launch(chunk_address, n_chunks, pack((by_rows, sums == 1, d_gates, inputs, d_weight,
                                              d_bias, parts, bias_parts)))


def _param_grads_chunk(chunk, n_chunks, by_rows, sums, d_gates, inputs, d_weight, d_bias,
                       parts, bias_parts):
    """One thread's share of _param_grads: its rows' product (into d_weight for
    the first chunk, else its partial sum), its gate columns' product, or, in the
    second pass (`sums`), its rows of d_weight's partial sums added."""
    n_rows, n_gates = d_gates.shape
    inner = inputs.shape[1]
    if not by_rows:
        units = (n_gates + 15) // 16
        start, stop = chunk_bounds(chunk, n_chunks, units)
        start, stop = min(16 * start, n_gates), min(16 * stop, n_gates)
        _weight_gradient(d_gates[:, start:stop], inputs, d_weight[start:stop], True)
        add_column_sums(d_gates, 0, n_rows, start, stop, d_bias)
        return
    if n_chunks == 1:
        _weight_gradient(d_gates, inputs, d_weight, True)
        add_column_sums(d_gates, 0, n_rows, 0, n_gates, d_bias)
        return
    if sums:
        first, last = chunk_bounds(chunk, n_chunks, n_gates)
        for row in range(first, last):
            for part in range(n_chunks - 1):
                for col in range(inner):
                    d_weight[row, col] += parts[part, row, col]
            for part in range(n_chunks):
                d_bias[row] += bias_parts[part, row]
        return
    start, stop = chunk_bounds(chunk, n_chunks, n_rows)
    if chunk == 0:
        _weight_gradient(d_gates[start:stop], inputs[start:stop], d_weight, True)
    else:
        _weight_gradient(d_gates[start:stop], inputs[start:stop], parts[chunk - 1], False)
    add_column_sums(d_gates, start, stop, 0, n_gates, bias_parts[chunk])


@helper
def _weight_gradient(d_gates, inputs, target, accumulate):
    """target (+)= d_gates^T inputs: narrow inputs by loops, others by BLAS."""
    if is_narrow(target):
        narrow_weight_gradient(d_gates, inputs, target, accumulate)
    else:
        matmul(d_gates, inputs, target, True, False, accumulate)


def _param_grads_one_thread(d_gates, inputs, d_weight, d_bias, n_threads, chunk_address):
    """_param_grads on one thread (n_threads and chunk_address are ignored): without the splits,
    whose code took a second of every cold serial compile."""
    n_rows, n_gates = d_gates.shape
    _weight_gradient(d_gates, inputs, d_weight, True)
    add_column_sums(d_gates, 0, n_rows, 0, n_gates, d_bias)


def _chunk_entry(arity, name, namespace):
    """What native.launch runs for each chunk: TARGET (in `namespace`) on the
    `arity` arguments packed at `payload`, of type PAYLOAD. Written out for each
    arity (numba inlines no call with *args); its code is this file's, so that
    numba caches it beside the other kernels."""
    values = ", ".join(f"arguments[{i}]" for i in range(arity))
    source = (f"def {name}(chunk, n_chunks, payload):\n"
              f"    arguments = unpack(payload, PAYLOAD)\n"
              f"    TARGET(chunk, n_chunks, {values})\n")
    exec(compile(source, __file__, "exec"), namespace)
    return namespace[name]


def _variant(template, variant, launcher, compile_as=jit):
    return compile_as(renamed(template, f"{template.__name__}_{variant}",
                              dict(globals(), launch=launcher)))


param_grads_serial = jit(_param_grads_one_thread)
param_grads_parallel = _variant(_param_grads, "parallel", launch_parallel)
_VARIANTS = {
    "serial": {"rows_dot": _variant(_rows_dot, "serial", launch_serial, helper),
               "param_grads": param_grads_serial, "launch": launch_serial},
    "parallel": {"rows_dot": _variant(_rows_dot, "parallel", launch_parallel, helper),
                 "param_grads": param_grads_parallel, "launch": launch_parallel},
}


class CellKernels(types.SimpleNamespace):
    """A cell's compiled entry points: forward_serial, forward_parallel,
    backward_serial, backward_parallel (signatures: _forward and _backward; the
    serial ones ignore n_threads), and step_forward, step_backward for the
    single-step cells (_cell_forward, _cell_backward); and the time loops the
    drivers run, forward_rows, forward_units_rows (the unit split's) and
    backward_rows (inlined into chunk entries),
    whose entries' addresses `rows` gives."""

    def rows(self, pass_name, dtype, arguments):
        """The address of the chunk entry of the time loop of `pass_name`
        ("forward", "forward_units" or "backward") for a driver call with these arguments (all
        arrays C-contiguous and writable, lengths int64, the rest of `dtype`;
        native.pack refuses others), compiled on first use."""
        key = (pass_name, dtype)
        address = self.row_addresses.get(key)
        if address is None:
            address = self.row_addresses[key] = chunk_entry(
                getattr(self, f"{pass_name}_rows"), _rows_payload(pass_name, dtype, arguments))
        return address


def _parameters(function):
    return function.__code__.co_varnames[:function.__code__.co_argcount]


# The scalars a driver passes its time loop that are its own locals (of the
# arrays' dtype), not its arguments.
_DRIVER_SCALARS = ("one", "bound")
_TEMPLATES = {"forward": (_forward, _forward_rows), "forward_units": (_forward, _forward_unit_rows),
              "backward": (_backward, _backward_rows)}
_ADDRESSES = ("rows", "dot_chunk", "grads_chunk")


def _rows_payload(pass_name, dtype, arguments):
    """The type of what a driver packs for its time loop: the loop's arguments
    after chunk and n_chunks, which are the driver's of the same names."""
    driver, rows = _TEMPLATES[pass_name]
    driver_parameters = [name for name in _parameters(driver) if name not in _ADDRESSES]
    scalar = np.dtype(dtype).type(1)
    taken = tuple(scalar if name in _DRIVER_SCALARS else arguments[driver_parameters.index(name)]
                  for name in _parameters(rows)[2:])
    return numba_types.Tuple(argument_types(taken))


_ENTRY_SIGNATURE = (numba_types.intp, numba_types.intp, numba_types.intp)
_entries = {}


def chunk_entry(target, payload):
    """The address of the chunk entry (_chunk_entry) that runs `target` (an inlined
    kernel taking chunk, n_chunks and then the payload's values) on arguments of
    the numba type `payload`, compiled or loaded from the cache on first use. Its
    name carries the target's and a hash of the payload type, so that numba's
    cache keeps each apart."""
    key = (getattr(target, "py_func", target).__name__, str(payload))
    address = _entries.get(key)
    if address is None:
        digest = hashlib.sha256(key[1].encode()).hexdigest()[:12]
        entry = called_by_address(_chunk_entry(len(payload), f"{key[0]}_{digest}", dict(
            globals(), unpack=unpack, TARGET=target, PAYLOAD=payload)))
        address = _entries[key] = compiled_address(entry, _ENTRY_SIGNATURE)
    return address


@functools.cache
def dot_chunk_address(dtype):
    """The chunk entry of _rows_dot_chunk for C-contiguous arrays of `dtype` (see
    _rows_dot)."""
    matrix = _c_array(dtype, 2)
    return chunk_entry(_shared_chunk_kernel(_rows_dot_chunk), numba_types.Tuple(
        (matrix, matrix, matrix, numba_types.boolean)))


@functools.cache
def grads_chunk_address(dtype):
    """The chunk entry of _param_grads_chunk for C-contiguous arrays of `dtype`
    (see _param_grads): compiled on first use, so that a first inference call
    compiles none of the weight gradients' code."""
    flag, matrix = numba_types.boolean, _c_array(dtype, 2)
    return chunk_entry(_shared_chunk_kernel(_param_grads_chunk), numba_types.Tuple(
        (flag, flag, matrix, matrix, matrix, _c_array(dtype, 1), _c_array(dtype, 3), matrix)))


def _c_array(dtype, ndim):
    return numba_types.Array(numba.from_dtype(np.dtype(dtype)), ndim, "C")


@functools.cache
def _shared_chunk_kernel(template):
    stamp = _sources_hash(*_KERNEL_SOURCES)
    return inlined(renamed(template, f"{template.__name__}_{stamp}", globals()))


@functools.cache
def _forward_drivers():
    """The forward drivers, which hold nothing of a cell's (its time loop is an
    argument): one pair for every cell."""
    stamp = _sources_hash(*_KERNEL_SOURCES)
    return {f"forward_{variant}": jit(renamed(_forward, f"forward_{variant}_{stamp}",
                                             dict(globals(), **helpers)), cache=True)
            for variant, helpers in _VARIANTS.items()}


def _sources_hash(*paths):
    digest = hashlib.sha256()
    for path in paths:
        with open(path, "rb") as source:
            digest.update(source.read())
    return digest.hexdigest()[:12]


_KERNEL_SOURCES = sorted(glob.glob(os.path.join(os.path.dirname(__file__), "*.py")))


def instantiate(name, n_gates, cache_width, forward_step, backward_step, recurrent_grads,
                recurrent_grads_differ, direct_state_path, cell_source, scratch_count=0,
                gated_state_blocks=0, forward_vector_width=0):
    """The drivers compiled against one cell's step functions (see the module
    docstring and the constants above); `cell_source` is the path of the
    cell's module. A cell with gated-state blocks keeps the gated state as its
    whole extra cache (cache_width 1)."""
    if gated_state_blocks and cache_width != 1:
        raise ValueError("a cell with gated-state blocks keeps the gated state (H values) "
                         f"as its extra cache: cache_width must be 1, got {cache_width}")
    stamp = _sources_hash(*_KERNEL_SOURCES, cell_source)
    namespace = dict(globals(), cell_forward_step=forward_step,
                     cell_backward_step=backward_step, cell_recurrent_grads=recurrent_grads,
                     RECURRENT_GRADS_DIFFER=bool(recurrent_grads_differ),
                     DIRECT_STATE_PATH=bool(direct_state_path), N_GATES=int(n_gates),
                     CACHE_WIDTH=int(cache_width), SCRATCH_COUNT=int(scratch_count),
                     GATED_STATE_BLOCKS=int(gated_state_blocks),
                     FORWARD_VECTOR_WIDTH=int(forward_vector_width))
    for view in (_step_views, _param_views):
        namespace[view.__name__] = helper(renamed(view, f"{name}{view.__name__}", namespace))
    for unit_helper in (_unit_block_step, _await_unit_step):
        namespace[unit_helper.__name__] = borrowing_helper(
            renamed(unit_helper, f"{name}{unit_helper.__name__}", namespace))
    kernels = {f"{pass_name}_rows": inlined(renamed(template, f"{name}_{pass_name}_rows_{stamp}",
                                                   namespace))
               for pass_name, (_, template) in _TEMPLATES.items()}
    kernels.update(_forward_drivers())
    for variant, helpers in _VARIANTS.items():
        kernels[f"backward_{variant}"] = jit(
            renamed(_backward, f"{name}_backward_{variant}_{stamp}", dict(namespace, **helpers)),
            cache=True)
    for step_name, template in (("step_forward", _cell_forward), ("step_backward", _cell_backward)):
        kernels[step_name] = jit(renamed(template, f"{name}_{step_name}_{stamp}", namespace),
                                 cache=True)
    return CellKernels(row_addresses={}, **kernels)
