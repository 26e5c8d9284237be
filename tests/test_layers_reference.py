"""fastrnn layers against the numpy reference (no torch needed), and the layer API:
clip_hidden and lengths, float32 vs float64, seeded init, gradient accumulation,
state_dict / load_state_dict, the params mapping, and the thread-count setting."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys

import numba
import numpy as np
import pytest
from helpers import (
    assert_ragged,
    layer_backward,
    layer_forward,
    make_layer,
    max_rel_error,
    ragged_lengths,
    random_lengths,
    random_params,
    state_shape,
)
from reference import (
    CELLS,
    reference_backward,
    reference_clip_grad_norm,
    reference_clip_grad_value,
    reference_forward,
)

import fastrnn

T, B, INPUT, HIDDEN = 5, 3, 4, 3
OUTPUT_ATOL = 1e-10
GRAD_RTOL = 1e-9
WEIGHT_SCALE = 0.8


def case_lengths(rng, use_lengths, batch, seq_len):
    """None for False; random in [1, T] for True (all may be T); for "ragged", some
    sequence shorter than T and one of length T; for "short", all shorter than T."""
    if not use_lengths:
        return None
    if use_lengths is True:
        return random_lengths(rng, batch, seq_len)
    return ragged_lengths(rng, batch, seq_len, full={"ragged": True, "short": False}[use_lengths])


def make_case(cell, num_layers, bidirectional, use_lengths=True, seed=0, sizes=(T, B, INPUT,
                                                                                HIDDEN)):
    seq_len, batch, input_size, hidden = sizes
    rng = np.random.default_rng(seed)
    params = random_params(cell, input_size, hidden, num_layers, bidirectional, rng=rng,
                           scale=WEIGHT_SCALE)
    shape = state_shape(num_layers, bidirectional, batch, hidden)
    D = 2 if bidirectional else 1
    lstm = cell == "lstm"
    problem = {
        "params": params,
        "x": rng.standard_normal((seq_len, batch, input_size)),
        "h0": rng.standard_normal(shape) * 0.5,
        "c0": rng.standard_normal(shape) * 0.5 if lstm else None,
        "lengths": case_lengths(rng, use_lengths, batch, seq_len),
        "num_layers": num_layers,
        "bidirectional": bidirectional,
    }
    cotangents = {
        "d_out": rng.standard_normal((seq_len, batch, D * hidden)),
        "d_hn": rng.standard_normal(shape),
        "d_cn": rng.standard_normal(shape) if lstm else None,
    }
    return problem, cotangents


def layer_for(cell, problem, dtype=np.float64, batch_first=False):
    input_size = problem["x"].shape[2]
    hidden = problem["params"]["weight_hh_l0"].shape[1]
    return make_layer(cell, input_size, hidden, problem["num_layers"], problem["bidirectional"],
                      batch_first=batch_first, dtype=dtype, params=problem["params"])


def run(layer, problem, cotangents, **clipping):
    """Forward + backward; returns (out, h_n, c_n, dx, dh0, dc0) in (T, B, .) layout."""
    x, d_out = problem["x"], cotangents["d_out"]
    if layer.batch_first:
        x, d_out = x.transpose(1, 0, 2), d_out.transpose(1, 0, 2)
    out, h_n, c_n = layer_forward(layer, x, problem["h0"], problem["c0"], problem["lengths"])
    dx, dh0, dc0 = layer_backward(layer, d_out, cotangents["d_hn"], cotangents["d_cn"],
                                  **clipping)
    if layer.batch_first:
        out, dx = out.transpose(1, 0, 2), dx.transpose(1, 0, 2)
    return out, h_n, c_n, dx, dh0, dc0


def assert_grad_close(actual, expected, name, rtol=GRAD_RTOL):
    err = max_rel_error(actual, expected)
    assert err <= rtol, f"{name}: relative error {err:.3e} > {rtol:.0e}"


def assert_matches_reference(cell, problem, cotangents, layer, fast, clip_hidden=None):
    out, h_n, c_n = reference_forward(cell, **problem)
    dx, dh0, dc0, grads = reference_backward(cell, **problem, **cotangents,
                                             clip_hidden=clip_hidden)
    f_out, f_hn, f_cn, f_dx, f_dh0, f_dc0 = fast
    np.testing.assert_allclose(f_out, out, rtol=0, atol=OUTPUT_ATOL, err_msg="out")
    np.testing.assert_allclose(f_hn, h_n, rtol=0, atol=OUTPUT_ATOL, err_msg="h_n")
    if cell == "lstm":
        np.testing.assert_allclose(f_cn, c_n, rtol=0, atol=OUTPUT_ATOL, err_msg="c_n")
        assert_grad_close(f_dc0, dc0, "dc0")
    assert_grad_close(f_dx, dx, "dx")
    assert_grad_close(f_dh0, dh0, "dh0")
    assert set(layer.grads) == set(grads)
    for name, grad in grads.items():
        assert_grad_close(layer.grads[name], grad, name)
    return grads


# ---------------------------------------------------------------------------
# Against the reference: lengths and clip_hidden
# ---------------------------------------------------------------------------

# Lengths: None (every sequence spans T steps, id "full"), "ragged" (id "len": some
# sequence shorter than T, one of length T) or "short" (id "lenshort": all shorter than T).
LENGTHS_IDS = {None: "full", "ragged": "len", "short": "lenshort"}
GRID = list(itertools.product(CELLS, ((1, False), (2, True)), tuple(LENGTHS_IDS),
                              (None, 0.05)))


@pytest.mark.parametrize(
    "cell, shape, use_lengths, clip_hidden", GRID,
    ids=[f"{c}-L{n}-{'bi' if b else 'uni'}-{LENGTHS_IDS[u]}-clip{h}"
         for c, (n, b), u, h in GRID],
)
def test_matches_reference(cell, shape, use_lengths, clip_hidden):
    num_layers, bidirectional = shape
    seed = GRID.index((cell, shape, use_lengths, clip_hidden))
    problem, cotangents = make_case(cell, num_layers, bidirectional, use_lengths, seed=seed)
    if use_lengths:
        assert_ragged(problem["lengths"], T, full=use_lengths == "ragged")
    else:
        assert problem["lengths"] is None
    layer = layer_for(cell, problem, batch_first=bool(seed % 2))
    fast = run(layer, problem, cotangents, clip_hidden=clip_hidden)
    assert_matches_reference(cell, problem, cotangents, layer, fast, clip_hidden)
    if clip_hidden is not None:  # the clip must have bitten for the test to mean anything
        unclipped = reference_backward(cell, **problem, **cotangents)
        assert not np.allclose(fast[3], unclipped[0])


@pytest.mark.parametrize("cell", CELLS)
def test_small_batch_large_hidden_matches_reference(cell):
    """A batch far smaller than the hidden size takes the weight-major per-step
    product; bidirectional, with lengths and initial states."""
    from fastrnn._kernels.sequence import product_scratch

    sizes = (4, 3, 5, 512)
    no_blocks = np.empty((0, 0, sizes[3], 0))
    assert product_scratch(np.zeros((sizes[1], sizes[3])), sizes[3], no_blocks)[1].shape[0] > 0
    problem, cotangents = make_case(cell, 1, True, seed=5, sizes=sizes)
    layer = layer_for(cell, problem)
    fast = run(layer, problem, cotangents)
    assert_matches_reference(cell, problem, cotangents, layer, fast, None)


@pytest.mark.parametrize("cell", CELLS)
def test_padded_steps_give_zero_output_and_zero_dx(cell):
    problem, cotangents = make_case(cell, 2, True, seed=41)
    problem["lengths"] = np.array([T, 2, 1])
    layer = layer_for(cell, problem)
    out, _, _, dx, _, _ = run(layer, problem, cotangents)
    for b, length in enumerate(problem["lengths"]):
        np.testing.assert_array_equal(out[length:, b], 0.0)
        np.testing.assert_array_equal(dx[length:, b], 0.0)
        if cell != "rnn_relu":  # relu outputs may be exactly 0 at valid steps
            assert np.all(out[:length, b] != 0.0)


@pytest.mark.parametrize("cell", CELLS)
def test_clipping_keywords_match_reference_clip(cell):
    """backward(clip_value=v, max_norm=m) == reference grads, value-clipped, then norm-clipped."""
    problem, cotangents = make_case(cell, 2, True, seed=42)
    grads = reference_backward(cell, **problem, **cotangents)[3]
    clip_value = 0.4 * max(float(np.max(np.abs(g))) for g in grads.values())
    reference_clip_grad_value(grads, clip_value)
    norm = reference_clip_grad_norm(grads, 0.3)
    layer = layer_for(cell, problem)
    run(layer, problem, cotangents, max_norm=0.3, clip_value=clip_value)
    assert layer.grad_norm == pytest.approx(norm, rel=1e-12)
    for name, grad in grads.items():
        assert_grad_close(layer.grads[name], grad, name)


# ---------------------------------------------------------------------------
# float32 against float64
# ---------------------------------------------------------------------------


def _rel(actual, expected):
    return max_rel_error(np.asarray(actual, dtype=np.float64), expected)


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("bidirectional", [False, True])
def test_float32_agrees_with_float64_from_the_same_seed(cell, bidirectional):
    rng = np.random.default_rng(7)
    shape = state_shape(2, bidirectional, 4, 8)
    x = rng.standard_normal((6, 4, 5))
    h0 = rng.standard_normal(shape) * 0.5
    c0 = rng.standard_normal(shape) * 0.5 if cell == "lstm" else None
    lengths = np.array([6, 3, 1, 5])
    d_out = rng.standard_normal((6, 4, (2 if bidirectional else 1) * 8))
    d_hn = rng.standard_normal(shape)
    d_cn = rng.standard_normal(shape) if cell == "lstm" else None

    results = {}
    for dtype in (np.float32, np.float64):
        layer = make_layer(cell, 5, 8, 2, bidirectional, dtype=dtype, seed=2024)
        out, h_n, c_n = layer_forward(layer, x.astype(dtype), h0, c0, lengths)
        dx, dh0, dc0 = layer_backward(layer, d_out.astype(dtype), d_hn, d_cn)
        for name, a in (("out", out), ("h_n", h_n), ("dx", dx), ("dh0", dh0)):
            assert a.dtype == dtype, name
        for name, a in layer.grads.items():
            assert a.dtype == dtype and layer.params[name].dtype == dtype
        results[dtype] = (layer, (out, h_n, c_n, dx, dh0, dc0))

    layer32, fast32 = results[np.float32]
    layer64, fast64 = results[np.float64]
    for name in layer64.params:
        np.testing.assert_allclose(layer32.params[name], layer64.params[name], rtol=1e-7,
                                   atol=0, err_msg=name)
    for name, a32, a64 in zip(("out", "h_n", "c_n", "dx", "dh0", "dc0"), fast32, fast64):
        if a64 is None:
            assert a32 is None
            continue
        assert _rel(a32, a64) <= 1e-4, name
    for name in layer64.grads:
        assert _rel(layer32.grads[name], layer64.grads[name]) <= 1e-4, name


# ---------------------------------------------------------------------------
# Initialisation
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("cell", CELLS)
def test_seeded_init_is_reproducible_and_uniform_in_bound(cell):
    hidden = 16
    a = make_layer(cell, 5, hidden, 2, True, dtype=np.float32, seed=11)
    b = make_layer(cell, 5, hidden, 2, True, dtype=np.float32, seed=11)
    c = make_layer(cell, 5, hidden, 2, True, dtype=np.float32, seed=12)
    bound = 1.0 / np.sqrt(hidden)
    values = np.concatenate([p.ravel() for p in a.params.values()])
    for name in a.params:
        np.testing.assert_array_equal(a.params[name], b.params[name], err_msg=name)
        assert not np.array_equal(a.params[name], c.params[name]), name
        assert np.all(np.abs(a.params[name]) <= bound), name
    # Spread over the whole interval, centred: a uniform draw, not a constant or a normal.
    assert values.min() < -0.95 * bound and values.max() > 0.95 * bound
    assert abs(values.mean()) < 0.05 * bound
    assert np.std(values) == pytest.approx(bound / np.sqrt(3), rel=0.05)
    # seed=None draws fresh numbers each time.
    d = make_layer(cell, 5, hidden, dtype=np.float32)
    e = make_layer(cell, 5, hidden, dtype=np.float32)
    assert not np.array_equal(d.params["weight_ih_l0"], e.params["weight_ih_l0"])


# ---------------------------------------------------------------------------
# Gradient accumulation
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("cell", CELLS)
def test_zero_grad_and_accumulation(cell):
    problem, cotangents = make_case(cell, 2, True, seed=43)
    layer = layer_for(cell, problem)
    for name, grad in layer.grads.items():
        np.testing.assert_array_equal(grad, 0.0, err_msg=name)

    first = run(layer, problem, cotangents)
    once = {name: g.copy() for name, g in layer.grads.items()}
    assert all(np.any(g != 0.0) for g in once.values())
    # A second backward of the same forward accumulates: grads double, dx etc. repeat.
    dx, dh0, dc0 = layer_backward(layer, cotangents["d_out"], cotangents["d_hn"],
                                  cotangents["d_cn"])
    np.testing.assert_array_equal(dx, first[3])
    np.testing.assert_array_equal(dh0, first[4])
    for name, grad in once.items():
        np.testing.assert_allclose(layer.grads[name], 2.0 * grad, rtol=1e-14, atol=0,
                                   err_msg=name)

    layer.zero_grad()
    for name, grad in layer.grads.items():
        np.testing.assert_array_equal(grad, 0.0, err_msg=name)
    # The grads mapping still shows the layer's live buffer after zero_grad.
    run(layer, problem, cotangents)
    for name, grad in once.items():
        np.testing.assert_array_equal(layer.grads[name], grad, err_msg=name)


@pytest.mark.parametrize("cell", CELLS)
def test_backward_refers_to_the_latest_forward_and_accumulates_across_inputs(cell):
    p1, c1 = make_case(cell, 1, True, seed=44)
    p2, c2 = make_case(cell, 1, True, seed=45)
    p2["params"] = p1["params"]
    g1 = reference_backward(cell, **p1, **c1)[3]
    g2 = reference_backward(cell, **p2, **c2)[3]
    layer = layer_for(cell, p1)
    layer_forward(layer, p1["x"], p1["h0"], p1["c0"], p1["lengths"])
    layer_backward(layer, c1["d_out"], c1["d_hn"], c1["d_cn"])
    layer_forward(layer, p2["x"], p2["h0"], p2["c0"], p2["lengths"])
    layer_backward(layer, c2["d_out"], c2["d_hn"], c2["d_cn"])
    for name in g1:
        assert_grad_close(layer.grads[name], g1[name] + g2[name], name)


# ---------------------------------------------------------------------------
# state_dict, load_state_dict and the params mapping
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("cell", CELLS)
def test_state_dict_returns_copies(cell):
    layer = make_layer(cell, 3, 4, 2, True, seed=1)
    state = layer.state_dict()
    assert list(state) == list(layer.params)
    for name, value in state.items():
        assert isinstance(value, np.ndarray) and value.dtype == layer.dtype
        np.testing.assert_array_equal(value, layer.params[name])
        assert not np.shares_memory(value, layer.params[name]), name
        value[...] = 123.0
    assert all(np.all(np.abs(p) < 1.0) for p in layer.params.values())
    # And load_state_dict copies in: editing the source later leaves the layer alone.
    source = make_layer(cell, 3, 4, 2, True, seed=2).state_dict()
    layer.load_state_dict(source)
    expected = {name: v.copy() for name, v in source.items()}
    for value in source.values():
        value[...] = -5.0
    for name, value in expected.items():
        np.testing.assert_array_equal(layer.params[name], value)


def _assert_params(layer, expected):
    for name, value in expected.items():
        np.testing.assert_array_equal(layer.params[name], value, err_msg=name)


@pytest.mark.parametrize("cell", CELLS)
def test_bad_load_state_dict_raises_and_changes_nothing(cell):
    layer = make_layer(cell, 3, 4, 2, True, seed=1)
    before = layer.state_dict()
    # Valid new values for every key, so a partial write would be visible.
    new = {name: v + 0.5 for name, v in before.items()}

    missing = dict(new)
    del missing["bias_hh_l1_reverse"]
    with pytest.raises(KeyError, match="bias_hh_l1_reverse"):
        layer.load_state_dict(missing)
    _assert_params(layer, before)

    extra = dict(new, weight_ih_l2=np.zeros((4, 8)))
    with pytest.raises(KeyError, match="weight_ih_l2"):
        layer.load_state_dict(extra)
    _assert_params(layer, before)

    for bad_name in ("weight_ih_l0", "weight_hh_l1_reverse"):  # first and last weights
        misshaped = dict(new)
        misshaped[bad_name] = np.zeros(new[bad_name].shape[::-1] + (1,))
        with pytest.raises(ValueError, match=bad_name):
            layer.load_state_dict(misshaped)
        _assert_params(layer, before)

    transposed = dict(new, weight_hh_l1_reverse=new["weight_hh_l1_reverse"].T)
    if transposed["weight_hh_l1_reverse"].shape != new["weight_hh_l1_reverse"].shape:
        with pytest.raises(ValueError, match="weight_hh_l1_reverse"):
            layer.load_state_dict(transposed)
        _assert_params(layer, before)

    with pytest.raises(TypeError, match="bias_ih_l0"):
        layer.load_state_dict(dict(new, bias_ih_l0=np.array(["a"] * new["bias_ih_l0"].size)))
    _assert_params(layer, before)

    with pytest.raises(TypeError, match="state_dict"):
        layer.load_state_dict(list(new.values()))
    _assert_params(layer, before)

    layer.load_state_dict(new)  # the good dict still loads afterwards
    _assert_params(layer, new)


def test_load_state_dict_casts_array_likes():
    layer = make_layer("gru", 2, 1, dtype=np.float32, seed=0)
    state = {name: np.arange(v.size).reshape(v.shape).tolist()  # nested lists of ints
             for name, v in layer.params.items()}
    layer.load_state_dict(state)
    for name, value in state.items():
        assert layer.params[name].dtype == np.float32
        np.testing.assert_array_equal(layer.params[name], np.array(value, dtype=np.float32))


@pytest.mark.parametrize("cell", CELLS)
def test_params_cannot_be_rebound_but_edit_in_place(cell):
    layer = make_layer(cell, 3, 4, dtype=np.float64, seed=1)
    original = layer.params["weight_ih_l0"]
    for mapping in (layer.params, layer.grads):
        with pytest.raises(TypeError):
            mapping["weight_ih_l0"] = np.zeros_like(original)
        with pytest.raises(TypeError):
            del mapping["weight_ih_l0"]
        with pytest.raises(TypeError):
            mapping["new_key"] = np.zeros(3)
    assert layer.params["weight_ih_l0"] is original or np.shares_memory(
        layer.params["weight_ih_l0"], original)

    # In-place edits are the layer's weights: they show in state_dict and in forward.
    x = np.random.default_rng(0).standard_normal((4, 2, 3))
    for value in layer.params.values():
        value[...] = 0.0
    layer.params["bias_ih_l0"][...] = 0.25
    np.testing.assert_array_equal(layer.state_dict()["bias_ih_l0"], 0.25)
    params = {name: v.copy() for name, v in layer.params.items()}
    out, h_n, c_n = layer_forward(layer, x)
    ref_out, _, _ = reference_forward(cell, params, x)
    np.testing.assert_allclose(out, ref_out, rtol=0, atol=1e-15)
    assert np.all(out != 0.0)


# ---------------------------------------------------------------------------
# The public handles that code serving every cell uses (model, gradcheck, CLI)
# ---------------------------------------------------------------------------

CLIPPING = dict(max_norm=0.5, clip_value=0.2, clip_hidden=0.3)


@pytest.mark.parametrize("cell", CELLS)
def test_forward_states_and_backward_states_are_the_layer_call_in_parts(cell):
    problem, cotangents = make_case(cell, 2, True, seed=46)
    by_call, by_parts = layer_for(cell, problem), layer_for(cell, problem)
    expected = run(by_call, problem, cotangents, **CLIPPING)
    out, h_n, c_n = by_parts.forward_states(problem["x"], problem["h0"], problem["c0"],
                                            lengths=problem["lengths"])
    dx, dh0, dc0 = by_parts.backward_states(cotangents["d_out"], cotangents["d_hn"],
                                            cotangents["d_cn"], **CLIPPING)
    got = (out, h_n, c_n, dx, dh0, dc0)
    for name, value, want in zip(("out", "h_n", "c_n", "dx", "dh0", "dc0"), got, expected):
        if want is None:
            assert value is None, name
        else:
            np.testing.assert_array_equal(value, want, err_msg=name)
    assert (c_n is not None) == (dc0 is not None) == by_parts.has_cell_state == (cell == "lstm")
    np.testing.assert_array_equal(by_parts.flat_grads, by_call.flat_grads)
    assert by_parts.grad_norm == by_call.grad_norm
    # No state given: zeros, as the layer call's default.
    out, h_n, c_n = by_parts.forward_states(problem["x"])
    expected = layer_forward(by_call, problem["x"])
    for name, value, want in zip(("out", "h_n", "c_n"), (out, h_n, c_n), expected):
        np.testing.assert_array_equal(value, want, err_msg=name)


@pytest.mark.parametrize("cell", CELLS)
def test_state_parts_and_a_cell_state_for_a_layer_without_one(cell):
    layer = make_layer(cell, 3, 4, dtype=np.float64, seed=1)
    x, d_out = np.zeros((5, 2, 3)), np.zeros((5, 2, 4))
    h, c = np.zeros((1, 2, 4)), np.ones((1, 2, 4))
    assert layer.state_parts(None) == (None, None)
    if layer.has_cell_state:
        parts = layer.state_parts((h, c))
        assert parts[0] is h and parts[1] is c
        with pytest.raises(TypeError, match="state must be a pair"):
            layer.state_parts(h)
        return
    parts = layer.state_parts(h)
    assert parts[0] is h and parts[1] is None
    with pytest.raises(ValueError, match="c0 must be None"):
        layer.forward_states(x, h, c)
    layer.forward_states(x, h)
    with pytest.raises(ValueError, match="d_cn must be None"):
        layer.backward_states(d_out, None, c)


@pytest.mark.parametrize("cell", CELLS)
def test_flat_params_and_flat_grads_hold_params_and_grads_in_order(cell):
    problem, cotangents = make_case(cell, 2, True, seed=48)
    layer = layer_for(cell, problem)

    def concatenated(mapping):
        return np.concatenate([value.ravel() for value in mapping.values()])

    np.testing.assert_array_equal(layer.flat_params, concatenated(layer.params))
    run(layer, problem, cotangents)
    assert np.any(layer.flat_grads != 0.0)
    np.testing.assert_array_equal(layer.flat_grads, concatenated(layer.grads))
    # The same memory: writing the flat buffer writes every named array.
    layer.flat_params[:] = np.arange(layer.flat_params.size)
    np.testing.assert_array_equal(concatenated(layer.params), np.arange(layer.flat_params.size))
    for name in ("flat_params", "flat_grads"):
        with pytest.raises(AttributeError):
            setattr(layer, name, np.zeros(3))


@pytest.mark.parametrize("cell", CELLS)
def test_bind_buffers_moves_the_numbers_into_the_callers_buffers(cell):
    problem, cotangents = make_case(cell, 2, True, seed=47)
    moved, kept = layer_for(cell, problem), layer_for(cell, problem)
    size = moved.flat_params.size
    params_buffer, grads_buffer = np.full(size + 3, 7.0), np.full(size + 3, 7.0)
    inside = slice(1, size + 1)
    assert moved.bind_buffers(params_buffer[inside], grads_buffer[inside]) is moved
    np.testing.assert_array_equal(params_buffer[inside], kept.flat_params)  # copied in
    np.testing.assert_array_equal(grads_buffer[inside], 0.0)
    for buffer, flat, named in ((params_buffer, moved.flat_params, moved.params),
                                (grads_buffer, moved.flat_grads, moved.grads)):
        assert np.shares_memory(flat, buffer)
        assert all(np.shares_memory(value, buffer) for value in named.values())
    # The layer computes from the caller's buffer and writes its gradients there,
    # and nothing outside the given slices.
    for name, got, want in zip(("out", "h_n", "c_n", "dx", "dh0", "dc0"),
                               run(moved, problem, cotangents), run(kept, problem, cotangents)):
        if want is not None:
            np.testing.assert_array_equal(got, want, err_msg=name)
    np.testing.assert_array_equal(grads_buffer[inside], kept.flat_grads)
    for buffer in (params_buffer, grads_buffer):
        np.testing.assert_array_equal(buffer[[0, -2, -1]], 7.0)
    # A change the caller makes in its buffer is a change of the layer's weights.
    params_buffer[inside] *= 0.5
    for name, value in moved.state_dict().items():
        np.testing.assert_array_equal(value, 0.5 * kept.params[name], err_msg=name)


def test_bind_buffers_refuses_buffers_it_cannot_use_and_changes_nothing():
    layer = make_layer("lstm", 3, 4, dtype=np.float64, seed=1)
    original, before = layer.flat_params, layer.flat_params.copy()
    size = original.size
    read_only = np.zeros(size)
    read_only.flags.writeable = False
    shared = np.zeros(size + 1)
    cases = [
        ((list(np.zeros(size)), np.zeros(size)), TypeError, "flat_params must be a numpy array"),
        ((np.zeros(size, np.float32), np.zeros(size)), TypeError,
         "flat_params must have dtype float64"),
        ((np.zeros(size), np.zeros(size, np.int64)), TypeError, "flat_grads must be float32"),
        ((np.zeros(size + 1), np.zeros(size)), ValueError, "flat_params must have shape"),
        ((np.zeros((size, 1)), np.zeros(size)), ValueError, "flat_params must be a flat 1-D"),
        ((np.zeros(2 * size)[::2], np.zeros(size)), ValueError, "C-contiguous"),
        ((np.zeros(size), read_only), ValueError, "flat_grads must be writeable"),
        ((shared[:size], shared[1:]), ValueError, "must not overlap"),
    ]
    for (flat_params, flat_grads), error, message in cases:
        with pytest.raises(error, match=message):
            layer.bind_buffers(flat_params, flat_grads)
        assert layer.flat_params is original
        np.testing.assert_array_equal(layer.flat_params, before)


# ---------------------------------------------------------------------------
# Threads
# ---------------------------------------------------------------------------


@pytest.fixture
def restore_threads():
    saved = fastrnn.get_num_threads()
    yield saved
    fastrnn.set_num_threads(saved)


def test_num_threads_round_trip_and_invalid_values(restore_threads):
    maximum = numba.config.NUMBA_NUM_THREADS
    assert 1 <= restore_threads <= maximum
    for n in sorted({1, maximum}):
        fastrnn.set_num_threads(n)
        assert fastrnn.get_num_threads() == n
    fastrnn.set_num_threads(np.int64(1))
    assert fastrnn.get_num_threads() == 1
    for bad in (0, -1, maximum + 1):
        with pytest.raises(ValueError, match="between 1 and"):
            fastrnn.set_num_threads(bad)
    for bad in (1.5, "2", None, True):
        with pytest.raises(TypeError):
            fastrnn.set_num_threads(bad)
    assert fastrnn.get_num_threads() == 1  # failed calls changed nothing


def test_threads_default_and_environment_variable():
    code = "import fastrnn, numba; print(fastrnn.get_num_threads(), numba.config.NUMBA_NUM_THREADS)"
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, PYTHONPATH=root + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.pop("FASTRNN_NUM_THREADS", None)
    default = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                             text=True, check=True).stdout.split()
    assert default[0] == default[1]
    env["FASTRNN_NUM_THREADS"] = "1"
    one = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                         text=True, check=True).stdout.split()
    assert one[0] == "1"
    env["FASTRNN_NUM_THREADS"] = "zero"
    bad = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert bad.returncode != 0 and "FASTRNN_NUM_THREADS" in bad.stderr


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_one_thread_equals_two_threads(cell, dtype, restore_threads, monkeypatch):
    """fastrnn.set_num_threads(1) against (2) at a size above the serial threshold:
    the second splits the batch across two threads (asserted), on any machine
    (tests/conftest.py lets numba start 3 threads even on one core)."""
    from fastrnn import _threads

    monkeypatch.setattr(_threads, "STRATEGY", "batch")
    problem, cotangents = make_case(cell, 2, True, seed=46, sizes=(48, 6, 32, 32))
    results = {}
    for threads in (1, 2):
        fastrnn.set_num_threads(threads)
        layer = layer_for(cell, problem, dtype=dtype)
        with _threads.observed_runs() as runs:
            fast = run(layer, problem, cotangents, clip_hidden=0.5, max_norm=1.0)
        assert {record["threads"] for record in runs} == {threads}
        results[threads] = (fast, {k: g.copy() for k, g in layer.grads.items()},
                            layer.grad_norm)
    (f1, g1, n1), (f2, g2, n2) = results[1], results[2]
    # the split sums the weight gradients in another order: 2e-12 (float64) and 3.4e-4
    # (float32, relu Elman: clipping and relu amplify rounding) apart on a Zen 1 EPYC
    tol = 1e-11 if dtype == np.float64 else 1e-3
    assert n1 == pytest.approx(n2, rel=tol)
    for name, a, b in zip(("out", "h_n", "c_n", "dx", "dh0", "dc0"), f1, f2):
        if a is not None:
            assert _rel(a, b) <= tol, name
    for name in g1:
        assert _rel(g1[name], g2[name]) <= tol, name
