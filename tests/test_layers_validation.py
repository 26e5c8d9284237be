"""Bad input to the layers fails early with errors that name the argument (and the
expected shape); unusual but valid input (ints, float16, Fortran order, strided views,
read-only arrays, lists) is accepted and gives the float64 C-contiguous result; the
caller's arrays are never modified."""

from __future__ import annotations

import importlib
import pkgutil
import re

import numba
import numpy as np
import pytest
from helpers import layer_backward, layer_forward, make_layer
from numba.core.registry import CPUDispatcher
from reference import (
    CELLS,
    reference_backward,
    reference_clip_grad_norm,
    reference_clip_grad_value,
)

import fastrnn
import fastrnn._kernels

T, B, INPUT, HIDDEN = 4, 3, 2, 3


def is_lstm(cell):
    return cell == "lstm"


@pytest.fixture(params=CELLS)
def cell(request):
    return request.param


def make(cell, num_layers=2, bidirectional=True, batch_first=False, dtype=np.float64):
    return make_layer(cell, INPUT, HIDDEN, num_layers, bidirectional, batch_first=batch_first,
                      dtype=dtype, seed=0)


def good_x(rng=None):
    rng = rng or np.random.default_rng(0)
    return rng.standard_normal((T, B, INPUT))


STATE = (4, B, HIDDEN)  # 2 layers x 2 directions


def esc(text):
    return re.escape(text)


# ---------------------------------------------------------------------------
# x
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(INPUT,), (T, B, INPUT, 1), (1, T, B, INPUT)])
def test_x_wrong_ndim(cell, shape):
    layer = make(cell)
    with pytest.raises(ValueError, match=r"x must be 2-D \(T, I\).*3-D \(T, B, I\)") as info:
        layer_forward(layer, np.zeros(shape))
    assert f"{len(shape)}-D" in str(info.value)
    with pytest.raises(ValueError, match="x must be"):
        layer_forward(layer, np.float64(1.0))


def test_x_wrong_ndim_names_the_batch_first_layout(cell):
    layer = make(cell, batch_first=True)
    with pytest.raises(ValueError, match=esc("(B, T, I)")):
        layer_forward(layer, np.zeros((INPUT,)))


@pytest.mark.parametrize("shape", [(T, B, INPUT + 1), (T, INPUT - 1), (T, B, 0)])
def test_x_wrong_feature_size(cell, shape):
    with pytest.raises(ValueError, match=rf"x must have {INPUT} features \(input_size\)"):
        layer_forward(make(cell), np.zeros(shape))


@pytest.mark.parametrize("shape", [(0, B, INPUT), (T, 0, INPUT), (0, INPUT)])
def test_x_empty_time_or_batch(cell, shape):
    with pytest.raises(ValueError, match="x must have at least one time step and one sequence"):
        layer_forward(make(cell), np.zeros(shape))


@pytest.mark.parametrize("bad", [
    np.zeros((T, B, INPUT), dtype=np.complex128),
    np.full((T, B, INPUT), "a"),
    np.zeros((T, B, INPUT)).astype(object),
    np.zeros((T, B, INPUT), dtype=bool),
    [[["1", "2"]] * B] * T,
], ids=["complex", "str", "object", "bool", "list-of-str"])
def test_x_non_real_dtypes(cell, bad):
    with pytest.raises(TypeError, match="x must hold real numbers"):
        layer_forward(make(cell), bad)


# ---------------------------------------------------------------------------
# States and lengths
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(2, B, HIDDEN), (4, B + 1, HIDDEN), (4, B, HIDDEN + 1),
                                   (4 * B * HIDDEN,), (4, HIDDEN)])
def test_h0_and_c0_wrong_shape(cell, shape):
    layer = make(cell)
    expected = esc(f"must have shape {STATE} (num_layers*num_directions, B, H)")
    with pytest.raises(ValueError, match="h0 " + expected):
        layer_forward(layer, good_x(), h0=np.zeros(shape),
                      c0=np.zeros(STATE) if is_lstm(cell) else None)
    if is_lstm(cell):
        with pytest.raises(ValueError, match="c0 " + expected):
            layer_forward(layer, good_x(), h0=np.zeros(STATE), c0=np.zeros(shape))


def test_unbatched_state_wrong_shape(cell):
    layer = make(cell)
    expected = esc("h0 must have shape (4, 3) (num_layers*num_directions, H)")
    with pytest.raises(ValueError, match=expected):
        layer_forward(layer, np.zeros((T, INPUT)), h0=np.zeros((4, 1, HIDDEN)))


def test_lstm_state_must_be_a_pair():
    layer = make("lstm")
    with pytest.raises(TypeError, match="state must be a pair"):
        layer(good_x(), np.zeros(STATE))
    layer(good_x())
    with pytest.raises(TypeError, match="d_state must be a pair"):
        layer.backward(np.zeros((T, B, 2 * HIDDEN)), np.zeros(STATE))


def test_h0_non_real(cell):
    with pytest.raises(TypeError, match="h0 must hold real numbers"):
        layer_forward(make(cell), good_x(), h0=np.zeros(STATE, dtype=complex))


@pytest.mark.parametrize("lengths", [[0, 1, 2], [T + 1, 1, 2], [-1, T, T]])
def test_lengths_out_of_range(cell, lengths):
    with pytest.raises(ValueError, match=rf"lengths must lie in \[1, {T}\]"):
        layer_forward(make(cell), good_x(), lengths=np.array(lengths))


@pytest.mark.parametrize("lengths", [[T, T], [T, T, T, T], [[T, T, T]], T])
def test_lengths_wrong_size(cell, lengths):
    with pytest.raises(ValueError, match=esc(f"lengths must have shape ({B},)")):
        layer_forward(make(cell), good_x(), lengths=np.array(lengths))


@pytest.mark.parametrize("lengths", [np.array([T, 2.0, 1.0]), np.array([T, 2.5, 1]),
                                     np.array([True, True, True]), np.array(["4", "2", "1"])])
def test_lengths_must_be_integers(cell, lengths):
    with pytest.raises(TypeError, match="lengths must be an integer array"):
        layer_forward(make(cell), good_x(), lengths=lengths)


def test_lengths_with_unbatched_input(cell):
    with pytest.raises(ValueError, match=esc("lengths must be None for unbatched (T, I) input")):
        layer_forward(make(cell), np.zeros((T, INPUT)), lengths=np.array([T]))


# ---------------------------------------------------------------------------
# backward
# ---------------------------------------------------------------------------


def test_backward_before_forward(cell):
    layer = make(cell)
    with pytest.raises(RuntimeError, match="backward called before forward"):
        layer_backward(layer, np.zeros((T, B, 2 * HIDDEN)))


@pytest.mark.parametrize("batch_first", [False, True])
def test_d_out_wrong_shape(cell, batch_first):
    layer = make(cell, batch_first=batch_first)
    x = good_x()
    if batch_first:
        x = x.transpose(1, 0, 2)
    out, _, _ = layer_forward(layer, x)
    expected = esc(f"d_out must have shape {out.shape} (the shape of the forward output)")
    for shape in [(T, B, HIDDEN), out.shape[::-1], out.shape[:2], (T, 2 * HIDDEN)]:
        with pytest.raises(ValueError, match=expected):
            layer_backward(layer, np.zeros(shape))
    with pytest.raises(TypeError, match="d_out must hold real numbers"):
        layer_backward(layer, np.zeros(out.shape, dtype=complex))


def test_d_hn_and_d_cn_wrong_shape(cell):
    layer = make(cell)
    out, _, _ = layer_forward(layer, good_x())
    d_out = np.zeros_like(out)
    expected = esc(f"must have shape {STATE}")
    with pytest.raises(ValueError, match="d_hn " + expected):
        layer_backward(layer, d_out, np.zeros((2, B, HIDDEN)),
                       np.zeros(STATE) if is_lstm(cell) else None)
    if is_lstm(cell):
        with pytest.raises(ValueError, match="d_cn " + expected):
            layer_backward(layer, d_out, np.zeros(STATE), np.zeros((4, B, 1)))


@pytest.mark.parametrize("keyword", ["max_norm", "clip_value", "clip_hidden"])
def test_bad_clipping_values(cell, keyword):
    layer = make(cell)
    out, _, _ = layer_forward(layer, good_x())
    for value in (-1.0, -1e-300, float("nan"), float("inf"), np.float32(-2.0)):
        with pytest.raises(ValueError, match=f"{keyword} must be a finite number >= 0"):
            layer_backward(layer, np.ones_like(out), **{keyword: value})
    for value in ("1.0", True, [1.0], 1j, np.array([1.0])):
        with pytest.raises(TypeError, match=f"{keyword} must be a real number"):
            layer_backward(layer, np.ones_like(out), **{keyword: value})
    # Integers and numpy scalars are real numbers, used at their value (against the
    # reference clipped by hand); 0 is a valid (if drastic) threshold.
    x = good_x()
    params = layer.state_dict()
    d_out = np.ones_like(out)
    unclipped = reference_backward(cell, params, x, num_layers=2, bidirectional=True,
                                   d_out=d_out)[3]
    norm = reference_clip_grad_norm(unclipped, 1.0)  # the pre-clip norm
    assert norm > 1.0  # so that max_norm 0.5 and 1 clip
    for value in (0, 2, np.float64(0.5), np.int32(1)):
        if keyword == "clip_hidden":
            dx, dh0, dc0, grads = reference_backward(cell, params, x, num_layers=2,
                                                     bidirectional=True, d_out=d_out,
                                                     clip_hidden=float(value))
        else:
            grads = reference_backward(cell, params, x, num_layers=2, bidirectional=True,
                                       d_out=d_out)[3]
            clip = reference_clip_grad_norm if keyword == "max_norm" else \
                reference_clip_grad_value
            clip(grads, float(value))
        layer_forward(layer, x)
        layer.zero_grad()
        f_dx, f_dh0, f_dc0 = layer_backward(layer, d_out, **{keyword: value})
        for name, grad in grads.items():
            np.testing.assert_allclose(layer.grads[name], grad, rtol=1e-9, atol=1e-12,
                                       err_msg=f"{keyword}={value!r}: {name}")
        if keyword == "max_norm":
            assert layer.grad_norm == pytest.approx(norm, rel=1e-12)  # the pre-clip norm
        else:
            assert layer.grad_norm is None
        if keyword == "clip_hidden":
            np.testing.assert_allclose(f_dx, dx, rtol=1e-9, atol=1e-12)
            np.testing.assert_allclose(f_dh0, dh0, rtol=1e-9, atol=1e-12)
            if is_lstm(cell):
                np.testing.assert_allclose(f_dc0, dc0, rtol=1e-9, atol=1e-12)
        if value == 0:
            # Nothing gets through: every parameter gradient is zero; clip_hidden=0
            # also stops every gradient reaching x and the initial states.
            for name, grad in layer.grads.items():
                np.testing.assert_array_equal(grad, 0.0, err_msg=f"{keyword}=0: {name}")
            if keyword == "clip_hidden":
                np.testing.assert_array_equal(f_dx, 0.0)
                np.testing.assert_array_equal(f_dh0, 0.0)
                if is_lstm(cell):
                    np.testing.assert_array_equal(f_dc0, 0.0)
        else:  # the clip did not simply zero everything
            assert any(np.any(grad != 0.0) for grad in layer.grads.values())


def test_failed_backward_leaves_grads_untouched(cell):
    layer = make(cell)
    out, _, _ = layer_forward(layer, good_x())
    layer_backward(layer, np.ones_like(out))
    before = {k: g.copy() for k, g in layer.grads.items()}
    bad_calls = [
        {"d_out": np.ones((T, B, 1))},
        {"d_out": np.ones_like(out), "d_hn": np.ones((1, 1, 1))},
        {"d_out": np.ones_like(out), "max_norm": -1.0},
        {"d_out": np.ones_like(out), "clip_value": float("nan")},
        {"d_out": np.ones_like(out), "clip_hidden": -2.0},
    ]
    for kwargs in bad_calls:
        with pytest.raises(ValueError):
            layer_backward(layer, **kwargs)
        for name, grad in before.items():
            np.testing.assert_array_equal(layer.grads[name], grad, err_msg=name)


# ---------------------------------------------------------------------------
# Constructor
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("layer_class", [fastrnn.RNN, fastrnn.LSTM, fastrnn.GRU])
@pytest.mark.parametrize("kwargs, error, pattern", [
    ({"hidden_size": 0}, ValueError, "hidden_size must be an integer >= 1"),
    ({"hidden_size": -3}, ValueError, "hidden_size must be an integer >= 1"),
    ({"hidden_size": 2.0}, TypeError, "hidden_size must be an integer"),
    ({"input_size": 0}, ValueError, "input_size must be an integer >= 1"),
    ({"input_size": "4"}, TypeError, "input_size must be an integer"),
    ({"num_layers": 0}, ValueError, "num_layers must be an integer >= 1"),
    ({"num_layers": True}, TypeError, "num_layers must be an integer"),
    ({"dtype": np.int32}, TypeError, "dtype must be float32 or float64"),
    ({"dtype": np.float16}, TypeError, "dtype must be float32 or float64"),
    ({"dtype": "complex128"}, TypeError, "dtype must be float32 or float64"),
    ({"dtype": "not a dtype"}, TypeError, "dtype must be float32 or float64"),
    ({"dropout": 1.0}, ValueError, "dropout"),
    ({"dropout": -0.1}, ValueError, "dropout"),
], ids=lambda v: str(v) if not isinstance(v, dict) else "-".join(f"{k}={v[k]}" for k in v))
def test_bad_constructor_arguments(layer_class, kwargs, error, pattern):
    args = {"input_size": 3, "hidden_size": 4, **kwargs}
    with pytest.raises(error, match=pattern):
        layer_class(args.pop("input_size"), args.pop("hidden_size"), **args)


@pytest.mark.parametrize("nonlinearity", ["sigmoid", "Tanh", None])
def test_bad_nonlinearity(nonlinearity):
    with pytest.raises(ValueError, match="nonlinearity must be 'tanh' or 'relu'"):
        fastrnn.RNN(3, 4, nonlinearity=nonlinearity)


def test_integer_like_constructor_arguments_are_accepted():
    layer = fastrnn.GRU(np.int64(3), np.int32(4), num_layers=np.int8(2), dtype="float64")
    assert (layer.input_size, layer.hidden_size, layer.num_layers) == (3, 4, 2)
    assert layer.dtype == np.float64
    assert fastrnn.LSTM(3, 4).dtype == np.float32  # the documented default


# ---------------------------------------------------------------------------
# Accepted input forms give the float64 C-contiguous result
# ---------------------------------------------------------------------------


def _everything(layer, x, h0, c0, lengths, d_out, d_hn, d_cn, **clipping):
    out, h_n, c_n = layer_forward(layer, x, h0, c0, lengths)
    dx, dh0, dc0 = layer_backward(layer, d_out, d_hn, d_cn, **clipping)
    grads = {k: g.copy() for k, g in layer.grads.items()}
    layer.zero_grad()
    return [out, h_n, c_n, dx, dh0, dc0], grads


def _assert_same(result, expected):
    (values, grads), (e_values, e_grads) = result, expected
    for name, a, b in zip(("out", "h_n", "c_n", "dx", "dh0", "dc0"), values, e_values):
        if b is None:
            assert a is None
        else:
            assert a.dtype == b.dtype and a.shape == b.shape, name
            np.testing.assert_array_equal(a, b, err_msg=name)
    for name in e_grads:
        np.testing.assert_array_equal(grads[name], e_grads[name], err_msg=name)


def _variants(array):
    """Other forms of a float64 array holding the same numbers (exactly representable)."""
    big = np.zeros(array.shape + (2,), dtype=array.dtype)
    big[..., 0] = array
    readonly = array.copy()
    readonly.setflags(write=False)
    return {
        "fortran": np.asfortranarray(array),
        "strided-view": big[..., 0],
        "every-other": np.repeat(array, 2, axis=-1)[..., ::2],
        "reversed-view": array[::-1].copy()[::-1],
        "read-only": readonly,
        "list": array.tolist(),
    }


FORMS = ["fortran", "strided-view", "every-other", "reversed-view", "read-only", "list"]


def _problem(cell, batch_first, rng):
    x = good_x(rng)
    if batch_first:
        x = np.ascontiguousarray(x.transpose(1, 0, 2))
    h0 = rng.standard_normal(STATE)
    c0 = rng.standard_normal(STATE) if is_lstm(cell) else None
    lengths = np.array([T, 2, 1])
    d_out = rng.standard_normal(x.shape[:2] + (2 * HIDDEN,))
    d_hn = rng.standard_normal(STATE)
    d_cn = rng.standard_normal(STATE) if is_lstm(cell) else None
    return x, h0, c0, lengths, d_out, d_hn, d_cn


@pytest.mark.parametrize("batch_first", [False, True])
def test_array_forms_are_accepted(cell, batch_first):
    rng = np.random.default_rng(3)
    layer = make(cell, batch_first=batch_first)
    problem = _problem(cell, batch_first, rng)
    expected = _everything(layer, *problem)
    for form in FORMS:
        result = _everything(layer, *(None if a is None else _variants(a)[form]
                                      for a in problem))
        try:
            _assert_same(result, expected)
        except AssertionError as error:
            raise AssertionError(f"input form {form!r}: {error}") from None


def test_other_real_dtypes_are_cast(cell):
    rng = np.random.default_rng(4)
    layer = make(cell)
    # Small non-negative integers: exactly representable in every dtype tried.
    x = rng.integers(0, 4, (T, B, INPUT)).astype(np.float64)
    h0 = rng.integers(0, 2, STATE).astype(np.float64)
    d_out = rng.integers(0, 3, (T, B, 2 * HIDDEN)).astype(np.float64)
    expected = _everything(layer, x, h0, None, None, d_out, None, None)
    for dtype in (np.int64, np.int32, np.uint8, np.float16, np.float32):
        result = _everything(layer, x.astype(dtype), h0.astype(dtype), None, None,
                             d_out.astype(dtype), None, None)
        try:
            _assert_same(result, expected)
        except AssertionError as error:
            raise AssertionError(f"dtype {np.dtype(dtype)}: {error}") from None


def test_lengths_integer_dtypes_are_accepted(cell):
    layer = make(cell)
    x = good_x()
    lengths = np.array([T, 2, 1])
    expected, _, _ = layer_forward(layer, x, lengths=lengths)
    for other in [lengths.astype(t) for t in (np.int8, np.int32, np.uint16, np.uint64)] + [
            [T, 2, 1], (T, 2, 1)]:
        out, _, _ = layer_forward(layer, x, lengths=other)
        np.testing.assert_array_equal(out, expected)


def _kernel_array_arguments():
    """(kernel name, argument type) for every array argument of every signature compiled
    or loaded so far in this process, over all numba kernels of fastrnn._kernels."""
    package = fastrnn._kernels
    for info in pkgutil.iter_modules(package.__path__):
        module = importlib.import_module(f"{package.__name__}.{info.name}")
        for name, obj in vars(module).items():
            if isinstance(obj, CPUDispatcher):
                for signature in obj.signatures:
                    for arg in signature:
                        if isinstance(arg, numba.types.Array):
                            yield f"{info.name}.{name}", arg


def test_input_forms_reach_kernels_normalised():
    """Unusual input forms are normalised before they reach a kernel: a read-only or
    float16/int32 array must never become a kernel argument, as each such variant makes
    numba compile another specialisation of every kernel it reaches (seconds each; the
    design asks for fixed dtypes, C-contiguous arrays and few specialisations).
    Signatures are per process, so this checks every kernel call made so far."""
    rng = np.random.default_rng(6)
    clipping = {"max_norm": 1.0, "clip_value": 0.5, "clip_hidden": 1.0}
    for cell in CELLS:
        for dtype in (np.float64, np.float32):
            layer = make(cell, dtype=dtype)
            problem = _problem(cell, False, rng)
            for form in FORMS:
                _everything(layer, *(None if a is None else _variants(a)[form]
                                     for a in problem), **clipping)
            _everything(layer, *(None if a is None else a.astype(
                np.float16 if a.dtype.kind == "f" else np.int32) for a in problem), **clipping)
    allowed = {np.dtype(t) for t in (np.float32, np.float64, np.int64, np.intp, np.bool_)}
    bad = sorted({f"{name}: {arg}" for name, arg in _kernel_array_arguments()
                  if not arg.mutable or numba.np.numpy_support.as_dtype(arg.dtype)
                  not in allowed})
    assert not bad, "kernels compiled for read-only or odd-dtype arrays:\n" + "\n".join(bad)


@pytest.mark.parametrize("batch_first", [False, True])
def test_backward_does_not_see_later_changes_to_x(cell, batch_first):
    """backward uses the activations of the last forward: refilling the caller's x buffer
    between forward and backward (a reused input buffer), or editing the returned
    arrays, must not change the gradients."""
    for dtype in (np.float64, np.float32):
        rng = np.random.default_rng(7)
        problem = list(_problem(cell, batch_first, rng))
        problem[0] = problem[0].astype(dtype)  # the layer's dtype: no cast, no copy needed
        problem[3] = None  # no lengths: no padding copy either
        layer = make(cell, batch_first=batch_first, dtype=dtype)
        expected = _everything(layer, *problem)
        x, h0, c0, lengths, d_out, d_hn, d_cn = problem
        returned = layer_forward(layer, x, h0, c0, lengths)
        for array in (x, h0, *returned):
            if array is not None:
                array[...] = 0.0
        layer_backward(layer, d_out, d_hn, d_cn)
        for name, grad in expected[1].items():
            np.testing.assert_array_equal(layer.grads[name], grad,
                                          err_msg=f"{name} ({np.dtype(dtype)})")

# ---------------------------------------------------------------------------
# The caller's arrays are never modified
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("batch_first", [False, True])
def test_inputs_are_never_modified(cell, dtype, batch_first):
    rng = np.random.default_rng(5)
    layer = make(cell, batch_first=batch_first, dtype=dtype)
    x, h0, c0, lengths, d_out, d_hn, d_cn = _problem(cell, batch_first, rng)
    arrays = {"x": x, "h0": h0, "c0": c0, "lengths": lengths, "d_out": d_out, "d_hn": d_hn,
              "d_cn": d_cn}
    arrays = {k: v if v is None or k == "lengths" else v.astype(dtype)
              for k, v in arrays.items()}
    # Garbage (and NaN) in the padded steps of x and d_out must be ignored, not cleaned.
    for b, length in enumerate(lengths):
        if batch_first:
            arrays["x"][b, length:] = np.nan
            arrays["d_out"][b, length:] = 1e6
        else:
            arrays["x"][length:, b] = np.nan
            arrays["d_out"][length:, b] = 1e6
    saved = {k: None if v is None else v.copy() for k, v in arrays.items()}

    for clipping in ({}, {"max_norm": 0.01, "clip_value": 0.001, "clip_hidden": 0.01}):
        out, h_n, c_n = layer_forward(layer, arrays["x"], arrays["h0"], arrays["c0"],
                                      arrays["lengths"])
        dx, dh0, dc0 = layer_backward(layer, arrays["d_out"], arrays["d_hn"], arrays["d_cn"],
                                      **clipping)
        for name, value in arrays.items():
            if value is not None:
                np.testing.assert_array_equal(value, saved[name], err_msg=name)
        for name, value in (("out", out), ("h_n", h_n), ("dx", dx), ("dh0", dh0)):
            assert np.all(np.isfinite(value)), name
        for name, grad in layer.grads.items():
            assert np.all(np.isfinite(grad)), name
        # Outputs are fresh arrays, not views of the caller's inputs.
        for value in (out, h_n, dx, dh0):
            for source in arrays.values():
                if source is not None:
                    assert not np.shares_memory(value, source)


def test_unbatched_input_is_never_modified(cell):
    rng = np.random.default_rng(8)
    layer = make(cell)
    x = rng.standard_normal((T, INPUT))
    h0 = rng.standard_normal((4, HIDDEN))
    d_out = rng.standard_normal((T, 2 * HIDDEN))
    saved = [x.copy(), h0.copy(), d_out.copy()]
    layer_forward(layer, x, h0)
    layer_backward(layer, d_out)
    for array, copy in zip((x, h0, d_out), saved):
        np.testing.assert_array_equal(array, copy)
