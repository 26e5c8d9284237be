"""fastrnn.no_grad(): inference that keeps no activations gives the same numbers
as a forward with gradients enabled, on every kernel path, and a backward after
it fails with a clear error."""

import contextlib
import threading
import tracemalloc

import numpy as np
import pytest
from helpers import layer_backward, layer_forward
from reference import CELLS
from test_layers_reference import layer_for, make_case

import fastrnn
from fastrnn import _cells, _threads


def _forward(layer, problem):
    return layer_forward(layer, problem["x"], problem["h0"], problem["c0"], problem["lengths"])


def _assert_same(got, want):
    for a, b in zip(got, want):
        if b is None:
            assert a is None
        else:
            np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("path", ["serial", "batch split", "blocked"])
@pytest.mark.parametrize("cell", CELLS)
def test_no_grad_forward_equals_forward_with_grad(cell, path, monkeypatch):
    threads = 1 if path == "serial" else 2
    if threads > _threads.max_threads():
        pytest.skip("needs two cores")
    blocked = path == "blocked"

    def plan(work=None, step_work=None, batch=None, forward=False):
        return contextlib.nullcontext(_threads.Plan(min(threads, batch), blocked))

    monkeypatch.setattr(_threads, "kernel_threads", plan)
    if blocked:
        monkeypatch.setattr(_cells, "_block_shape",
                            lambda rows, inner, columns: (inner // 2, columns // 4))
    problem, _ = make_case(cell, 2, True, seed=5,
                           sizes=(_cells._MIN_STEPS_FOR_COPY + 2, 3, 5, 8))
    layer = layer_for(cell, problem)
    with_grad = _forward(layer, problem)
    with fastrnn.no_grad():
        without = _forward(layer, problem)
    _assert_same(without, with_grad)


@pytest.mark.parametrize("cell", CELLS)
def test_backward_after_no_grad_forward_raises_and_grad_forward_recovers(cell):
    problem, cotangents = make_case(cell, 1, False, seed=2, sizes=(4, 2, 3, 5))
    layer = layer_for(cell, problem)
    with fastrnn.no_grad():
        assert not fastrnn.is_grad_enabled()
        _forward(layer, problem)
    assert fastrnn.is_grad_enabled()
    with pytest.raises(RuntimeError, match="no_grad"):
        layer_backward(layer, cotangents["d_out"])
    assert not np.any(layer.flat_grads)
    _forward(layer, problem)
    dx, _, _ = layer_backward(layer, cotangents["d_out"])
    assert np.all(np.isfinite(dx)) and np.any(layer.flat_grads)


def test_no_grad_nests_restores_on_error_and_decorates():
    with fastrnn.no_grad():
        with fastrnn.no_grad():
            assert not fastrnn.is_grad_enabled()
        assert not fastrnn.is_grad_enabled()
    assert fastrnn.is_grad_enabled()
    with pytest.raises(KeyError), fastrnn.no_grad():
        raise KeyError("inside")
    assert fastrnn.is_grad_enabled()

    @fastrnn.no_grad()
    def depth(n):
        assert not fastrnn.is_grad_enabled()
        return n if n == 0 else depth(n - 1)

    assert depth(3) == 0
    assert fastrnn.is_grad_enabled()
    shared = fastrnn.no_grad()
    with shared:
        with shared:
            assert not fastrnn.is_grad_enabled()
        assert not fastrnn.is_grad_enabled()
    assert fastrnn.is_grad_enabled()


def test_no_grad_is_per_thread_even_for_a_shared_instance():
    shared = fastrnn.no_grad()
    inside, release = threading.Event(), threading.Event()
    after = []

    def infer():
        with shared:
            inside.set()
            release.wait(10)
        after.append(fastrnn.is_grad_enabled())

    worker = threading.Thread(target=infer)
    worker.start()
    assert inside.wait(10)
    assert fastrnn.is_grad_enabled()  # the worker's no_grad does not reach this thread
    with fastrnn.no_grad():
        with shared:  # entered here, inside another no_grad, while the worker is in it
            release.set()
            worker.join(10)
        assert not fastrnn.is_grad_enabled()  # the outer no_grad still holds here
    assert fastrnn.is_grad_enabled() and after == [True]


def _peak_bytes(function):
    tracemalloc.start()
    try:
        function()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_no_grad_forward_allocates_no_activation_caches(cell):
    """The caches (T, B, H) arrays per layer and direction are what training keeps:
    h_prev for every cell, plus c_prev and tanh_c (LSTM) or hidden_n (GRU)."""
    n_steps, batch, hidden = 40, 8, 64
    layer = {"rnn": fastrnn.RNN, "lstm": fastrnn.LSTM, "gru": fastrnn.GRU}[cell](
        hidden, hidden, dtype=np.float32, seed=0)
    x = np.random.default_rng(0).standard_normal((n_steps, batch, hidden)).astype(np.float32)
    layer(x)  # compiled, caches warm

    def forward_no_grad():
        with fastrnn.no_grad():
            layer(x)

    layer._cache = None
    with_grad = _peak_bytes(lambda: layer(x))
    layer._cache = None
    without = _peak_bytes(forward_no_grad)
    # With gradients the forward also copies x (the same size here): the
    # difference is the cache arrays plus that copy, and one array short of it
    # if any cache were still allocated under no_grad.
    cache_arrays = {"rnn": 1, "lstm": 3, "gru": 2}[cell]
    assert with_grad - without >= (cache_arrays + 0.5) * n_steps * batch * hidden * 4
    assert layer._cache is not None and not layer._cache  # nothing kept


def test_model_inference_keeps_no_activations():
    model = fastrnn.SequenceModel.from_text("abcabcabd" * 4, cell="gru", hidden_size=8, seed=0)
    ids = model.encode("abcab")[:, None]
    model.predict(ids)
    assert not model.rnn._cache
    model.generate("ab", n=3)
    assert fastrnn.is_grad_enabled() and model.rnn.training


def test_backward_after_a_forward_that_raised_says_so(monkeypatch):
    """A forward that fails after dropping the previous call's activations leaves
    backward nothing to use: it must say why, not compute from stale arrays."""
    problem, cotangents = make_case("lstm", 1, False, seed=3, sizes=(4, 2, 3, 5))
    layer = layer_for("lstm", problem)
    _forward(layer, problem)

    def out_of_memory(*args, **kwargs):
        raise MemoryError("simulated")

    monkeypatch.setattr(layer._cell, "forward", out_of_memory)
    with pytest.raises(MemoryError):
        _forward(layer, problem)
    monkeypatch.undo()
    with pytest.raises(RuntimeError, match="raised before it finished"):
        layer_backward(layer, cotangents["d_out"], cotangents["d_hn"], cotangents["d_cn"])
    _forward(layer, problem)
    dx, _, _ = layer_backward(layer, cotangents["d_out"], cotangents["d_hn"], cotangents["d_cn"])
    assert np.all(np.isfinite(dx))
