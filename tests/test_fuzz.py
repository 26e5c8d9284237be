"""Fuzzing the public layer API: random shapes, options, dtypes and bad values must
give either a correct result or one of the documented exceptions (ValueError,
TypeError, KeyError, RuntimeError) -- never a crash, a hang or a wrong answer.

`nox -s fuzz` runs this file many times with the "fuzz" hypothesis profile, each
run in its own process, so a crash is caught and reported.
"""

import numpy as np
from helpers import layer_backward, layer_forward, make_layer, max_rel_error
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from reference import CELLS, reference_forward

DOCUMENTED = (ValueError, TypeError, KeyError, RuntimeError)

corruptions = st.sampled_from([
    None, "ndim1", "ndim4", "features", "empty_T", "empty_B", "complex", "bool", "strings",
    "nan", "huge", "int", "float16", "fortran", "readonly", "lengths_zero", "lengths_long",
    "lengths_size", "lengths_float", "h0_shape", "d_out_shape", "max_norm_negative",
    "clip_nan",
])


@st.composite
def cases(draw):
    return dict(
        cell=draw(st.sampled_from(CELLS)),
        steps=draw(st.integers(1, 5)), batch=draw(st.integers(1, 3)),
        features=draw(st.integers(1, 3)), hidden=draw(st.integers(1, 4)),
        layers=draw(st.integers(1, 2)), bidirectional=draw(st.booleans()),
        dtype=draw(st.sampled_from([np.float32, np.float64])),
        use_lengths=draw(st.booleans()), corruption=draw(corruptions),
        seed=draw(st.integers(0, 2**16)),
    )


def _build(case):
    rng = np.random.default_rng(case["seed"])
    T, B, I, H = case["steps"], case["batch"], case["features"], case["hidden"]
    x = rng.standard_normal((T, B, I))
    lengths = rng.integers(1, T + 1, size=B) if case["use_lengths"] else None
    rows = case["layers"] * (2 if case["bidirectional"] else 1)
    h0 = rng.standard_normal((rows, B, H))
    d_out = rng.standard_normal((T, B, (2 if case["bidirectional"] else 1) * H))
    clipping = {}
    bad = True
    kind = case["corruption"]
    if kind == "ndim1":
        x = x.reshape(-1)
    elif kind == "ndim4":
        x = x[None]
    elif kind == "features":
        x = rng.standard_normal((T, B, I + 1))
    elif kind == "empty_T":
        x = x[:0]
    elif kind == "empty_B":
        x, lengths, h0 = x[:, :0], None, None
    elif kind == "complex":
        x = x + 1j
    elif kind == "bool":
        x = x > 0
    elif kind == "strings":
        x = x.astype(str)
    elif kind == "lengths_zero":
        lengths = np.zeros(B, dtype=np.int64)
    elif kind == "lengths_long":
        lengths = np.full(B, T + 1)
    elif kind == "lengths_size":
        lengths = np.ones(B + 1, dtype=np.int64)
    elif kind == "lengths_float":
        lengths = np.ones(B) * 1.0
    elif kind == "h0_shape":
        h0 = h0[:, :, :-1] if H > 1 else h0[None]
    elif kind == "d_out_shape":
        d_out = d_out[:-1] if T > 1 else d_out[None]
    elif kind == "max_norm_negative":
        clipping["max_norm"] = -1.0
    elif kind == "clip_nan":
        clipping["clip_value"] = float("nan")
    else:
        bad = False  # the remaining corruptions are valid input
        if kind == "nan":
            x[0, 0, 0] = np.nan
        elif kind == "huge":
            x *= 1e30
        elif kind == "int":
            x = (x * 3).astype(np.int32)
        elif kind == "float16":
            x = x.astype(np.float16)
        elif kind == "fortran":
            x = np.asfortranarray(x)
        elif kind == "readonly":
            x.setflags(write=False)
    return x, lengths, h0, d_out, clipping, bad


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(cases())
def test_public_layer_api_gives_a_correct_result_or_a_documented_error(case):
    layer = make_layer(case["cell"], case["features"], case["hidden"], case["layers"],
                       case["bidirectional"], dtype=case["dtype"], seed=1)
    x, lengths, h0, d_out, clipping, bad = _build(case)
    c0 = h0 if case["cell"] == "lstm" else None
    x_before = np.array(x, copy=True)
    try:
        out, h_n, c_n = layer_forward(layer, x, h0, c0, lengths)
        dx, dh0, _ = layer_backward(layer, d_out, **clipping)
    except DOCUMENTED as error:
        assert bad, f"valid input refused: {error!r}"
        assert str(error)  # every error says what was wrong
        return
    assert not bad, f"bad input {case['corruption']!r} was accepted"
    np.testing.assert_array_equal(np.asarray(x), x_before)  # input never modified
    assert out.shape == d_out.shape and dx.shape == np.shape(x)
    x64 = np.asarray(x, dtype=np.float64)
    if np.isfinite(x64).all() and abs(x64).max() < 1e3:
        expected, expected_h, _ = reference_forward(
            case["cell"], {k: v.astype(np.float64) for k, v in layer.params.items()}, x64,
            h0, c0, lengths, case["layers"], case["bidirectional"])
        tolerance = 1e-10 if case["dtype"] == np.float64 else 1e-4
        assert max_rel_error(out, expected) <= tolerance
        assert max_rel_error(h_n, expected_h) <= tolerance
    elif case["corruption"] == "huge":
        assert np.isfinite(out).all()  # saturates cleanly, no overflow


model_corruptions = st.sampled_from([
    None, "nan_x", "y_out_of_range", "y_shape", "y_dtype", "x_ndim", "lengths_zero",
    "lengths_long", "x_ids_out_of_range",
])


@st.composite
def model_cases(draw):
    return dict(
        cell=draw(st.sampled_from(["rnn", "rnn_relu", "lstm", "gru"])),
        vocab=draw(st.booleans()), output=draw(st.sampled_from(["sequence", "last"])),
        loss=draw(st.sampled_from(["cross_entropy", "mse", "bce"])),
        layers=draw(st.integers(1, 2)), bidirectional=draw(st.booleans()),
        steps=draw(st.integers(1, 4)), batch=draw(st.integers(1, 3)),
        use_lengths=draw(st.booleans()), corruption=draw(model_corruptions),
        dtype=draw(st.sampled_from([np.float32, np.float64])), seed=draw(st.integers(0, 999)),
    )


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(model_cases())
def test_model_training_step_gives_a_finite_update_or_a_documented_outcome(case):
    """train_step either trains (finite loss, weights change), skips a non-finite step
    (weights unchanged, counted), or raises a documented error for bad input."""
    from helpers import random_model_batch

    import fastrnn

    loss = "cross_entropy" if case["vocab"] else case["loss"]
    model = fastrnn.SequenceModel(
        cell=case["cell"], input_size=3, hidden_size=4, output_size=3,
        vocab_size=5 if case["vocab"] else None, output=case["output"], loss=loss,
        num_layers=case["layers"], bidirectional=case["bidirectional"], max_norm=1.0,
        optimizer=fastrnn.optim.SGD(lr=0.1), dtype=case["dtype"], seed=case["seed"])
    rng = np.random.default_rng(case["seed"])
    x, y, lengths = random_model_batch(rng, model, case["steps"], case["batch"],
                                       case["use_lengths"])
    kind, bad, non_finite = case["corruption"], True, False
    if kind == "nan_x" and not case["vocab"]:
        x[0, 0, 0], bad, non_finite = np.nan, False, True
    elif kind == "y_out_of_range" and loss == "cross_entropy":
        y = y + 10
    elif kind == "y_shape":
        y = y[..., None] if loss == "cross_entropy" else y[..., :-1]
    elif kind == "y_dtype":
        y = y.astype(np.complex128)
    elif kind == "x_ndim":
        x = x[None]
    elif kind == "lengths_zero":
        lengths = np.zeros(case["batch"], dtype=np.int64)
    elif kind == "lengths_long":
        lengths = np.full(case["batch"], case["steps"] + 1)
    elif kind == "x_ids_out_of_range" and case["vocab"]:
        x = x + 5
    else:
        bad = False
    before = model.state_dict()
    try:
        value = model.train_step(x, y, lengths)
    except DOCUMENTED as error:
        assert bad, f"valid input refused: {error!r}"
        assert str(error)
        for name, array in model.params.items():
            np.testing.assert_array_equal(array, before[name])
        return
    assert not bad, f"bad input {kind!r} was accepted"
    if non_finite and not np.isfinite(value):
        assert model.skipped_steps == 1
        for name, array in model.params.items():
            np.testing.assert_array_equal(array, before[name])
    else:
        assert np.isfinite(value) and model.skipped_steps == 0
