"""fastrnn.RNN / LSTM / GRU against torch.nn in float64: outputs, final states and every
gradient, over cells x layers x directions x layouts x lengths x initial states, plus
bias=False, unbatched input, state_dict interop and the clipping keywords of backward.

Weights always travel the way a user moves them: a torch module's state_dict, converted
with .numpy(), loaded as is with layer.load_state_dict.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="torch parity needs torch (CI installs torch==2.13.0)")

from helpers import (  # noqa: E402
    assert_ragged,
    layer_backward,
    layer_forward,
    make_layer,
    make_torch_module,
    max_rel_error,
    ragged_lengths,
    random_lengths,
    random_params,
    state_shape,
    torch_forward_backward,
)
from reference import TORCH_CELLS as CELLS  # noqa: E402

import fastrnn  # noqa: E402

T, B, INPUT, HIDDEN = 5, 3, 4, 3
OUTPUT_ATOL = 1e-10
GRAD_RTOL = 1e-9
# Larger than torch's default 1/sqrt(H) so the gates leave their linear region.
WEIGHT_SCALE = 0.8


def make_case(cell, num_layers, bidirectional, use_lengths, give_state, bias=True, seed=0,
              batch=B):
    """Random torch-named params, inputs, states, lengths and output cotangents.

    Without `give_state` h0/c0 and d_hn/d_cn are None (fastrnn's defaults); torch then
    gets explicit zero states, so dh0/dc0 (the gradient at a zero state) still compare.
    use_lengths: False (none), True (random in [1, T], all may be T), "ragged" (some
    sequence shorter than T and one of length T) or "short" (all shorter than T).
    """
    rng = np.random.default_rng(seed)
    params = random_params(cell, INPUT, HIDDEN, num_layers, bidirectional, bias, rng=rng,
                           scale=WEIGHT_SCALE)
    shape = state_shape(num_layers, bidirectional, batch, HIDDEN)
    D = 2 if bidirectional else 1
    lstm = cell == "lstm"
    return {
        "params": params,
        "x": rng.standard_normal((T, batch, INPUT)),
        "h0": rng.standard_normal(shape) * 0.5 if give_state else None,
        "c0": rng.standard_normal(shape) * 0.5 if give_state and lstm else None,
        "lengths": (random_lengths(rng, batch, T) if use_lengths is True else
                    ragged_lengths(rng, batch, T, full=use_lengths == "ragged")
                    if use_lengths else None),
        "d_out": rng.standard_normal((T, batch, D * HIDDEN)),
        "d_hn": rng.standard_normal(shape) if give_state else None,
        "d_cn": rng.standard_normal(shape) if give_state and lstm else None,
        "shape": shape,
    }


def load_from_torch(cell, case, num_layers, bidirectional, bias=True, batch_first=False):
    """A float64 fastrnn layer loaded from a torch module's state_dict (.numpy(), as is)."""
    module = make_torch_module(cell, case["params"], INPUT, HIDDEN, num_layers, bidirectional,
                               bias)
    torch_state = {name: tensor.numpy() for name, tensor in module.state_dict().items()}
    layer = make_layer(cell, INPUT, HIDDEN, num_layers, bidirectional, bias, batch_first,
                       dtype=np.float64, seed=1)
    layer.load_state_dict(torch_state)
    assert list(layer.state_dict()) == list(torch_state)
    for name, value in torch_state.items():
        np.testing.assert_array_equal(layer.params[name], value, err_msg=name)
    return layer


def run_torch(cell, case, num_layers, bidirectional, bias=True):
    """torch's forward + autograd for the case, with zero states standing in for None."""
    lstm = cell == "lstm"
    zeros = np.zeros(case["shape"])
    return torch_forward_backward(
        cell, case["params"], case["x"],
        h0=zeros if case["h0"] is None else case["h0"],
        c0=(zeros if case["c0"] is None else case["c0"]) if lstm else None,
        lengths=case["lengths"], num_layers=num_layers, bidirectional=bidirectional,
        d_out=case["d_out"], d_hn=case["d_hn"], d_cn=case["d_cn"], bias=bias)


def assert_grad_close(actual, expected, name, rtol=GRAD_RTOL):
    err = max_rel_error(actual, expected)
    assert err <= rtol, f"{name}: relative error {err:.3e} > {rtol:.0e}"


def assert_matches_torch(cell, fast, torch_result, layer, check_grads=True):
    out, h_n, c_n, dx, dh0, dc0 = fast
    t_out, t_hn, t_cn, t_dx, t_dh0, t_dc0, t_grads = torch_result
    np.testing.assert_allclose(out, t_out, rtol=0, atol=OUTPUT_ATOL, err_msg="out")
    np.testing.assert_allclose(h_n, t_hn, rtol=0, atol=OUTPUT_ATOL, err_msg="h_n")
    if cell == "lstm":
        np.testing.assert_allclose(c_n, t_cn, rtol=0, atol=OUTPUT_ATOL, err_msg="c_n")
    else:
        assert c_n is None
    if not check_grads:
        return
    assert set(layer.grads) == set(t_grads)
    for name, grad in t_grads.items():
        assert_grad_close(layer.grads[name], grad, name)
    assert_grad_close(dx, t_dx, "dx")
    assert_grad_close(dh0, t_dh0, "dh0")
    if cell == "lstm":
        assert_grad_close(dc0, t_dc0, "dc0")
    else:
        assert dc0 is None


def to_batch_first(a):
    return None if a is None else np.ascontiguousarray(a.transpose(1, 0, 2))


def run_fastrnn(layer, case, batch_first):
    """Forward and backward through the layer in its own layout; results back in (T, B, .)."""
    x, d_out = case["x"], case["d_out"]
    if batch_first:
        x, d_out = to_batch_first(x), to_batch_first(d_out)
    out, h_n, c_n = layer_forward(layer, x, case["h0"], case["c0"], case["lengths"])
    assert out.shape == d_out.shape
    dx, dh0, dc0 = layer_backward(layer, d_out, case["d_hn"], case["d_cn"])
    assert dx.shape == x.shape
    if batch_first:
        out, dx = out.transpose(1, 0, 2), dx.transpose(1, 0, 2)
    return out, h_n, c_n, dx, dh0, dc0


# Lengths: False (id "full"), "ragged" (id "len": some sequence shorter than T, one of
# length T) or "short" (id "lenshort": all shorter than T; pad_packed_sequence then
# needs total_length, which torch_forward_backward passes).
LENGTHS_IDS = {False: "full", "ragged": "len", "short": "lenshort"}
GRID = list(itertools.product(CELLS, (1, 2), (False, True), (False, True), tuple(LENGTHS_IDS),
                              (False, True)))


@pytest.mark.parametrize(
    "cell, num_layers, bidirectional, batch_first, use_lengths, give_state", GRID,
    ids=[f"{c}-L{n}-{'bi' if b else 'uni'}-{'bf' if f else 'tf'}-{LENGTHS_IDS[u]}-"
         f"{'h0' if g else 'noh0'}" for c, n, b, f, u, g in GRID],
)
def test_matches_torch(cell, num_layers, bidirectional, batch_first, use_lengths, give_state):
    seed = GRID.index((cell, num_layers, bidirectional, batch_first, use_lengths, give_state))
    case = make_case(cell, num_layers, bidirectional, use_lengths, give_state, seed=seed)
    if use_lengths:
        assert_ragged(case["lengths"], T, full=use_lengths == "ragged")
    else:
        assert case["lengths"] is None
    layer = load_from_torch(cell, case, num_layers, bidirectional, batch_first=batch_first)
    fast = run_fastrnn(layer, case, batch_first)
    assert layer.grad_norm is None
    assert_matches_torch(cell, fast, run_torch(cell, case, num_layers, bidirectional), layer)


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("batch_first", [False, True])
def test_matches_torch_without_bias(cell, batch_first):
    case = make_case(cell, 2, True, True, True, bias=False, seed=100)
    layer = load_from_torch(cell, case, 2, True, bias=False, batch_first=batch_first)
    assert not any(name.startswith("bias") for name in layer.params)
    fast = run_fastrnn(layer, case, batch_first)
    assert_matches_torch(cell, fast, run_torch(cell, case, 2, True, bias=False), layer)


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("give_state", [False, True])
@pytest.mark.parametrize("batch_first", [False, True])
def test_unbatched_input_matches_torch(cell, give_state, batch_first):
    """(T, I) input: out (T, D*H), h_n (L*D, H); batch_first does not apply (as in torch)."""
    case = make_case(cell, 2, True, False, give_state, seed=200, batch=1)
    layer = load_from_torch(cell, case, 2, True, batch_first=batch_first)

    def squeeze(a):  # (., 1, .) -> unbatched
        return None if a is None else a[:, 0, :].copy()

    x, d_out = squeeze(case["x"]), squeeze(case["d_out"])
    out, h_n, c_n = layer_forward(layer, x, squeeze(case["h0"]), squeeze(case["c0"]))
    assert out.shape == (T, 2 * HIDDEN)
    assert h_n.shape == (4, HIDDEN)
    dx, dh0, dc0 = layer_backward(layer, d_out, squeeze(case["d_hn"]), squeeze(case["d_cn"]))
    assert dx.shape == (T, INPUT)
    assert dh0.shape == (4, HIDDEN)

    def unsqueeze(a):
        return None if a is None else a[:, None, :]

    fast = (unsqueeze(out), unsqueeze(h_n), unsqueeze(c_n), unsqueeze(dx), unsqueeze(dh0),
            unsqueeze(dc0))
    assert_matches_torch(cell, fast, run_torch(cell, case, 2, True), layer)


@pytest.mark.parametrize("cell", CELLS)
def test_only_d_hn_or_only_d_out(cell):
    """backward(None, d_hn) and backward(d_out) (None means zero) against torch."""
    case = make_case(cell, 2, True, True, True, seed=300)
    for drop in ("d_out", "d_hn"):
        sub = dict(case)
        sub[drop] = None
        if drop == "d_hn":
            sub["d_cn"] = None
        layer = load_from_torch(cell, sub, 2, True)
        out, h_n, c_n = layer_forward(layer, sub["x"], sub["h0"], sub["c0"], sub["lengths"])
        dx, dh0, dc0 = layer_backward(layer, sub["d_out"], sub["d_hn"], sub["d_cn"])
        assert_matches_torch(cell, (out, h_n, c_n, dx, dh0, dc0), run_torch(cell, sub, 2, True),
                             layer)


def test_lstm_with_only_h0_or_only_c0():
    """An LSTM state pair may hold None for either part (zeros), as torch's helper does."""
    case = make_case("lstm", 1, True, True, True, seed=400)
    for missing in ("h0", "c0"):
        sub = dict(case)
        sub[missing] = None
        layer = load_from_torch("lstm", sub, 1, True)
        fast = run_fastrnn(layer, sub, batch_first=False)
        result = run_torch("lstm", sub, 1, True)
        assert_matches_torch("lstm", fast, result, layer)


# ---------------------------------------------------------------------------
# state_dict interop with default-initialised torch modules
# ---------------------------------------------------------------------------


def _torch_module(cell, dtype, **kwargs):
    if cell == "lstm":
        return torch.nn.LSTM(INPUT, HIDDEN, dtype=dtype, **kwargs)
    if cell == "gru":
        return torch.nn.GRU(INPUT, HIDDEN, dtype=dtype, **kwargs)
    return torch.nn.RNN(INPUT, HIDDEN, nonlinearity=cell[4:], dtype=dtype, **kwargs)


@pytest.mark.parametrize("cell", CELLS)
def test_default_torch_module_state_dict_loads_and_matches_in_float32(cell):
    torch.manual_seed(0)
    module = _torch_module(cell, torch.float32, num_layers=2, bidirectional=True,
                           batch_first=True)
    layer = make_layer(cell, INPUT, HIDDEN, 2, True, batch_first=True, dtype=np.float32)
    # Tensors themselves (np.asarray accepts them) and their .numpy() both load.
    layer.load_state_dict(module.state_dict())
    layer.load_state_dict({k: v.numpy() for k, v in module.state_dict().items()})
    for name, value in module.state_dict().items():
        assert layer.params[name].dtype == np.float32
        np.testing.assert_array_equal(layer.params[name], value.numpy(), err_msg=name)
    x = np.random.default_rng(1).standard_normal((B, T, INPUT)).astype(np.float32)
    with torch.no_grad():
        t_out, _ = module(torch.from_numpy(x))
    out, _, _ = layer_forward(layer, x)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, t_out.numpy(), rtol=0, atol=2e-5)


@pytest.mark.parametrize("cell", CELLS)
def test_fastrnn_state_dict_loads_into_torch_strictly(cell):
    layer = make_layer(cell, INPUT, HIDDEN, 2, True, dtype=np.float64, seed=3)
    module = _torch_module(cell, torch.float64, num_layers=2, bidirectional=True)
    module.load_state_dict({k: torch.from_numpy(v) for k, v in layer.state_dict().items()},
                           strict=True)
    x = np.random.default_rng(2).standard_normal((T, B, INPUT))
    with torch.no_grad():
        t_out, _ = module(torch.from_numpy(x))
    out, _, _ = layer_forward(layer, x)
    np.testing.assert_allclose(out, t_out.numpy(), rtol=0, atol=OUTPUT_ATOL)


# ---------------------------------------------------------------------------
# Clipping inside backward vs torch.nn.utils
# ---------------------------------------------------------------------------


def torch_clip(grads, max_norm=None, clip_value=None):
    """torch.nn.utils clipping (value first, then norm) on copies of numpy grads."""
    tensors = {}
    for name, grad in grads.items():
        tensors[name] = torch.zeros(grad.shape, dtype=torch.float64, requires_grad=True)
        tensors[name].grad = torch.tensor(grad)
    if clip_value is not None:
        torch.nn.utils.clip_grad_value_(list(tensors.values()), clip_value)
    norm = None
    if max_norm is not None:
        norm = float(torch.nn.utils.clip_grad_norm_(list(tensors.values()), max_norm))
    return norm, {name: t.grad.numpy() for name, t in tensors.items()}


def _clip_case(cell, seed):
    case = make_case(cell, 2, True, True, True, seed=seed)
    t_grads = run_torch(cell, case, 2, True)[6]
    return case, t_grads


def _fast_grads_with(cell, case, **clipping):
    layer = load_from_torch(cell, case, 2, True)
    layer_forward(layer, case["x"], case["h0"], case["c0"], case["lengths"])
    layer_backward(layer, case["d_out"], case["d_hn"], case["d_cn"], **clipping)
    return layer


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("factor", [0.3, 3.0], ids=["clips", "no-clip"])
def test_max_norm_matches_clip_grad_norm(cell, factor):
    case, t_grads = _clip_case(cell, seed=500)
    total = float(np.sqrt(sum(np.sum(g**2) for g in t_grads.values())))
    max_norm = factor * total
    t_norm, t_clipped = torch_clip(t_grads, max_norm=max_norm)
    layer = _fast_grads_with(cell, case, max_norm=max_norm)
    assert layer.grad_norm == pytest.approx(t_norm, rel=1e-12)
    for name, grad in t_clipped.items():
        assert_grad_close(layer.grads[name], grad, name)
    clipped_norm = np.sqrt(sum(np.sum(g**2) for g in layer.grads.values()))
    assert clipped_norm <= max_norm * (1 + 1e-12)


@pytest.mark.parametrize("cell", CELLS)
def test_clip_value_matches_clip_grad_value(cell):
    case, t_grads = _clip_case(cell, seed=600)
    clip_value = 0.3 * max(float(np.max(np.abs(g))) for g in t_grads.values())
    _, t_clipped = torch_clip(t_grads, clip_value=clip_value)
    layer = _fast_grads_with(cell, case, clip_value=clip_value)
    assert layer.grad_norm is None
    for name, grad in t_clipped.items():
        assert_grad_close(layer.grads[name], grad, name)
        assert np.max(np.abs(layer.grads[name])) <= clip_value


@pytest.mark.parametrize("cell", CELLS)
def test_clip_value_then_max_norm_matches_torch(cell):
    case, t_grads = _clip_case(cell, seed=700)
    clip_value = 0.5 * max(float(np.max(np.abs(g))) for g in t_grads.values())
    t_norm, t_clipped = torch_clip(t_grads, max_norm=0.1, clip_value=clip_value)
    layer = _fast_grads_with(cell, case, max_norm=0.1, clip_value=clip_value)
    assert layer.grad_norm == pytest.approx(t_norm, rel=1e-12)
    for name, grad in t_clipped.items():
        assert_grad_close(layer.grads[name], grad, name)


@pytest.mark.parametrize("cell", CELLS)
def test_public_clip_functions_match_torch(cell):
    """fastrnn.clip_grad_norm / clip_grad_value on a layer and on a dict of arrays."""
    case, t_grads = _clip_case(cell, seed=800)
    t_norm, t_clipped = torch_clip(t_grads, max_norm=0.2)
    layer = _fast_grads_with(cell, case)
    assert fastrnn.clip_grad_norm(layer, 0.2) == pytest.approx(t_norm, rel=1e-12)
    grads = {name: np.array(g) for name, g in _fast_grads_with(cell, case).grads.items()}
    assert fastrnn.clip_grad_norm(grads, 0.2) == pytest.approx(t_norm, rel=1e-12)
    for name, grad in t_clipped.items():
        assert_grad_close(layer.grads[name], grad, name)
        assert_grad_close(grads[name], grad, name)

    _, t_clipped = torch_clip(t_grads, clip_value=0.05)
    layer = _fast_grads_with(cell, case)
    grads = {name: np.array(g) for name, g in layer.grads.items()}
    assert fastrnn.clip_grad_value(layer, 0.05) is None
    fastrnn.clip_grad_value(grads, 0.05)
    for name, grad in t_clipped.items():
        assert_grad_close(layer.grads[name], grad, name)
        assert_grad_close(grads[name], grad, name)
