"""The unit split (one sequence's forward pass with its hidden units split across
threads, engine._forward_unit_rows) agrees with the single-threaded kernels, in
inference and in training (BPTT on the caches it leaves), and finishes when its
threads run one after another (a waiting thread does the other blocks' steps)."""

import numba
import numpy as np
import pytest
from helpers import make_layer
from reference import CELLS

import fastrnn
from fastrnn import _threads


def _forward(layer, x, h0, lengths, **plan):
    with fastrnn.no_grad(), _threads.observed_runs() as runs, _threads.forced_plan(**plan):
        out, state = layer(x, h0, lengths=lengths)
    return out, state, {run["product"] for run in runs}


def _states(state):
    return state if isinstance(state, tuple) else (state,)


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("hidden, n_steps, length", [(96, 17, 17), (64, 20, 11)])
def test_unit_split_matches_single_thread(cell, dtype, hidden, n_steps, length):
    layer = make_layer(cell, 5, hidden, num_layers=2, bidirectional=True, dtype=dtype, seed=2)
    rng = np.random.default_rng(3)
    x = rng.standard_normal((n_steps, 1, 5)).astype(dtype)
    h0 = rng.standard_normal((4, 1, hidden)).astype(dtype)
    if cell == "lstm":
        h0 = (h0, 0.5 * h0)
    lengths = [length]
    ref_out, ref_state, ref_paths = _forward(layer, x, h0, lengths, threads=1)
    out, state, paths = _forward(layer, x, h0, lengths, threads=2, split_units=True)
    splits = cell != "gru_reset_before"  # its step multiplies W_hh by the gated state itself
    assert paths == ({"unit_split"} if splits else ref_paths)
    assert "unit_split" not in ref_paths
    tol = 1e-12 if dtype == np.float64 else 2e-5
    np.testing.assert_allclose(out, ref_out, rtol=tol, atol=tol)
    assert np.all(out[length:] == 0.0)
    for got, want in zip(_states(state), _states(ref_state)):
        np.testing.assert_allclose(got, want, rtol=tol, atol=tol)


def _train(layer, x, h0, lengths, d_out, **plan):
    layer.zero_grad()
    with _threads.observed_runs() as runs, _threads.forced_plan(**plan):
        out, state = layer(x, h0, lengths=lengths)
        dx, d_state = layer.backward(d_out)
    grads = {name: grad.copy() for name, grad in layer.grads.items()}
    return (out, dx, *_states(d_state)), grads, {run["product"] for run in runs
                                                 if run["pass"] == "forward"}


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("hidden, n_steps, length", [(96, 17, 17), (64, 20, 11)])
def test_unit_split_training_matches_single_thread(cell, hidden, n_steps, length):
    """BPTT after a unit-split forward sees the caches of the batch layout: the
    outputs, dx, dh0 (dc0) and every parameter gradient agree, forward and reverse
    directions, full and padded lengths."""
    layer = make_layer(cell, 5, hidden, num_layers=2, bidirectional=True, dtype=np.float64,
                       seed=4)
    rng = np.random.default_rng(7)
    x = rng.standard_normal((n_steps, 1, 5))
    h0 = rng.standard_normal((4, 1, hidden))
    if cell == "lstm":
        h0 = (h0, 0.5 * h0)
    d_out = rng.standard_normal((n_steps, 1, 2 * hidden))
    ref, ref_grads, ref_paths = _train(layer, x, h0, [length], d_out, threads=1)
    got, grads, paths = _train(layer, x, h0, [length], d_out, threads=2, split_units=True)
    splits = cell != "gru_reset_before"
    assert paths == ({"unit_split"} if splits else ref_paths)
    assert "unit_split" not in ref_paths
    for value, want in zip(got, ref):
        np.testing.assert_allclose(value, want, rtol=1e-12, atol=1e-12)
    for name, want in ref_grads.items():
        np.testing.assert_allclose(grads[name], want, rtol=1e-11, atol=1e-11, err_msg=name)


def test_unit_split_finishes_on_one_thread():
    """Two blocks whose chunks numba runs on one thread, one after the other: the
    first chunk must do the second block's steps while it waits for them."""
    layer = make_layer("lstm", 4, 64, dtype=np.float64, seed=5)
    x = np.random.default_rng(6).standard_normal((24, 1, 4))
    ref_out, _, _ = _forward(layer, x, None, None, threads=1)
    previous = numba.get_num_threads()
    original = _threads._applied

    def one_numba_thread(plan):
        context = original(plan)

        class Narrowed:
            def __enter__(self):
                value = context.__enter__()
                numba.set_num_threads(1)
                return value

            def __exit__(self, *error):
                numba.set_num_threads(previous)
                return context.__exit__(*error)
        return Narrowed()

    _threads._applied = one_numba_thread
    try:
        out, _, paths = _forward(layer, x, None, None, threads=2, split_units=True)
    finally:
        _threads._applied = original
    assert paths == {"unit_split"}
    np.testing.assert_allclose(out, ref_out, rtol=1e-12, atol=1e-12)


def test_auto_plan_splits_units_only_for_the_forward_pass_of_one_sequence(monkeypatch):
    monkeypatch.setattr(_threads, "STRATEGY", "batch")
    monkeypatch.setattr(_threads, "_num_threads", 2)
    step_work = _threads.UNIT_SPLIT_WORK
    with _threads.kernel_threads(1 << 30, step_work, 1, forward=True) as plan:
        assert plan.split_units and plan.threads == 2
    with _threads.kernel_threads(1 << 30, step_work, 1, forward=False) as plan:
        assert not plan.split_units
    with _threads.kernel_threads(1 << 30, step_work, 2, forward=True) as plan:
        assert not plan.split_units
    with _threads.kernel_threads(1 << 30, step_work - 1, 1, forward=True) as plan:
        assert not plan.split_units
