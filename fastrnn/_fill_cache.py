"""Filling numba's kernel cache ahead of time (`fastrnn compile`).

`fill_cache` makes tiny calls through the public layers, cells and SequenceModel
that reach every kernel, and every argument-type specialisation of it, that
production calls can reach: inference and training steps with every clipping
option, on the single-threaded kernels, on the batch split and on the unit
split (forced through _threads.forced_plan), for short and long sequences and
small and large weights; the single-step cells; the head, the losses and each
optimizer's update through a tiny SequenceModel. A later process then loads them all from
the cache. A new public entry point needs its calls here.

numba keys its cache by the CPU it compiled for: a cache filled on one kind of
machine serves that kind.
"""

import time
from typing import NamedTuple

import numba
import numpy as np

from . import _threads, optim
from ._compile import recording_compilations
from ._grad_mode import no_grad
from .clip import clip_grad_norm, clip_grad_value
from .gradcheck import gradcheck
from .layers import layer_for_cell
from .model import SequenceModel
from .single_step import step_cell_for

# A streaming step, a short sequence, and one long enough (16 steps or more) for
# the kernels to copy the recurrent weight or cut it into blocks.
_SEQUENCE_LENGTHS = (1, 5, 17)
# The recurrent weight's layout and how it is copied depend on its size: a tiny
# one, and one of at least 2**18 elements whatever the cell.
_HIDDEN_SIZES = (4, 512)
_INPUT_SIZE = 3
_BATCH = 3


class Filled(NamedTuple):
    cell: str
    dtype: str
    compiled: int  # kernel specialisations compiled (0: all came from the cache)
    seconds: float


def cache_location():
    """Where numba keeps the kernels, in words."""
    if numba.config.CACHE_DIR:
        return f"{numba.config.CACHE_DIR} (NUMBA_CACHE_DIR)"
    return ("numba's default place: the __pycache__ folders of fastrnn's kernel modules, "
            "or the user's cache directory where those are read-only")


def parallel_threads():
    """Threads of the batch-split plans run: 2, or 1 (the multi-threaded kernels
    are then not reached) when numba may use one thread only."""
    return min(2, numba.config.NUMBA_NUM_THREADS)


def fill_cache(cells, dtypes):
    """Compiles (or loads from the cache) every kernel the cells and dtypes can
    reach; yields a Filled as each pair is done."""
    for cell in cells:
        for dtype in dtypes:
            started = time.perf_counter()
            with recording_compilations() as compiled:
                _layer_calls(cell, np.dtype(dtype))
                _step_cell_calls(cell, np.dtype(dtype))
                _model_calls(cell, np.dtype(dtype))
            yield Filled(cell, dtype, len(compiled), time.perf_counter() - started)


def _plans():
    """(threads, blocked) of every plan a call can run: serial or batch split,
    per-step products in blocks or not."""
    return [(threads, blocked) for threads in sorted({1, parallel_threads()})
            for blocked in (False, True)]


def _layer_calls(cell, dtype):
    """For each plan and sequence length: a plain layer at each weight size; a
    small one with everything else switched on (stacked, bidirectional, no bias,
    batch_first, dropout, ragged lengths); one fed unbatched input and a state.
    Then the public clipping functions, and (float64) gradcheck."""
    rng = np.random.default_rng(0)
    small = _HIDDEN_SIZES[0]
    for threads, blocked in _plans():
        with _threads.forced_plan(threads=threads, blocked=blocked):
            for n_steps in _SEQUENCE_LENGTHS:
                for hidden in _HIDDEN_SIZES:
                    plain = layer_for_cell(cell, _INPUT_SIZE, hidden, dtype=dtype, seed=0)
                    _run_layer(plain, rng.standard_normal((n_steps, _BATCH, _INPUT_SIZE)))
                stacked = layer_for_cell(cell, _INPUT_SIZE, small, num_layers=2,
                                         bidirectional=True, bias=False, batch_first=True,
                                         dropout=0.5, dtype=dtype, seed=0)
                _run_layer(stacked, rng.standard_normal((_BATCH, n_steps, _INPUT_SIZE)),
                           lengths=np.arange(_BATCH) % n_steps + 1)
                unbatched = layer_for_cell(cell, _INPUT_SIZE, small, dtype=dtype, seed=0)
                h0 = rng.standard_normal((1, small))
                _run_layer(unbatched, rng.standard_normal((n_steps, _INPUT_SIZE)),
                           state=(h0, h0) if unbatched.has_cell_state else h0)
    if parallel_threads() > 1:  # one sequence split by hidden units (training: the same kernel)
        with _threads.forced_plan(threads=parallel_threads(), split_units=True):
            split = layer_for_cell(cell, _INPUT_SIZE, _HIDDEN_SIZES[-1], dtype=dtype, seed=0)
            with no_grad():
                split(rng.standard_normal((_SEQUENCE_LENGTHS[-1], 1, _INPUT_SIZE)))
    clipped = layer_for_cell(cell, _INPUT_SIZE, small, dtype=dtype, seed=0)
    clip_grad_norm(dict(clipped.grads), 1.0)  # a mapping: each array on its own
    clip_grad_value(clipped, 0.5)  # a layer: its one flat buffer
    if dtype == np.float64:  # gradcheck checks any layer through a float64 copy
        gradcheck(layer_for_cell(cell, 2, 2, dtype=dtype, seed=0),
                  rng.standard_normal((2, 2, 2)))


def _run_layer(layer, x, state=None, lengths=None):
    with no_grad():
        layer(x, state, lengths=lengths)
    out, _ = layer(x, state, lengths=lengths)
    layer.backward(np.ones_like(out), max_norm=1.0, clip_value=1.0, clip_hidden=1.0)


def _step_cell_calls(cell, dtype):
    """A step of the single-step cell, batched and unbatched, with and without
    bias: inference, then a step from a given state with gradients, and backward
    with both clippings."""
    rng = np.random.default_rng(0)
    hidden = _HIDDEN_SIZES[0]
    for bias in (True, False):
        step_cell = step_cell_for(cell, _INPUT_SIZE, hidden, bias=bias, dtype=dtype, seed=0)
        for rows in ((_BATCH,), ()):  # batched, unbatched
            x = rng.standard_normal(rows + (_INPUT_SIZE,))
            h = rng.standard_normal(rows + (hidden,))
            with no_grad():
                step_cell(x)
            if step_cell.has_cell_state:
                h1, c1 = step_cell(x, (h, h))
                step_cell.backward((np.ones_like(h1), np.ones_like(c1)), max_norm=1.0,
                                   clip_value=1.0)
            else:
                h1 = step_cell(x, h)
                step_cell.backward(np.ones_like(h1), max_norm=1.0, clip_value=1.0)


def _model_calls(cell, dtype):
    """Two training steps and a prediction of a tiny SequenceModel with each
    optimizer (each has its own update kernel), taking the outputs and losses in
    turn and clipping by value or by norm; a text model's fit, evaluate and
    generate."""
    rng = np.random.default_rng(0)
    n_steps, n_out = 5, 2
    optimizers = (optim.SGD(lr=0.1, momentum=0.9, nesterov=True), optim.Adam(), optim.AdamW(),
                  optim.Adagrad(), optim.RMSprop(momentum=0.9, centered=True))
    targets = [
        ("sequence", "cross_entropy", rng.integers(0, n_out, (n_steps, _BATCH))),
        ("last", "mse", rng.standard_normal((_BATCH, n_out))),
        ("sequence", "bce", rng.integers(0, 2, (n_steps, _BATCH, n_out)).astype(float)),
    ]
    x = rng.standard_normal((n_steps, _BATCH, _INPUT_SIZE))
    lengths = np.arange(_BATCH) % n_steps + 1
    for k, optimizer in enumerate(optimizers):
        output, loss, y = targets[k % len(targets)]
        clipping = {"max_norm": 1.0} if k % 2 else {"clip_value": 1.0}
        model = SequenceModel(cell, input_size=_INPUT_SIZE, hidden_size=4, output_size=n_out,
                              output=output, loss=loss, optimizer=optimizer, dtype=dtype,
                              seed=0, **clipping)
        model.train_step(x, y, lengths=lengths)
        model.train_step(x, y)
        model.predict(x, lengths=lengths)
    text = "abcabcabd" * 8
    model = SequenceModel.from_text(text, cell=cell, hidden_size=4, dtype=dtype, seed=0)
    model.fit(text, window=4, batch_size=2, steps=2, progress=False)
    model.evaluate(text, window=4, batch_size=2)
    model.generate("ab", n=3)
