"""Fuzzing the public layer API: random shapes, options, dtypes and bad values must
give either a correct result or one of the documented exceptions (ValueError,
TypeError, KeyError, RuntimeError) -- never a crash, a hang or a wrong answer.

`nox -s fuzz` runs this file many times with the "fuzz" hypothesis profile, each
run in its own process, so a crash is caught and reported.
"""

import numpy as np
import pytest
from helpers import layer_backward, layer_forward, make_layer, max_rel_error
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from reference import CELLS, reference_backward, reference_clip_grad_norm, reference_forward

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
# Valid inputs through every code path of a stacked bidirectional layer, run every time
# (the random draws reach few of them: most are corruptions).
@example(dict(cell="lstm", steps=4, batch=3, features=2, hidden=3, layers=2,
              bidirectional=True, dtype=np.float64, use_lengths=True, corruption=None,
              seed=5))
@example(dict(cell="gru", steps=5, batch=2, features=3, hidden=2, layers=2,
              bidirectional=True, dtype=np.float32, use_lengths=False, corruption="fortran",
              seed=6))
def test_public_layer_api_gives_a_correct_result_or_a_documented_error(case):
    layer = make_layer(case["cell"], case["features"], case["hidden"], case["layers"],
                       case["bidirectional"], dtype=case["dtype"], seed=1)
    x, lengths, h0, d_out, clipping, bad = _build(case)
    c0 = h0 if case["cell"] == "lstm" else None
    x_before = np.array(x, copy=True)
    try:
        out, h_n, c_n = layer_forward(layer, x, h0, c0, lengths)
        dx, dh0, dc0 = layer_backward(layer, d_out, **clipping)
    except DOCUMENTED as error:
        assert bad, f"valid input refused: {error!r}"
        assert str(error)  # every error says what was wrong
        return
    assert not bad, f"bad input {case['corruption']!r} was accepted"
    np.testing.assert_array_equal(np.asarray(x), x_before)  # input never modified
    assert out.shape == d_out.shape and dx.shape == np.shape(x)
    x64 = np.asarray(x, dtype=np.float64)
    if np.isfinite(x64).all() and abs(x64).max() < 1e3:
        params = {k: v.astype(np.float64) for k, v in layer.params.items()}
        reference_args = (case["cell"], params, x64, h0, c0, lengths, case["layers"],
                          case["bidirectional"])
        expected, expected_h, expected_c = reference_forward(*reference_args)
        tolerance = 1e-10 if case["dtype"] == np.float64 else 1e-4
        assert max_rel_error(out, expected) <= tolerance
        assert max_rel_error(h_n, expected_h) <= tolerance
        # ... and the gradients: dx, dh0 (dc0) and every parameter's, as BPTT gives them.
        e_dx, e_dh0, e_dc0, e_grads = reference_backward(*reference_args, d_out=d_out)
        checks = [("dx", dx, e_dx), ("dh0", dh0, e_dh0)]
        if case["cell"] == "lstm":
            assert max_rel_error(c_n, expected_c) <= tolerance
            checks.append(("dc0", dc0, e_dc0))
        checks += [(name, layer.grads[name], grad) for name, grad in e_grads.items()]
        assert set(layer.grads) == set(e_grads)
        for name, actual, wanted in checks:
            np.testing.assert_allclose(np.asarray(actual, dtype=np.float64), wanted,
                                       rtol=tolerance, atol=tolerance, err_msg=name)
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


def _log_sum_exp(z):
    top = z.max(axis=1, keepdims=True)
    return (top + np.log(np.exp(z - top).sum(axis=1, keepdims=True)))[:, 0]


def reference_model_step(config, params, x, y, lengths):
    """The loss of a SequenceModel and its gradient for every parameter, from
    tests/reference.py for the recurrent layers and plain numpy for the head and the
    loss (the weighted mean over valid elements that fastrnn.losses documents)."""
    if config["vocab_size"] is not None:  # token ids -> one-hot rows
        x = np.eye(config["vocab_size"])[x]
    x = np.asarray(x, dtype=np.float64)
    n_steps, batch = x.shape[:2]
    layers, bidirectional = config["num_layers"], config["bidirectional"]
    D, H = (2 if bidirectional else 1), config["hidden_size"]
    rnn = {k[4:]: np.asarray(v, dtype=np.float64) for k, v in params.items()
           if k.startswith("rnn.")}
    weight = np.asarray(params["head.weight"], dtype=np.float64)
    bias = np.asarray(params["head.bias"], dtype=np.float64)
    out, h_n, _ = reference_forward(config["cell"], rnn, x, None, None, lengths, layers,
                                    bidirectional)
    if config["output"] == "last":
        features = h_n[-D:].transpose(1, 0, 2).reshape(batch, D * H)
        weights = np.ones(batch)
    else:
        features = out.reshape(n_steps * batch, D * H)
        valid = np.ones((n_steps, batch), dtype=bool) if lengths is None else \
            np.arange(n_steps)[:, None] < np.asarray(lengths)[None, :]
        weights = valid.reshape(-1).astype(np.float64)
    z = features @ weight.T + bias
    if config["loss"] == "cross_entropy":
        ids = np.asarray(y).reshape(-1)
        per_row = _log_sum_exp(z) - z[np.arange(len(ids)), ids]
        loss = np.sum(weights * per_row) / weights.sum()
        d_z = np.exp(z - _log_sum_exp(z)[:, None])
        d_z[np.arange(len(ids)), ids] -= 1.0
        d_z *= (weights / weights.sum())[:, None]
    else:
        target = np.asarray(y, dtype=np.float64).reshape(z.shape)
        count = weights.sum() * z.shape[1]
        if config["loss"] == "mse":
            per_element, d_z = (z - target) ** 2, 2.0 * (z - target)
        else:  # bce with logits, the stable form
            per_element = np.maximum(z, 0) - z * target + np.log1p(np.exp(-np.abs(z)))
            d_z = 1.0 / (1.0 + np.exp(-z)) - target
        loss = np.sum(weights[:, None] * per_element) / count
        d_z = d_z * weights[:, None] / count
    grads = {"head.weight": d_z.T @ features, "head.bias": d_z.sum(axis=0)}
    d_features = d_z @ weight
    if config["output"] == "last":
        d_hn = np.zeros_like(h_n)
        d_hn[-D:] = d_features.reshape(batch, D, H).transpose(1, 0, 2)
        rnn_grads = reference_backward(config["cell"], rnn, x, None, None, lengths, layers,
                                       bidirectional, d_hn=d_hn)[3]
    else:
        rnn_grads = reference_backward(config["cell"], rnn, x, None, None, lengths, layers,
                                       bidirectional, d_out=d_features.reshape(out.shape))[3]
    grads.update({f"rnn.{k}": g for k, g in rnn_grads.items()})
    return float(loss), grads


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(model_cases())
@example(dict(cell="lstm", vocab=False, output="last", loss="mse", layers=2,
              bidirectional=True, steps=4, batch=3, use_lengths=True, corruption=None,
              dtype=np.float64, seed=7))
@example(dict(cell="gru", vocab=True, output="sequence", loss="cross_entropy", layers=2,
              bidirectional=True, steps=4, batch=2, use_lengths=True, corruption=None,
              dtype=np.float32, seed=8))
@example(dict(cell="rnn", vocab=False, output="sequence", loss="bce", layers=1,
              bidirectional=False, steps=3, batch=2, use_lengths=False, corruption=None,
              dtype=np.float64, seed=9))
def test_model_training_step_gives_a_finite_update_or_a_documented_outcome(case):
    """train_step either trains (the loss and the update the reference gives: SGD without
    momentum moves the weights by -lr times the reference gradient, norm-clipped to
    max_norm), skips a non-finite step (weights unchanged, counted), or raises a
    documented error for bad input."""
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
        if non_finite:
            return  # a NaN that a relu stopped: the reference's NaN would not be
        expected_loss, grads = reference_model_step(model.config, before, x, y, lengths)
        reference_clip_grad_norm(grads, 1.0)  # the model's max_norm
        tolerance = 1e-9 if case["dtype"] == np.float64 else 1e-4
        # float32 weights round the update to ~6e-8 at |w| <= 1.
        step_atol = 1e-11 if case["dtype"] == np.float64 else 1e-6 + 1e-7
        assert value == pytest.approx(expected_loss, rel=tolerance, abs=tolerance)
        assert set(grads) == set(before)
        changed = False
        for name, array in model.params.items():
            step = np.asarray(array, dtype=np.float64) - before[name]
            wanted = -0.1 * grads[name]  # SGD(lr=0.1), no momentum, no weight decay
            np.testing.assert_allclose(step, wanted, rtol=tolerance, atol=step_atol,
                                       err_msg=name)
            changed = changed or bool(np.any(step != 0.0))
        assert changed, "the weights did not change"
