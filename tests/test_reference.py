"""Validate the numpy reference (tests/reference.py) itself.

The fast kernels are tested against the reference, so the reference must first be
shown to be right: against torch in float64 (forward and every gradient), against
central finite differences (no torch needed), and for its gradient-clipping semantics.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from helpers import (
    assert_ragged,
    ragged_lengths,
    random_lengths,
    random_params,
    state_shape,
    torch_forward_backward,
)
from reference import (
    CELLS,
    TORCH_CELLS,
    backward,
    forward,
    reference_backward,
    reference_clip_grad_norm,
    reference_clip_grad_value,
    reference_forward,
)

# Small on purpose: 64 torch comparisons plus finite differences stay well under 20 s.
T, B, INPUT, HIDDEN = 5, 3, 4, 3
OUTPUT_ATOL = 1e-10
GRAD_RTOL = 1e-9
# Larger than torch's 1/sqrt(H) init so the gates leave their linear region and the
# nonlinear parts of the derivatives actually matter.
WEIGHT_SCALE = 0.8


def max_rel_error(actual, expected):
    """Largest absolute difference, relative to the largest expected magnitude."""
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    scale = max(float(np.max(np.abs(expected), initial=0.0)), 1e-300)
    return float(np.max(np.abs(actual - expected), initial=0.0)) / scale


def assert_grad_close(actual, expected, name, rtol=GRAD_RTOL):
    err = max_rel_error(actual, expected)
    assert err <= rtol, f"{name}: relative error {err:.3e} > {rtol:.0e}"


def make_problem(cell, num_layers, bidirectional, use_lengths, give_state, bias=True, seed=0,
                 sizes=(T, B, INPUT, HIDDEN)):
    """Random params, inputs, initial states, lengths and output cotangents.

    use_lengths: False (none), True (random in [1, T], all may be T), "ragged" (some
    sequence shorter than T and one of length T) or "short" (all shorter than T)."""
    seq_len, batch, input_size, hidden = sizes
    rng = np.random.default_rng(seed)
    params = random_params(cell, input_size, hidden, num_layers, bidirectional, bias, rng=rng,
                           scale=WEIGHT_SCALE)
    x = rng.standard_normal((seq_len, batch, input_size))
    shape = state_shape(num_layers, bidirectional, batch, hidden)
    h0 = rng.standard_normal(shape) * 0.5 if give_state else None
    c0 = rng.standard_normal(shape) * 0.5 if give_state and cell == "lstm" else None
    if use_lengths is True:
        lengths = random_lengths(rng, batch, seq_len)
    elif use_lengths:
        lengths = ragged_lengths(rng, batch, seq_len, full={"ragged": True, "short": False}[
            use_lengths])
    else:
        lengths = None
    D = 2 if bidirectional else 1
    d_out = rng.standard_normal((seq_len, batch, D * hidden))
    d_hn = rng.standard_normal(shape)
    d_cn = rng.standard_normal(shape) if cell == "lstm" else None
    problem = {"params": params, "x": x, "h0": h0, "c0": c0, "lengths": lengths,
               "num_layers": num_layers, "bidirectional": bidirectional}
    cotangents = {"d_out": d_out, "d_hn": d_hn, "d_cn": d_cn}
    return problem, cotangents


# ---------------------------------------------------------------------------
# Against torch
# ---------------------------------------------------------------------------

# Lengths: False (id "full"), "ragged" (id "len": some sequence shorter than T, one of
# length T) or "short" (id "lenshort": all shorter than T, so torch's pad_packed_sequence
# needs total_length).
LENGTHS_IDS = {False: "full", "ragged": "len", "short": "lenshort"}
TORCH_GRID = list(itertools.product(TORCH_CELLS, (1, 2), (False, True), tuple(LENGTHS_IDS),
                                    (False, True)))


def _compare_with_torch(cell, problem, cotangents, bias=True):
    out, h_n, c_n = reference_forward(cell, **problem)
    dx, dh0, dc0, grads = reference_backward(cell, **problem, **cotangents)
    (t_out, t_hn, t_cn, t_dx, t_dh0, t_dc0, t_grads) = torch_forward_backward(
        cell, **problem, **cotangents, bias=bias)

    np.testing.assert_allclose(out, t_out, rtol=0, atol=OUTPUT_ATOL)
    np.testing.assert_allclose(h_n, t_hn, rtol=0, atol=OUTPUT_ATOL)
    if cell == "lstm":
        np.testing.assert_allclose(c_n, t_cn, rtol=0, atol=OUTPUT_ATOL)
    else:
        assert c_n is None and dc0 is None

    assert set(grads) == set(t_grads)
    for name in grads:
        assert_grad_close(grads[name], t_grads[name], name)
    assert_grad_close(dx, t_dx, "dx")
    if problem["h0"] is not None:
        assert_grad_close(dh0, t_dh0, "dh0")
    if problem["c0"] is not None:
        assert_grad_close(dc0, t_dc0, "dc0")


@pytest.mark.parametrize(
    "cell, num_layers, bidirectional, use_lengths, give_state", TORCH_GRID,
    ids=[f"{c}-L{n}-{'bi' if b else 'uni'}-{LENGTHS_IDS[u]}-{'h0' if g else 'noh0'}"
         for c, n, b, u, g in TORCH_GRID],
)
def test_matches_torch(cell, num_layers, bidirectional, use_lengths, give_state):
    pytest.importorskip("torch", reason="torch validates the reference")
    seed = TORCH_GRID.index((cell, num_layers, bidirectional, use_lengths, give_state))
    problem, cotangents = make_problem(cell, num_layers, bidirectional, use_lengths,
                                       give_state, seed=seed)
    if use_lengths:
        assert_ragged(problem["lengths"], T, full=use_lengths == "ragged")
    else:
        assert problem["lengths"] is None
    _compare_with_torch(cell, problem, cotangents)


@pytest.mark.parametrize("cell", TORCH_CELLS)
def test_matches_torch_without_bias(cell):
    pytest.importorskip("torch", reason="torch validates the reference")
    problem, cotangents = make_problem(cell, 2, True, True, True, bias=False, seed=1)
    assert not any(name.startswith("bias") for name in problem["params"])
    _compare_with_torch(cell, problem, cotangents, bias=False)


def test_clip_helpers_match_torch():
    torch = pytest.importorskip("torch", reason="torch validates the reference")
    rng = np.random.default_rng(3)
    for max_norm in (0.1, 1.0, 1e6):  # clipping, clipping, and no clipping
        grads = {"a": rng.standard_normal((3, 4)), "b": rng.standard_normal(5)}
        tensors = [torch.zeros(g.shape, dtype=torch.float64, requires_grad=True)
                   for g in grads.values()]
        for t, g in zip(tensors, grads.values()):
            t.grad = torch.tensor(g)
        t_norm = torch.nn.utils.clip_grad_norm_(tensors, max_norm)
        norm = reference_clip_grad_norm(grads, max_norm)
        assert norm == pytest.approx(float(t_norm), rel=1e-14)
        for t, g in zip(tensors, grads.values()):
            np.testing.assert_allclose(g, t.grad.numpy(), rtol=1e-14, atol=0)

    grads = {"a": rng.standard_normal((3, 4)), "b": rng.standard_normal(5)}
    tensors = [torch.zeros(g.shape, dtype=torch.float64, requires_grad=True)
               for g in grads.values()]
    for t, g in zip(tensors, grads.values()):
        t.grad = torch.tensor(g)
    torch.nn.utils.clip_grad_value_(tensors, 0.5)
    reference_clip_grad_value(grads, 0.5)
    for t, g in zip(tensors, grads.values()):
        np.testing.assert_array_equal(g, t.grad.numpy())


# ---------------------------------------------------------------------------
# Finite differences (no torch)
# ---------------------------------------------------------------------------


def _objective(cell, problem, cotangents):
    """The scalar whose gradient reference_backward returns."""
    out, h_n, c_n = reference_forward(cell, **problem)
    value = np.sum(out * cotangents["d_out"]) + np.sum(h_n * cotangents["d_hn"])
    if cell == "lstm":
        value += np.sum(c_n * cotangents["d_cn"])
    return value


def _central_difference(f, array, eps=1e-6):
    """Gradient of f() with respect to `array`, perturbing it in place."""
    grad = np.zeros_like(array)
    for index in np.ndindex(array.shape):
        saved = array[index]
        array[index] = saved + eps
        plus = f()
        array[index] = saved - eps
        minus = f()
        array[index] = saved
        grad[index] = (plus - minus) / (2 * eps)
    return grad


@pytest.mark.parametrize("cell", CELLS)
def test_backward_matches_finite_differences(cell):
    # Tiny, but with everything on: 2 layers, both directions, ragged lengths, h0/c0.
    problem, cotangents = make_problem(cell, 2, True, True, True, seed=7, sizes=(4, 2, 2, 2))
    problem["lengths"] = np.array([4, 2])
    dx, dh0, dc0, grads = reference_backward(cell, **problem, **cotangents)

    def f():
        return _objective(cell, problem, cotangents)

    checks = [("dx", dx, problem["x"]), ("dh0", dh0, problem["h0"])]
    if cell == "lstm":
        checks.append(("dc0", dc0, problem["c0"]))
    checks += [(name, grads[name], problem["params"][name]) for name in grads]
    for name, analytic, array in checks:
        numeric = _central_difference(f, array)
        np.testing.assert_allclose(analytic, numeric, rtol=1e-6, atol=1e-8, err_msg=name)


# ---------------------------------------------------------------------------
# Semantics without torch: lengths and hidden-gradient clipping
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("clip_hidden", [None, 0.3])
@pytest.mark.parametrize("cell", CELLS)
def test_ragged_batch_equals_each_sequence_alone(cell, clip_hidden):
    """A padded batch behaves as if each sequence ran alone over its own length; with
    clip_hidden this pins down that padded steps pass gradients through unclipped."""
    problem, cotangents = make_problem(cell, 2, True, True, True, seed=11)
    problem["lengths"] = np.array([T, 2, 1])
    out, h_n, c_n = reference_forward(cell, **problem)
    dx, dh0, dc0, grads = reference_backward(cell, **problem, **cotangents,
                                             clip_hidden=clip_hidden)

    summed_grads = {name: np.zeros_like(g) for name, g in grads.items()}
    for b, length in enumerate(problem["lengths"]):
        alone = dict(problem, x=problem["x"][:length, b:b + 1], lengths=None,
                     h0=problem["h0"][:, b:b + 1],
                     c0=None if problem["c0"] is None else problem["c0"][:, b:b + 1])
        alone_cot = {
            "d_out": cotangents["d_out"][:length, b:b + 1],
            "d_hn": cotangents["d_hn"][:, b:b + 1],
            "d_cn": None if cotangents["d_cn"] is None else cotangents["d_cn"][:, b:b + 1],
        }
        a_out, a_hn, a_cn = reference_forward(cell, **alone)
        a_dx, a_dh0, a_dc0, a_grads = reference_backward(cell, **alone, **alone_cot,
                                                         clip_hidden=clip_hidden)
        np.testing.assert_allclose(out[:length, b:b + 1], a_out, rtol=0, atol=1e-14)
        np.testing.assert_array_equal(out[length:, b], 0.0)
        np.testing.assert_allclose(h_n[:, b:b + 1], a_hn, rtol=0, atol=1e-14)
        np.testing.assert_allclose(dx[:length, b:b + 1], a_dx, rtol=0, atol=1e-12)
        np.testing.assert_array_equal(dx[length:, b], 0.0)
        np.testing.assert_allclose(dh0[:, b:b + 1], a_dh0, rtol=0, atol=1e-12)
        if cell == "lstm":
            np.testing.assert_allclose(c_n[:, b:b + 1], a_cn, rtol=0, atol=1e-14)
            np.testing.assert_allclose(dc0[:, b:b + 1], a_dc0, rtol=0, atol=1e-12)
        for name in summed_grads:
            summed_grads[name] += a_grads[name]
    for name in grads:
        np.testing.assert_allclose(grads[name], summed_grads[name], rtol=0, atol=1e-12,
                                   err_msg=name)


@pytest.mark.parametrize("cell", CELLS)
def test_clip_hidden_none_equals_huge_and_small_changes_result(cell):
    problem, cotangents = make_problem(cell, 2, True, True, True, seed=5)
    unclipped = reference_backward(cell, **problem, **cotangents, clip_hidden=None)
    huge = reference_backward(cell, **problem, **cotangents, clip_hidden=1e300)
    small = reference_backward(cell, **problem, **cotangents, clip_hidden=0.05)
    for a, h, s, name in zip(unclipped[:3], huge[:3], small[:3], ("dx", "dh0", "dc0")):
        if a is None:
            continue
        np.testing.assert_array_equal(a, h, err_msg=name)
        assert not np.allclose(a, s), f"{name} unchanged by clip_hidden=0.05"
    for name in unclipped[3]:
        np.testing.assert_array_equal(unclipped[3][name], huge[3][name], err_msg=name)
    assert any(not np.allclose(unclipped[3][n], small[3][n]) for n in unclipped[3])


@pytest.mark.parametrize("cell", CELLS)
def test_clip_hidden_clips_d_out_plus_d_hn_at_the_first_step(cell):
    """With one step, clipping must act on d_out + d_hn together: identical to no
    clipping with d_out replaced by clip(d_out + d_hn) and d_hn = 0."""
    rng = np.random.default_rng(2)
    params = random_params(cell, INPUT, HIDDEN, rng=rng, scale=WEIGHT_SCALE)
    x = rng.standard_normal((1, B, INPUT))
    h0 = rng.standard_normal((B, HIDDEN))
    c0 = rng.standard_normal((B, HIDDEN)) if cell == "lstm" else None
    d_out = rng.standard_normal((1, B, HIDDEN))
    d_hn = rng.standard_normal((B, HIDDEN))
    d_cn = rng.standard_normal((B, HIDDEN)) if cell == "lstm" else None
    clip = 0.4
    weights = [params[k] for k in ("weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0")]
    _, _, _, cache = forward(cell, x, *weights, h0, c0)
    clipped = backward(cell, cache, d_out, d_hn, d_cn, clip_hidden=clip)
    premixed = backward(cell, cache, np.clip(d_out + d_hn, -clip, clip), None, d_cn)
    for a, b in zip(clipped[:3], premixed[:3]):
        if a is not None:
            np.testing.assert_allclose(a, b, rtol=0, atol=1e-15)
    for name in clipped[3]:
        np.testing.assert_allclose(clipped[3][name], premixed[3][name], rtol=0, atol=1e-15)


def test_mismatched_params_are_rejected():
    params = random_params("gru", INPUT, HIDDEN, num_layers=1)
    params["weight_ih_l7"] = params["weight_ih_l0"]
    x = np.zeros((T, B, INPUT))
    with pytest.raises(ValueError, match="do not match"):
        reference_backward("gru", params, x, d_out=np.zeros((T, B, HIDDEN)))
