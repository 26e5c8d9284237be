"""Cell kinds, each described once: its spec (gate count, state, caches) and its
element-wise gate math for one time step, which fastrnn._kernels.engine compiles
into the cell's sequence kernels. Everything else (the runner in fastrnn._cells,
the layers, the model, gradcheck, the CLI, the benchmarks) derives from SPECS.

A cell module defines, as kernels (fastrnn._kernels._jit.gate_math: inlined into
the engine's cached kernels):

forward_step(t, start, stop, lengths, one, gates, recurrent, bias, b_ih, b_hh,
             h, c, extra, keep, out, w_hh, scratch)
    For each batch row b = start + row in [start, stop) with t < lengths[b]:
    gates[t, b] holds W_ih x_t (G values) and recurrent[row] h_{t-1} W_hh^T;
    overwrite gates[t, b] with what backward_step needs, update the state
    h[row] (H) and c[row] (H for a cell state, else 0 values), write h_t to
    out[t, b], and when `keep` fill extra[t, b] (the cell's extra cache).
    bias = b_ih + b_hh; `one` is 1 in the arrays' dtype. Padded rows are left
    alone (the engine zeroes their output). w_hh (G, H) is the recurrent weight
    as stored and scratch (scratch_count, stop - start, H) the cell's own
    scratch, for a cell that multiplies part of W_hh itself (the classic GRU).

backward_step(t, start, stop, lengths, one, d_total, gates, h_prev, extra,
              d_gates, d_hidden, dh, dc, w_hh, scratch)
    For each valid row: d_total[row] is dL/dh_t (clipped; scratch, may be
    overwritten), dc[row] dL/dc_t from the step after; write the gradients of
    the gate pre-activations to d_gates[t, b] (input side) and, if the
    recurrent side's differ, to d_hidden[row]; update dc[row] to dL/dc_{t-1};
    for cells with a direct path h_{t-1} -> h_t other than through W_hh, write
    that part of dL/dh_{t-1} to dh[row] (the engine adds dG W_hh, from
    d_hidden where the sides differ).

recurrent_grads(d_gates, gates)
    Turn the whole sequence's input-side gate gradients into the recurrent
    side's, in place, after dW_ih is taken (a no-op where they are the same).

The engine takes dW_hh as d_gates^T h_{t-1}, except for the last
`gated_state_blocks` gate blocks, whose W_hh rows the cell applies to a gated
state it keeps as its extra cache (cache_width 1): their gradient is taken
against that.

forward_step treats hidden units independently: unit j's results depend only
on column j of each gate block (of gates, recurrent and the biases) and on unit
j of the state. The engine relies on it to split one sequence's units across
threads (calling forward_step on a block of w units with arrays of width G*w and
w), for every cell but those with gated-state blocks (their step multiplies
W_hh by the whole gated state itself).

Adding a cell kind: a module here with those three functions and a `SPEC`
(CellSpec, made with `spec(...)`), an entry in SPECS below, and a thin public
layer class in fastrnn/layers.py.
"""

import os
from typing import NamedTuple

from .._kernels._jit import gate_math
from .._kernels.engine import CellKernels, instantiate


class CellSpec(NamedTuple):
    """One cell kind: `n_gates` gate blocks of H rows in W_ih and W_hh,
    `state_count` state vectors (1: h; 2: h and c), `cache_width` extra cached
    values per step in units of H, `scratch_count` (rows, H) scratch buffers of
    its step functions, whether the forward time loop of one sequence can split
    its hidden units across threads (`splits_units`, see the module docstring),
    and its compiled kernels."""
    name: str
    n_gates: int
    state_count: int
    cache_width: int
    scratch_count: int
    splits_units: bool
    kernels: CellKernels

    @property
    def has_cell_state(self):
        return self.state_count == 2


def spec(name, n_gates, state_count, cache_width, forward_step, backward_step,
         recurrent_grads, recurrent_grads_differ, direct_state_path, module_file,
         scratch_count=0, gated_state_blocks=0, forward_vector_width=0):
    """A CellSpec with the engine's kernels compiled against the step functions;
    `forward_vector_width` the register width in bits (0: the CPU's default) that
    the forward time loop, its gate math included, is vectorised with."""
    kernels = instantiate(name, n_gates, cache_width, forward_step, backward_step,
                          recurrent_grads, recurrent_grads_differ, direct_state_path,
                          os.path.abspath(module_file), scratch_count, gated_state_blocks,
                          forward_vector_width)
    return CellSpec(name, n_gates, state_count, cache_width, scratch_count,
                    gated_state_blocks == 0, kernels)


@gate_math
def same_recurrent_grads(d_gates, gates):
    """recurrent_grads of a cell whose recurrent-side gate gradients are the
    input side's (or are kept in d_hidden)."""


def _specs():
    from . import elman, gru, lstm

    return {cell.name: cell for cell in (elman.TANH_SPEC, elman.RELU_SPEC, lstm.SPEC, gru.SPEC,
                                         gru.RESET_BEFORE_SPEC)}


SPECS = _specs()
