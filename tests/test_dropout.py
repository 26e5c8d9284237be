"""Dropout between stacked layers: the mask's statistics and scaling, forward and
backward against the numpy reference run layer by layer with the same masks applied
between the layers, eval() without dropout, reproducible masks, a finite-difference
check with the masks held fixed, and SequenceModel(dropout=...).

The masks a layer uses are known without reading private state: `seed_dropout(seed)`
restarts its generator, and its docstring says how the masks are drawn from
numpy.random.default_rng(seed). A "probe" layer whose output is exactly the mask
between its two layers shows what the layer really applied.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from helpers import (
    assert_ragged,
    flat_grads,
    flat_params,
    layer_backward,
    layer_forward,
    make_layer,
    max_rel_error,
    ragged_lengths,
    random_model_batch,
    random_params,
    state_shape,
    unflatten_params,
)
from reference import CELLS, backward, forward, param_name, reference_backward, reference_forward

import fastrnn

T, B, INPUT, HIDDEN = 5, 3, 4, 3
P = 0.4
MASK_SEED = 2024
OUTPUT_ATOL = 1e-10
GRAD_RTOL = 1e-9


def dropout_layer(cell, num_layers, bidirectional, params, dropout=P, batch_first=False):
    """A float64 layer of the reference cell `cell` holding `params`, with `dropout`."""
    return make_layer(cell, INPUT, HIDDEN, num_layers=num_layers, bidirectional=bidirectional,
                      batch_first=batch_first, dtype=np.float64, seed=0, params=params,
                      dropout=dropout)


def documented_masks(seed, p, count, shape):
    """The masks seed_dropout(seed) promises, in float64: for each of `count` layer
    boundaries in turn, (rng.random(shape) >= p) / (1 - p)."""
    rng = np.random.default_rng(seed)
    return [(rng.random(shape) >= p) / (1.0 - p) for _ in range(count)]


# ---------------------------------------------------------------------------
# The probe: a layer whose output is the mask it applied
# ---------------------------------------------------------------------------


def mask_probe(p, hidden, dtype=np.float64, seed=0):
    """2-layer relu RNN whose output is exactly its dropout mask: layer 0 outputs 1
    everywhere (zero weights, input bias 1), layer 1 is the identity (relu of a mask,
    which is >= 0, is the mask). All products involve only 0 and 1: no rounding."""
    layer = fastrnn.RNN(1, hidden, num_layers=2, nonlinearity="relu", dropout=p,
                        dtype=dtype, seed=seed)
    for value in layer.params.values():
        value[...] = 0.0
    layer.params["bias_ih_l0"][...] = 1.0
    layer.params["weight_ih_l1"][...] = np.eye(hidden)
    return layer


def probe_mask(layer, steps, batch):
    out, _ = layer(np.zeros((steps, batch, 1)))
    return np.asarray(out, dtype=np.float64)


def test_probe_outputs_ones_without_dropout():
    """The probe reads the mask: with dropout off its output is all ones."""
    layer = mask_probe(0.5, 4).eval()
    np.testing.assert_array_equal(probe_mask(layer, 3, 2), 1.0)


def _agreement_bounds(p, n_pairs):
    """Expected fraction of neighbouring pairs that are both dropped or both kept, and
    its standard deviation: overlapping pairs of a chain share one element, so the
    variance of the mean has the covariance term of neighbouring pairs added."""
    q = p * p + (1 - p) ** 2
    neighbour_cov = p ** 3 + (1 - p) ** 3 - q * q
    return q, np.sqrt((q * (1 - q) + 2 * neighbour_cov) / n_pairs)


@pytest.mark.parametrize("p, dtype", [(0.1, np.float64), (0.5, np.float32), (0.75, np.float64)],
                         ids=["p0.1-float64", "p0.5-float32", "p0.75-float64"])
def test_mask_statistics(p, dtype):
    """Fraction dropped ~ p, kept units exactly 1/(1-p), mean ~ 1, and drawn afresh for
    every time step, sequence and unit: all within 5 standard deviations of a binomial
    draw of this size (a false alarm once in ~1.7 million runs per check)."""
    steps, batch, hidden = 100, 40, 25
    mask = probe_mask(mask_probe(p, hidden, dtype, seed=7), steps, batch)
    n = mask.size
    kept_value = float(dtype(1.0 / (1.0 - p)))
    values = np.unique(mask)
    np.testing.assert_array_equal(values, [0.0, kept_value])

    dropped = float(np.mean(mask == 0.0))
    assert abs(dropped - p) <= 5 * np.sqrt(p * (1 - p) / n), dropped
    mean = float(np.mean(mask))
    # Each element has mean 1 and variance p / (1 - p).
    assert abs(mean - 1.0) <= 5 * np.sqrt(p / (1 - p) / n) + abs(kept_value * (1 - p) - 1), mean

    keep = mask != 0.0
    for axis in range(3):  # time, batch, hidden: no mask shared along any of them
        first = np.take(keep, range(keep.shape[axis] - 1), axis=axis)
        second = np.take(keep, range(1, keep.shape[axis]), axis=axis)
        agree = float(np.mean(first == second))
        expected, sd = _agreement_bounds(p, first.size)
        assert abs(agree - expected) <= 5 * sd, (axis, agree, expected)


def test_masks_follow_the_documented_draw_and_the_seed():
    """seed_dropout(s): the masks are (default_rng(s).random((T, B, H)) >= p) / (1 - p),
    call after call from one stream; the same seed repeats them, the constructor seed
    makes them reproducible, and every call draws a new mask."""
    p, hidden, steps, batch = 0.3, 5, 6, 4
    layer = mask_probe(p, hidden, seed=11)
    assert layer.seed_dropout(MASK_SEED) is layer
    first, second = probe_mask(layer, steps, batch), probe_mask(layer, steps, batch)
    expected = documented_masks(MASK_SEED, p, 2, (steps, batch, hidden))
    np.testing.assert_array_equal(first, expected[0])
    np.testing.assert_array_equal(second, expected[1])
    assert not np.array_equal(first, second)  # a fresh mask per call
    layer.seed_dropout(MASK_SEED)
    np.testing.assert_array_equal(probe_mask(layer, steps, batch), first)

    # The constructor's seed: same seed, same sequence of masks; another seed, others.
    twins = [mask_probe(p, hidden, seed=11), mask_probe(p, hidden, seed=11)]
    runs = [[probe_mask(t, steps, batch) for _ in range(2)] for t in twins]
    np.testing.assert_array_equal(runs[0][0], runs[1][0])
    np.testing.assert_array_equal(runs[0][1], runs[1][1])
    other = probe_mask(mask_probe(p, hidden, seed=12), steps, batch)
    assert not np.array_equal(other, runs[0][0])


def test_dropout_state_round_trip_repeats_the_masks():
    """dropout_state reads the generator's state as a JSON-able dict (a checkpoint
    holds it); assigning it back, to this layer or another, repeats the masks."""
    p, hidden, steps, batch = 0.5, 4, 5, 3
    layer = mask_probe(p, hidden, seed=3)
    state = layer.dropout_state
    assert json.loads(json.dumps(state)) == state
    first, second = probe_mask(layer, steps, batch), probe_mask(layer, steps, batch)
    assert not np.array_equal(first, second)
    layer.dropout_state = state
    np.testing.assert_array_equal(probe_mask(layer, steps, batch), first)
    other = mask_probe(p, hidden, seed=4)
    assert not np.array_equal(probe_mask(other, steps, batch), first)
    other.dropout_state = state
    np.testing.assert_array_equal(probe_mask(other, steps, batch), first)
    np.testing.assert_array_equal(probe_mask(other, steps, batch), second)


def test_eval_applies_no_dropout_and_draws_no_mask():
    p, hidden, steps, batch = 0.5, 4, 5, 3
    layer = mask_probe(p, hidden, seed=1)
    assert layer.training
    layer.seed_dropout(MASK_SEED)
    assert layer.eval() is layer and not layer.training
    np.testing.assert_array_equal(probe_mask(layer, steps, batch), 1.0)
    layer.train()
    # The eval call drew nothing: the first training call gets the seed's first mask.
    expected = documented_masks(MASK_SEED, p, 1, (steps, batch, hidden))[0]
    np.testing.assert_array_equal(probe_mask(layer, steps, batch), expected)
    assert np.any(expected == 0.0)


# ---------------------------------------------------------------------------
# Against the reference, layer by layer with the masks in between
# ---------------------------------------------------------------------------


def reference_with_dropout(cell, params, x, h0, c0, lengths, num_layers, bidirectional,
                           masks, d_out, d_hn, d_cn):
    """reference.forward/backward per layer and direction, layer k's output multiplied by
    masks[k] before layer k+1 reads it (and its gradient by the same mask on the way
    back). Returns (out, h_n, c_n, dx, dh0, dc0, grads)."""
    D = 2 if bidirectional else 1
    lstm = cell == "lstm"
    h_n, dh0 = np.zeros_like(h0), np.zeros_like(h0)
    c_n, dc0 = (np.zeros_like(h0), np.zeros_like(h0)) if lstm else (None, None)
    caches = {}
    layer_input = x
    for layer in range(num_layers):
        outs = []
        for direction in range(D):
            reverse, row = direction == 1, layer * D + direction
            out, h, c, caches[row] = forward(
                cell, layer_input, params[param_name("weight_ih", layer, reverse)],
                params[param_name("weight_hh", layer, reverse)],
                params[param_name("bias_ih", layer, reverse)],
                params[param_name("bias_hh", layer, reverse)],
                h0[row], c0[row] if lstm else None, lengths, reverse)
            outs.append(out)
            h_n[row] = h
            if lstm:
                c_n[row] = c
        out = np.concatenate(outs, axis=2)
        if layer + 1 < num_layers:
            layer_input = out * masks[layer]
    grads = {}
    d_layer_out = d_out
    for layer in reversed(range(num_layers)):
        d_input = 0.0
        for direction in range(D):
            reverse, row = direction == 1, layer * D + direction
            dx, dh, dc, dir_grads = backward(
                cell, caches[row], d_layer_out[:, :, direction * HIDDEN:(direction + 1) * HIDDEN],
                d_hn[row], d_cn[row] if lstm else None)
            d_input = d_input + dx
            dh0[row] = dh
            if lstm:
                dc0[row] = dc
            for kind, grad in dir_grads.items():
                grads[param_name(kind, layer, reverse)] = grad
        d_layer_out = d_input * masks[layer - 1] if layer > 0 else d_input
    return out, h_n, c_n, d_layer_out, dh0, dc0, grads


def dropout_case(cell, num_layers, bidirectional, seed):
    rng = np.random.default_rng(seed)
    D = 2 if bidirectional else 1
    shape = state_shape(num_layers, bidirectional, B, HIDDEN)
    lstm = cell == "lstm"
    lengths = ragged_lengths(rng, B, T, full=True)
    assert_ragged(lengths, T, full=True)
    return dict(
        params=random_params(cell, INPUT, HIDDEN, num_layers, bidirectional, rng=rng,
                             scale=0.8),
        x=rng.standard_normal((T, B, INPUT)), lengths=lengths,
        h0=rng.standard_normal(shape) * 0.5,
        c0=rng.standard_normal(shape) * 0.5 if lstm else None,
        d_out=rng.standard_normal((T, B, D * HIDDEN)), d_hn=rng.standard_normal(shape),
        d_cn=rng.standard_normal(shape) if lstm else None)


SHAPES = [(2, False, False), (2, True, True), (3, True, False)]
REFERENCE_GRID = [(cell, *shape) for cell in CELLS for shape in SHAPES]


@pytest.mark.parametrize(
    "cell, num_layers, bidirectional, batch_first", REFERENCE_GRID,
    ids=[f"{c}-L{n}-{'bi' if b else 'uni'}-{'bf' if f else 'tf'}-len"
         for c, n, b, f in REFERENCE_GRID])
def test_forward_and_backward_match_the_reference_with_the_same_masks(
        cell, num_layers, bidirectional, batch_first):
    case = dropout_case(cell, num_layers, bidirectional,
                        seed=REFERENCE_GRID.index((cell, num_layers, bidirectional, batch_first)))
    D = 2 if bidirectional else 1
    masks = documented_masks(MASK_SEED, P, num_layers - 1, (T, B, D * HIDDEN))
    assert all(np.any(m == 0.0) and np.any(m != 0.0) for m in masks)
    expected = reference_with_dropout(cell, case["params"], case["x"], case["h0"], case["c0"],
                                      case["lengths"], num_layers, bidirectional, masks,
                                      case["d_out"], case["d_hn"], case["d_cn"])

    layer = dropout_layer(cell, num_layers, bidirectional, case["params"],
                          batch_first=batch_first)
    layer.seed_dropout(MASK_SEED)
    x, d_out = case["x"], case["d_out"]
    if batch_first:
        x, d_out = x.transpose(1, 0, 2), d_out.transpose(1, 0, 2)
    out, h_n, c_n = layer_forward(layer, x, case["h0"], case["c0"], case["lengths"])
    dx, dh0, dc0 = layer_backward(layer, d_out, case["d_hn"], case["d_cn"])
    if batch_first:
        out, dx = out.transpose(1, 0, 2), dx.transpose(1, 0, 2)

    e_out, e_hn, e_cn, e_dx, e_dh0, e_dc0, e_grads = expected
    np.testing.assert_allclose(out, e_out, rtol=0, atol=OUTPUT_ATOL, err_msg="out")
    np.testing.assert_allclose(h_n, e_hn, rtol=0, atol=OUTPUT_ATOL, err_msg="h_n")
    checks = [("dx", dx, e_dx), ("dh0", dh0, e_dh0)]
    if cell == "lstm":
        np.testing.assert_allclose(c_n, e_cn, rtol=0, atol=OUTPUT_ATOL, err_msg="c_n")
        checks.append(("dc0", dc0, e_dc0))
    assert set(layer.grads) == set(e_grads)
    checks += [(name, layer.grads[name], grad) for name, grad in e_grads.items()]
    for name, actual, wanted in checks:
        err = max_rel_error(actual, wanted)
        assert err <= GRAD_RTOL, f"{name}: relative error {err:.3e}"

    # Not vacuous: without the masks the reference gives other outputs and gradients.
    plain = reference_backward(cell, case["params"], case["x"], case["h0"], case["c0"],
                               case["lengths"], num_layers, bidirectional, case["d_out"],
                               case["d_hn"], case["d_cn"])
    assert not np.allclose(out, reference_forward(cell, case["params"], case["x"], case["h0"],
                                                  case["c0"], case["lengths"], num_layers,
                                                  bidirectional)[0])
    assert not np.allclose(dx, plain[0])


@pytest.mark.parametrize("cell", CELLS)
def test_eval_mode_matches_the_reference_without_dropout(cell):
    case = dropout_case(cell, 2, True, seed=99)
    layer = dropout_layer(cell, 2, True, case["params"], dropout=0.5).eval()
    args = (case["params"], case["x"], case["h0"], case["c0"], case["lengths"], 2, True)
    out, h_n, c_n = layer_forward(layer, case["x"], case["h0"], case["c0"], case["lengths"])
    e_out, e_hn, _ = reference_forward(cell, *args)
    np.testing.assert_allclose(out, e_out, rtol=0, atol=OUTPUT_ATOL)
    np.testing.assert_allclose(h_n, e_hn, rtol=0, atol=OUTPUT_ATOL)
    dx, dh0, _ = layer_backward(layer, case["d_out"], case["d_hn"], case["d_cn"])
    e_dx, e_dh0, _, e_grads = reference_backward(cell, *args, case["d_out"], case["d_hn"],
                                                 case["d_cn"])
    assert max_rel_error(dx, e_dx) <= GRAD_RTOL
    assert max_rel_error(dh0, e_dh0) <= GRAD_RTOL
    for name, grad in e_grads.items():
        assert max_rel_error(layer.grads[name], grad) <= GRAD_RTOL, name
    # Back in training mode the same layer drops units again.
    train_out, _, _ = layer_forward(layer.train(), case["x"], case["h0"], case["c0"],
                                    case["lengths"])
    assert not np.allclose(train_out, e_out)


# ---------------------------------------------------------------------------
# Finite differences with the masks held fixed
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("cell", CELLS)
def test_gradients_match_finite_differences_with_fixed_masks(cell):
    """numerical_grad of a fixed projection of (out, h_n[, c_n]) for every parameter, x,
    h0 and c0, reseeding the dropout generator before every evaluation so that every
    forward call uses the same masks; against one backward after the same reseed."""
    num_layers, bidirectional = 2, True
    case = dropout_case(cell, num_layers, bidirectional, seed=123)
    layer = dropout_layer(cell, num_layers, bidirectional, case["params"])
    lstm = cell == "lstm"
    inputs = {"x": case["x"].copy(), "h0": case["h0"].copy()}
    if lstm:
        inputs["c0"] = case["c0"].copy()

    def run():
        layer.seed_dropout(MASK_SEED)
        return layer_forward(layer, inputs["x"], inputs["h0"], inputs.get("c0"),
                             case["lengths"])

    def loss():
        out, h_n, c_n = run()
        value = np.sum(out * case["d_out"]) + np.sum(h_n * case["d_hn"])
        return value + (np.sum(c_n * case["d_cn"]) if lstm else 0.0)

    run()
    layer.zero_grad()
    dx, dh0, dc0 = layer_backward(layer, case["d_out"], case["d_hn"], case["d_cn"])
    analytic = {"x": dx, "h0": dh0, "c0": dc0}
    analytic.update({name: layer.grads[name].copy() for name in layer.params})

    def numeric_for(target):
        def f(value):
            saved = target.copy()
            target[...] = value
            try:
                return loss()
            finally:
                target[...] = saved
        return fastrnn.numerical_grad(f, target)

    numeric = {name: numeric_for(array) for name, array in inputs.items()}
    numeric.update({name: numeric_for(layer.params[name]) for name in layer.params})
    for name, grad in numeric.items():
        np.testing.assert_allclose(analytic[name], grad, rtol=1e-6, atol=1e-8, err_msg=name)

    # The masks matter: without dropout the gradient of the same loss is another one.
    plain = dropout_layer(cell, num_layers, bidirectional, case["params"], dropout=0.0)
    layer_forward(plain, inputs["x"], inputs["h0"], inputs.get("c0"), case["lengths"])
    plain_dx, _, _ = layer_backward(plain, case["d_out"], case["d_hn"], case["d_cn"])
    assert not np.allclose(plain_dx, numeric["x"])


# ---------------------------------------------------------------------------
# SequenceModel
# ---------------------------------------------------------------------------


def test_sequence_model_with_dropout_gradients_match_finite_differences():
    """A stacked, bidirectional SequenceModel with dropout: train_step's gradients (SGD
    lr=0, so nothing moves) against central differences of the loss it reports, the
    masks held fixed by reseeding model.rnn before every step."""
    options = dict(cell="lstm", input_size=3, hidden_size=3, output_size=2, num_layers=2,
                   bidirectional=True, loss="mse", dtype=np.float64, seed=4,
                   optimizer=fastrnn.optim.SGD(lr=0.0))
    model = fastrnn.SequenceModel(dropout=0.5, **options)
    twin = fastrnn.SequenceModel(dropout=0.0, **options)
    np.testing.assert_array_equal(flat_params(model), flat_params(twin))
    rng = np.random.default_rng(8)
    x, y, _ = random_model_batch(rng, model, 4, 3)
    lengths = ragged_lengths(rng, 3, 4, full=True)
    assert_ragged(lengths, 4, full=True)
    start = flat_params(model)

    def loss_at(vector):
        model.load_state_dict(unflatten_params(model, vector))
        model.rnn.seed_dropout(MASK_SEED)
        return model.train_step(x, y, lengths=lengths)

    numeric = fastrnn.numerical_grad(loss_at, start)
    value = loss_at(start)
    analytic = flat_grads(model)
    np.testing.assert_array_equal(flat_params(model), start)
    np.testing.assert_allclose(analytic, numeric, rtol=1e-6, atol=1e-9)
    assert value != twin.train_step(x, y, lengths=lengths)  # dropout acted
    assert np.any(model.grads["rnn.weight_ih_l0"] != 0.0)
