"""The single-step cells (fastrnn.RNNCell, LSTMCell, GRUCell): torch's semantics and
numbers in float64 (outputs and every gradient), finite differences, the sequence
layers' numbers when stepped through a sequence, the layer-like API, input checks,
and a step kernel that allocates nothing."""

import os
import subprocess
import sys

import numpy as np
import pytest

import fastrnn

CELLS = {
    "rnn_tanh": lambda *a, **k: fastrnn.RNNCell(*a, nonlinearity="tanh", **k),
    "rnn_relu": lambda *a, **k: fastrnn.RNNCell(*a, nonlinearity="relu", **k),
    "lstm": fastrnn.LSTMCell,
    "gru": fastrnn.GRUCell,
    "gru_reset_before": lambda *a, **k: fastrnn.GRUCell(*a, reset_after=False, **k),
}
TORCH_CELLS = ("rnn_tanh", "rnn_relu", "lstm", "gru")  # torch has no reset-before GRU
I, H, B = 5, 7, 3


def _torch_cell(cell, params, bias):
    import torch

    if cell == "lstm":
        module = torch.nn.LSTMCell(I, H, bias=bias, dtype=torch.float64)
    elif cell == "gru":
        module = torch.nn.GRUCell(I, H, bias=bias, dtype=torch.float64)
    else:
        module = torch.nn.RNNCell(I, H, bias=bias, nonlinearity=cell[4:], dtype=torch.float64)
    module.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in params.items()},
                           strict=True)
    return module


def _call(cell_obj, x, h, c):
    if cell_obj.has_cell_state:
        return cell_obj(x, (h, c))
    return cell_obj(x, h), None


def _backward(cell_obj, d_h1, d_c1, **clipping):
    if cell_obj.has_cell_state:
        dx, (dh, dc) = cell_obj.backward((d_h1, d_c1), **clipping)
        return dx, dh, dc
    dx, dh = cell_obj.backward(d_h1, **clipping)
    return dx, dh, None


@pytest.mark.parametrize("unbatched", [False, True], ids=["batched", "unbatched"])
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize("cell", TORCH_CELLS)
def test_matches_torch_in_float64(cell, bias, unbatched):
    import torch

    rng = np.random.default_rng([list(CELLS).index(cell), bias, unbatched])
    layer = CELLS[cell](I, H, bias=bias, dtype=np.float64, seed=3)
    assert set(layer.params) == ({"weight_ih", "weight_hh", "bias_ih", "bias_hh"} if bias
                                 else {"weight_ih", "weight_hh"})
    module = _torch_cell(cell, layer.state_dict(), bias)
    shape = (H,) if unbatched else (B, H)
    x = rng.standard_normal((I,) if unbatched else (B, I))
    h, c = rng.standard_normal(shape), rng.standard_normal(shape)
    d_h1, d_c1 = rng.standard_normal(shape), rng.standard_normal(shape)
    lstm = cell == "lstm"
    h1, c1 = _call(layer, x, h, c if lstm else None)
    dx, dh, dc = _backward(layer, d_h1, d_c1 if lstm else None)

    x_t, h_t, c_t = (torch.tensor(a, requires_grad=True) for a in (x, h, c))
    if lstm:
        t_h1, t_c1 = module(x_t, (h_t, c_t))
        loss = (t_h1 * torch.from_numpy(d_h1)).sum() + (t_c1 * torch.from_numpy(d_c1)).sum()
    else:
        t_h1, t_c1 = module(x_t, h_t), None
        loss = (t_h1 * torch.from_numpy(d_h1)).sum()
    loss.backward()
    assert h1.shape == shape and dx.shape == x.shape and dh.shape == shape
    np.testing.assert_allclose(h1, t_h1.detach().numpy(), rtol=0, atol=1e-12)
    np.testing.assert_allclose(dx, x_t.grad.numpy(), rtol=0, atol=1e-10)
    np.testing.assert_allclose(dh, h_t.grad.numpy(), rtol=0, atol=1e-10)
    if lstm:
        np.testing.assert_allclose(c1, t_c1.detach().numpy(), rtol=0, atol=1e-12)
        np.testing.assert_allclose(dc, c_t.grad.numpy(), rtol=0, atol=1e-10)
    else:
        assert c1 is None and dc is None
    for name, parameter in module.named_parameters():
        np.testing.assert_allclose(layer.grads[name], parameter.grad.numpy(), rtol=0,
                                   atol=1e-10, err_msg=name)


@pytest.mark.parametrize("cell", list(CELLS))
def test_gradients_match_finite_differences(cell):
    rng = np.random.default_rng(list(CELLS).index(cell))
    layer = CELLS[cell](I, H, dtype=np.float64, seed=5)
    x = rng.standard_normal((B, I))
    h, c = rng.standard_normal((B, H)), rng.standard_normal((B, H))
    d_h1, d_c1 = rng.standard_normal((B, H)), rng.standard_normal((B, H))
    lstm = layer.has_cell_state

    def loss(x=x, h=h, c=c):
        with fastrnn.no_grad():
            h1, c1 = _call(layer, x, h, c if lstm else None)
        return float(np.sum(h1 * d_h1) + (np.sum(c1 * d_c1) if lstm else 0.0))

    _call(layer, x, h, c if lstm else None)
    dx, dh, dc = _backward(layer, d_h1, d_c1 if lstm else None)
    checks = [("x", dx, fastrnn.numerical_grad(lambda v: loss(x=v), x)),
              ("h", dh, fastrnn.numerical_grad(lambda v: loss(h=v), h))]
    if lstm:
        checks.append(("c", dc, fastrnn.numerical_grad(lambda v: loss(c=v), c)))
    for name, value in layer.params.items():
        def of_param(v, value=value):
            saved = value.copy()
            value[...] = v
            try:
                return loss()
            finally:
                value[...] = saved
        checks.append((name, layer.grads[name], fastrnn.numerical_grad(of_param, value.copy())))
    for name, analytic, numeric in checks:
        np.testing.assert_allclose(analytic, numeric, rtol=1e-6, atol=1e-8, err_msg=name)


@pytest.mark.parametrize("cell", list(CELLS))
def test_stepping_a_sequence_matches_the_sequence_layer(cell):
    """T calls carrying the state give the layer's outputs."""
    from helpers import layer_forward, make_layer

    rng = np.random.default_rng(7)
    T = 6
    sequence_layer = make_layer(cell, I, H, dtype=np.float64, seed=2)
    step_layer = CELLS[cell](I, H, dtype=np.float64)
    step_layer.load_state_dict({name[:-3]: value for name, value
                                in sequence_layer.state_dict().items()})
    x = rng.standard_normal((T, B, I))
    out = layer_forward(sequence_layer, x)[0]
    h = c = None
    for t in range(T):
        h, c = _call(step_layer, x[t], h, c)
        np.testing.assert_allclose(h, out[t], rtol=0, atol=1e-13)


def test_cells_accumulate_zero_grad_and_load_state_dict():
    rng = np.random.default_rng(1)
    layer = fastrnn.LSTMCell(I, H, dtype=np.float64, seed=1)
    x, state = rng.standard_normal((B, I)), (rng.standard_normal((B, H)), None)
    layer(x, state)
    layer.backward((np.ones((B, H)), None))
    once = {name: g.copy() for name, g in layer.grads.items()}
    assert all(np.any(g != 0) for g in once.values())
    layer(x, state)
    layer.backward((np.ones((B, H)), None))
    for name, g in once.items():
        np.testing.assert_allclose(layer.grads[name], 2 * g, rtol=1e-14, err_msg=name)
    layer.zero_grad()
    assert all(np.all(g == 0) for g in layer.grads.values())

    other = fastrnn.LSTMCell(I, H, dtype=np.float64, seed=2)
    other.load_state_dict(layer.state_dict())
    np.testing.assert_array_equal(other(x)[0], layer(x)[0])
    with pytest.raises(KeyError, match="bias_hh"):
        other.load_state_dict({k: v for k, v in layer.state_dict().items() if k != "bias_hh"})
    with pytest.raises(ValueError, match="weight_hh"):
        other.load_state_dict(dict(layer.state_dict(), weight_hh=np.zeros((H, H))))


def test_same_seed_same_parameters_and_torch_init_range():
    a = fastrnn.GRUCell(4, 16, seed=9)
    b = fastrnn.GRUCell(4, 16, seed=9)
    for name in a.params:
        np.testing.assert_array_equal(a.params[name], b.params[name])
        assert np.all(np.abs(a.params[name]) <= 1 / 4)
    assert a.params["weight_ih"].dtype == np.float32


def test_clipping_keywords_clip_the_gradients():
    rng = np.random.default_rng(2)
    layer = fastrnn.GRUCell(I, H, dtype=np.float64, seed=1)
    x, d_h1 = rng.standard_normal((B, I)), rng.standard_normal((B, H))
    layer(x)
    layer.backward(d_h1)
    grads = {name: g.copy() for name, g in layer.grads.items()}
    norm = float(np.sqrt(sum(np.sum(g ** 2) for g in grads.values())))
    layer.zero_grad()
    layer(x)
    layer.backward(d_h1, max_norm=0.5 * norm)
    assert layer.grad_norm == pytest.approx(norm, rel=1e-12)
    for name, g in grads.items():
        np.testing.assert_allclose(layer.grads[name], g * 0.5 * norm / (norm + 1e-6),
                                   rtol=1e-12, err_msg=name)
    layer.zero_grad()
    layer(x)
    layer.backward(d_h1, clip_value=0.01)
    for name, g in grads.items():
        np.testing.assert_allclose(layer.grads[name], np.clip(g, -0.01, 0.01), err_msg=name)


def test_no_bias_cell_keeps_no_bias_gradients_out_of_the_norm():
    rng = np.random.default_rng(3)
    layer = fastrnn.RNNCell(I, H, bias=False, dtype=np.float64, seed=1)
    layer(rng.standard_normal((B, I)))
    layer.backward(rng.standard_normal((B, H)), max_norm=1e9)
    norm = float(np.sqrt(sum(np.sum(g ** 2) for g in layer.grads.values())))
    assert layer.grad_norm == pytest.approx(norm, rel=1e-12)


def test_errors_name_the_argument():
    layer = fastrnn.LSTMCell(I, H)
    with pytest.raises(RuntimeError, match="backward needs a call"):
        layer.backward((np.ones((B, H)), None))
    with pytest.raises(ValueError, match="x must have 5 features"):
        layer(np.ones((B, 4)))
    with pytest.raises(ValueError, match="x must be 1-D"):
        layer(np.ones((1, B, I)))
    with pytest.raises(ValueError, match="h"):
        layer(np.ones((B, I)), (np.ones((B + 1, H)), None))
    with pytest.raises(TypeError, match="state must be a pair"):
        layer(np.ones((B, I)), np.ones((B, H)))
    with pytest.raises(TypeError, match="x"):
        layer(np.array([["a"] * I] * B))
    with pytest.raises(ValueError, match="nonlinearity"):
        fastrnn.RNNCell(I, H, nonlinearity="sigmoid")
    with pytest.raises(ValueError, match="hidden_size"):
        fastrnn.GRUCell(I, 0)
    with fastrnn.no_grad():
        layer(np.ones((B, I)))
    with pytest.raises(RuntimeError, match="no_grad"):
        layer.backward((np.ones((B, H)), None))
    layer(np.ones((B, I)))
    with pytest.raises(ValueError, match="d_h1"):
        layer.backward((np.ones((B, H + 1)), None))
    with pytest.raises(ValueError, match="max_norm"):
        layer.backward((np.ones((B, H)), None), max_norm=-1.0)


def test_states_that_differ_from_the_last_call_are_checked():
    """After a call, the next one skips the checks only for arrays of the last
    call's shapes, dtype and layout: any other state is checked (or converted)."""
    layer = fastrnn.LSTMCell(I, H, dtype=np.float32, seed=0)
    x = np.ones((B, I), dtype=np.float32)
    h, c = layer(x)
    for name, state in (("h", (np.ones((B, H + 1), np.float32), c)),
                        ("h", (np.ones((B + 1, H), np.float32), c)),
                        ("c", (h, np.ones((B, H - 1), np.float32))),
                        ("c", (h, np.ones((B, H, 1), np.float32)))):
        with pytest.raises(ValueError, match=f"^{name} "):
            layer(x, state)
    want = layer(x, (h, c))
    for state in ((h.astype(np.float64), c), (h, np.asfortranarray(np.tile(c, (1, 1))[:, ::-1])
                                               [:, ::-1])):
        np.testing.assert_array_equal(layer(x, state)[0], want[0])
    rnn = fastrnn.RNNCell(I, H, dtype=np.float32)
    state = rnn(x)
    with pytest.raises(ValueError, match="^h "):
        rnn(x, np.ones((B, H + 1), np.float32))
    np.testing.assert_array_equal(rnn(x, state.astype(np.float64)), rnn(x, state))


def test_inputs_of_other_dtypes_and_layouts_give_the_same_numbers():
    rng = np.random.default_rng(4)
    layer = fastrnn.GRUCell(I, H, dtype=np.float32, seed=1)
    x = rng.standard_normal((B, I)).astype(np.float32)
    h = rng.standard_normal((B, H)).astype(np.float32)
    want = layer(x, h)
    np.testing.assert_array_equal(layer(np.asfortranarray(x), h), want)
    np.testing.assert_array_equal(layer(x.astype(np.float64), h.tolist()), want)
    assert layer(x, h).dtype == np.float32


_NO_ALLOCATION_SCRIPT = """
import numba
import numpy as np
from numba.core.runtime import rtsys
import fastrnn

@numba.njit
def eight_arrays(a, b, c, d, e, f, g, h):
    pass

def allocations(call):
    call()
    before = rtsys.get_allocation_stats()
    for _ in range(100):
        call()
    after = rtsys.get_allocation_stats()
    return after.alloc - before.alloc, after.mi_alloc - before.mi_alloc

arrays = [np.ones(2) for _ in range(8)]
print("arguments", *allocations(lambda: eight_arrays(*arrays)))
cells = {"RNNCell": fastrnn.RNNCell(16, 32), "LSTMCell": fastrnn.LSTMCell(16, 32),
         "GRUCell": fastrnn.GRUCell(16, 32),
         "GRUCell_reset_before": fastrnn.GRUCell(16, 32, reset_after=False)}
for name, cell in cells.items():
    for batch in (2, 1):
        x = np.ones((batch, 16), dtype=np.float32)
        state = cell(x)
        print(f"{name}_b{batch}", *allocations(lambda: cell(x, state)))
"""


def test_a_step_allocates_nothing_inside_the_kernel():
    """numba's runtime counts its allocations (NUMBA_NRT_STATS=1): a step call makes
    only those of passing its eight arrays in (as a function that does nothing with
    eight arrays does); the outputs are numpy arrays made before the kernel runs."""
    tests = os.path.dirname(os.path.abspath(__file__))
    env = dict(os.environ, NUMBA_NRT_STATS="1",
               PYTHONPATH=os.path.dirname(tests) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    result = subprocess.run([sys.executable, "-c", _NO_ALLOCATION_SCRIPT], capture_output=True,
                            text=True, timeout=600, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    counts = {name: (int(a), int(m)) for name, a, m in
              (line.split() for line in result.stdout.splitlines())}
    cells = [f"{name}_b{batch}" for name in ("RNNCell", "LSTMCell", "GRUCell",
                                             "GRUCell_reset_before") for batch in (2, 1)]
    assert list(counts) == ["arguments", *cells]
    assert counts["arguments"][0] > 0  # the counter counts
    for name in cells:
        assert counts[name] == counts["arguments"], name

