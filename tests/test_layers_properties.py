"""Property tests (hypothesis): over random shapes, cells, depths, directions,
layouts, lengths and execution plans (threads, blocked or plain per-step products,
the weights cut into drawn blocks), fastrnn's float64 layers equal the numpy
reference, and the clipping options of backward behave as promised."""

from __future__ import annotations

import contextlib
from unittest import mock

import numba
import numpy as np
import reference
from helpers import layer_backward, layer_forward, make_layer, max_rel_error, random_params
from hypothesis import given
from hypothesis import strategies as st
from reference import (
    CELLS,
    reference_backward,
    reference_clip_grad_norm,
    reference_forward,
)

from fastrnn import _cells, _threads

OUTPUT_ATOL = 1e-10
GRAD_RTOL = 1e-9


@st.composite
def problems(draw):
    """A random small problem: config, params, inputs, states, lengths, cotangents."""
    cell = draw(st.sampled_from(CELLS))
    # half the sequences reach the weight copies and blocks (_MIN_STEPS_FOR_COPY steps)
    T = draw(st.integers(1, 6) | st.integers(_cells._MIN_STEPS_FOR_COPY, 20))
    B = draw(st.integers(1, 6))
    I = draw(st.integers(1, 8))
    H = draw(st.integers(1, 40))
    num_layers = draw(st.integers(1, 2))
    bidirectional = draw(st.booleans())
    batch_first = draw(st.booleans())
    bias = draw(st.booleans())
    scale = draw(st.sampled_from([None, 0.8]))  # torch's 1/sqrt(H) or saturating weights
    lengths = draw(st.none() | st.lists(st.integers(1, T), min_size=B, max_size=B))
    seed = draw(st.integers(0, 2**32 - 1))

    rng = np.random.default_rng(seed)
    D = 2 if bidirectional else 1
    shape = (num_layers * D, B, H)
    lstm = cell == "lstm"
    give_state = draw(st.booleans())
    plan = draw(plans())
    return {
        "plan": plan,
        "cell": cell, "sizes": (T, B, I, H), "num_layers": num_layers,
        "bidirectional": bidirectional, "batch_first": batch_first, "bias": bias,
        "params": random_params(cell, I, H, num_layers, bidirectional, bias, rng=rng,
                                scale=scale),
        "x": rng.standard_normal((T, B, I)),
        "h0": rng.standard_normal(shape) * 0.5 if give_state else None,
        "c0": rng.standard_normal(shape) * 0.5 if give_state and lstm else None,
        "lengths": None if lengths is None else np.array(lengths, dtype=np.int64),
        "d_out": rng.standard_normal((T, B, D * H)),
        "d_hn": rng.standard_normal(shape),
        "d_cn": rng.standard_normal(shape) if lstm else None,
    }


@st.composite
def plans(draw):
    """A forced plan (threads, blocked, BLAS threads) and, for blocked plans, how
    many row chunks and column blocks each per-step weight is cut into (where
    they divide it), so that small problems reach the multi-block products."""
    threads = draw(st.integers(1, min(3, numba.config.NUMBA_NUM_THREADS)))
    blocked = draw(st.booleans())
    blas_threads = draw(st.integers(1, 2)) if threads == 1 else 1
    cuts = (draw(st.sampled_from([1, 2, 4])), draw(st.sampled_from([1, 2, 3, 4]))) \
        if blocked else None
    return threads, blocked, blas_threads, cuts


def _cut_blocks(k_chunks, n_blocks):
    def block_shape(rows, inner, columns):
        return (inner // k_chunks if inner % k_chunks == 0 else inner,
                columns // n_blocks if columns % n_blocks == 0 else columns)
    return block_shape


@contextlib.contextmanager
def _plan(plan):
    threads, blocked, blas_threads, cuts = plan
    with contextlib.ExitStack() as stack:
        stack.enter_context(_threads.forced_plan(threads, blocked, blas_threads))
        if cuts is not None:
            stack.enter_context(mock.patch.object(_cells, "_block_shape", _cut_blocks(*cuts)))
        yield


def _ref_problem(p):
    return {"params": p["params"], "x": p["x"], "h0": p["h0"], "c0": p["c0"],
            "lengths": p["lengths"], "num_layers": p["num_layers"],
            "bidirectional": p["bidirectional"]}


def _ref_grads(p, clip_hidden=None):
    return reference_backward(p["cell"], **_ref_problem(p), d_out=p["d_out"], d_hn=p["d_hn"],
                              d_cn=p["d_cn"], clip_hidden=clip_hidden)


def run_fast(p, **clipping):
    """A fresh float64 layer holding p's params: forward + backward.
    Returns (layer, (out, h_n, c_n, dx, dh0, dc0)) in (T, B, .) layout."""
    _, _, I, H = p["sizes"]
    layer = make_layer(p["cell"], I, H, p["num_layers"], p["bidirectional"], p["bias"],
                       p["batch_first"], dtype=np.float64, params=p["params"])
    x, d_out = p["x"], p["d_out"]
    if p["batch_first"]:
        x, d_out = x.transpose(1, 0, 2), d_out.transpose(1, 0, 2)
    with _plan(p["plan"]):
        out, h_n, c_n = layer_forward(layer, x, p["h0"], p["c0"], p["lengths"])
        dx, dh0, dc0 = layer_backward(layer, d_out, p["d_hn"], p["d_cn"], **clipping)
    if p["batch_first"]:
        out, dx = out.transpose(1, 0, 2), dx.transpose(1, 0, 2)
    return layer, (out, h_n, c_n, dx, dh0, dc0)


def assert_close_output(actual, expected, name):
    """Within OUTPUT_ATOL, scaled up where outputs grow (relu cells over long sequences)."""
    scale = max(1.0, float(np.max(np.abs(expected), initial=0.0)))
    np.testing.assert_allclose(actual, expected, rtol=0, atol=OUTPUT_ATOL * scale, err_msg=name)


def assert_close_grad(actual, expected, name):
    err = max_rel_error(actual, expected)
    assert err <= GRAD_RTOL, f"{name}: relative error {err:.3e}"


def grads_copy(layer):
    return {name: g.copy() for name, g in layer.grads.items()}


@given(problems())
def test_matches_reference(p):
    layer, (out, h_n, c_n, dx, dh0, dc0) = run_fast(p)
    r_out, r_hn, r_cn = reference_forward(p["cell"], **_ref_problem(p))
    r_dx, r_dh0, r_dc0, r_grads = _ref_grads(p)
    assert_close_output(out, r_out, "out")
    assert_close_output(h_n, r_hn, "h_n")
    assert_close_grad(dx, r_dx, "dx")
    assert_close_grad(dh0, r_dh0, "dh0")
    if p["cell"] == "lstm":
        assert_close_output(c_n, r_cn, "c_n")
        assert_close_grad(dc0, r_dc0, "dc0")
    assert set(layer.grads) == set(r_grads)
    for name, grad in r_grads.items():
        assert_close_grad(layer.grads[name], grad, name)


@given(problems(), st.floats(0.01, 3.0))
def test_max_norm_returns_the_reference_norm_and_clips_like_it(p, factor):
    r_grads = _ref_grads(p)[3]
    norm = float(np.sqrt(sum(np.sum(g**2) for g in r_grads.values())))
    max_norm = factor * norm
    r_norm = reference_clip_grad_norm(r_grads, max_norm)
    layer, _ = run_fast(p, max_norm=max_norm)
    assert abs(layer.grad_norm - r_norm) <= 1e-9 * max(r_norm, 1e-300)
    for name, grad in r_grads.items():
        assert_close_grad(layer.grads[name], grad, name)


@given(problems(), st.floats(1.0, 100.0))
def test_max_norm_above_the_norm_changes_nothing(p, factor):
    _, fast = run_fast(p)
    unclipped_layer, _ = run_fast(p)
    unclipped = grads_copy(unclipped_layer)
    norm = float(np.sqrt(sum(np.sum(g**2) for g in unclipped.values())))
    # torch's rule scales by max_norm / (norm + 1e-6) when that is below 1, so "above the
    # norm" means at least norm + 1e-6 (and a little more: `norm` here is summed in another
    # order than the kernel's, so it may differ in the last bit).
    layer, clipped_fast = run_fast(p, max_norm=factor * (norm + 1e-6) * (1 + 1e-9))
    assert layer.grad_norm == np.float64(norm) or abs(layer.grad_norm - norm) <= 1e-12 * norm
    for name, grad in unclipped.items():
        np.testing.assert_array_equal(layer.grads[name], grad, err_msg=name)
    for a, b in zip(fast, clipped_fast):  # dx, dh0, dc0 never depend on parameter clipping
        if a is not None:
            np.testing.assert_array_equal(a, b)


@given(problems(), st.floats(0.0, 1.2))
def test_clip_value_only_touches_elements_above_it(p, fraction):
    unclipped_layer, _ = run_fast(p)
    unclipped = grads_copy(unclipped_layer)
    peak = max(float(np.max(np.abs(g))) for g in unclipped.values())
    clip_value = fraction * peak
    layer, _ = run_fast(p, clip_value=clip_value)
    for name, grad in unclipped.items():
        clipped = layer.grads[name]
        small = np.abs(grad) <= clip_value
        np.testing.assert_array_equal(clipped[small], grad[small], err_msg=name)
        np.testing.assert_array_equal(clipped[~small], np.sign(grad[~small]) * clip_value,
                                      err_msg=name)


class _PeakRecordingNumpy:
    """Stands in for numpy inside tests/reference.py: np.clip is only called there on the
    total gradient reaching a hidden state, so this records the largest of those."""

    def __init__(self):
        self.peak = 0.0

    def __getattr__(self, name):
        return getattr(np, name)

    def clip(self, a, *args, **kwargs):
        self.peak = max(self.peak, float(np.max(np.abs(a), initial=0.0)))
        return np.clip(a, *args, **kwargs)


def hidden_gradient_peak(p):
    """max |gradient reaching any hidden state|, over every step, layer and direction."""
    recorder = _PeakRecordingNumpy()
    saved = reference.np
    reference.np = recorder
    try:
        _ref_grads(p, clip_hidden=np.inf)
    finally:
        reference.np = saved
    return recorder.peak


@given(problems(), st.floats(1.0, 10.0))
def test_clip_hidden_above_every_hidden_gradient_changes_nothing(p, factor):
    peak = hidden_gradient_peak(p)
    unclipped_layer, unclipped = run_fast(p)
    layer, clipped = run_fast(p, clip_hidden=factor * peak * (1 + 1e-6) + 1e-12)
    for a, b in zip(unclipped, clipped):
        if a is not None:
            np.testing.assert_array_equal(b, a)
    for name, grad in unclipped_layer.grads.items():
        np.testing.assert_array_equal(layer.grads[name], grad, err_msg=name)


@given(problems(), st.floats(0.05, 1.5))
def test_clip_hidden_matches_reference(p, fraction):
    clip_hidden = fraction * hidden_gradient_peak(p)
    layer, (_, _, _, dx, dh0, dc0) = run_fast(p, clip_hidden=clip_hidden)
    r_dx, r_dh0, r_dc0, r_grads = _ref_grads(p, clip_hidden=clip_hidden)
    assert_close_grad(dx, r_dx, "dx")
    assert_close_grad(dh0, r_dh0, "dh0")
    if p["cell"] == "lstm":
        assert_close_grad(dc0, r_dc0, "dc0")
    for name, grad in r_grads.items():
        assert_close_grad(layer.grads[name], grad, name)
