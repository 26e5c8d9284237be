"""fastrnn.numerical_grad and fastrnn.gradcheck themselves: central differences of
functions whose gradients are known in closed form, a passing check of a layer of each
cell, and a layer whose analytic gradient is wrong in one row of one tensor, which the
report must flag there and nowhere else."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import make_layer
from reference import CELLS, reference_backward

import fastrnn

# ---------------------------------------------------------------------------
# numerical_grad
# ---------------------------------------------------------------------------

_A = np.array([[2.0, -1.0, 0.5], [0.3, 1.5, -2.0], [1.0, 0.25, 3.0]])  # not symmetric
_C = np.array([[0.5, -1.0, 2.0], [3.0, 0.0, -0.25]])

KNOWN = {
    # name: (f, exact gradient, point)
    "cubic-polynomial": (lambda x: np.sum(2 * x ** 3 - 5 * x ** 2 + x - 7),
                         lambda x: 6 * x ** 2 - 10 * x + 1,
                         np.array([-1.5, 0.0, 0.7, 2.0])),
    "product-of-powers": (lambda x: x[0] ** 2 * x[1] ** 3,
                          lambda x: np.array([2 * x[0] * x[1] ** 3, 3 * x[0] ** 2 * x[1] ** 2]),
                          np.array([1.3, -0.8])),
    "sin": (lambda x: np.sum(np.sin(x)), np.cos, np.array([-2.0, -0.3, 0.0, 1.0, 3.0])),
    "quadratic-form": (lambda x: x @ _A @ x, lambda x: (_A + _A.T) @ x,
                       np.array([0.4, -1.2, 2.5])),
    "matrix-2x3": (lambda x: np.sum(_C * x) + np.sum(x ** 2 * np.arange(6).reshape(2, 3)),
                   lambda x: _C + 2 * x * np.arange(6).reshape(2, 3),
                   np.array([[1.0, -2.0, 0.5], [0.0, 3.0, -1.5]])),
}


@pytest.mark.parametrize("name", list(KNOWN))
def test_numerical_grad_of_functions_with_known_gradients(name):
    f, gradient, point = KNOWN[name]
    before = point.copy()
    numeric = fastrnn.numerical_grad(f, point)
    assert numeric.shape == point.shape and numeric.dtype == np.float64
    # Central differences: truncation error eps^2 |f'''| / 6 ~ 1e-11 here, rounding
    # ~ 1e-16 |f| / eps ~ 1e-9 at most.
    np.testing.assert_allclose(numeric, gradient(point), rtol=1e-7, atol=1e-8)
    np.testing.assert_array_equal(point, before)  # the caller's array is not perturbed


def test_numerical_grad_passes_float64_and_takes_eps():
    seen = []

    def f(x):
        seen.append(x.dtype)
        return float(np.sum(x ** 2))

    point = np.array([1, 2, 3], dtype=np.int32)  # an integer point is differenced in float64
    np.testing.assert_allclose(fastrnn.numerical_grad(f, point), [2.0, 4.0, 6.0], rtol=1e-8)
    assert set(seen) == {np.dtype(np.float64)}
    # A coarse eps is what is used: for x^3 the central difference is 3x^2 + eps^2.
    np.testing.assert_allclose(fastrnn.numerical_grad(lambda x: np.sum(x ** 3), [2.0], eps=0.1),
                               [12.0 + 0.01], rtol=1e-12)
    with pytest.raises(ValueError, match="eps"):
        fastrnn.numerical_grad(f, point, eps=0.0)
    with pytest.raises(TypeError, match="real scalar"):
        fastrnn.numerical_grad(lambda x: x, point)


# ---------------------------------------------------------------------------
# gradcheck on layers
# ---------------------------------------------------------------------------

T, B, INPUT, HIDDEN = 4, 2, 2, 3


def _inputs(cell, layers=2, bidirectional=True, seed=0):
    rng = np.random.default_rng(seed)
    rows = layers * (2 if bidirectional else 1)
    x = rng.standard_normal((T, B, INPUT))
    h0 = rng.standard_normal((rows, B, HIDDEN)) * 0.5
    state = (h0, rng.standard_normal((rows, B, HIDDEN)) * 0.5) if cell == "lstm" else h0
    return x, state, np.array([T, 2])


@pytest.mark.parametrize("cell", CELLS)
def test_gradcheck_passes_for_every_cell(cell):
    layer = make_layer(cell, INPUT, HIDDEN, 2, True, dtype=np.float32, seed=3)
    before = layer.state_dict()
    x, state, lengths = _inputs(cell)
    report = fastrnn.gradcheck(layer, x, state, lengths)
    assert isinstance(report, fastrnn.GradcheckReport)
    names = [row.name for row in report.rows]
    assert names == list(layer.params) + ["x", "h0"] + (["c0"] if cell == "lstm" else [])
    for row in report.rows:
        assert row.ok, str(report)
    assert report.ok
    assert report.max_rel_error < 1e-5 and report.max_abs_error < 1e-7
    assert str(report).splitlines()[-1].startswith("gradcheck PASSED")
    for name, value in before.items():  # checked through a float64 copy
        np.testing.assert_array_equal(layer.params[name], value, err_msg=name)


SKEWED_TENSOR, SKEWED_ROW, SKEW = "weight_hh_l0", 1, 1.01


def _skewed_layer(cell, factor=SKEW):
    """A float64 2-layer bidirectional layer whose backward reports row SKEWED_ROW of
    SKEWED_TENSOR's gradient times `factor` and every other gradient as computed."""
    base = {"rnn_tanh": fastrnn.RNN, "rnn_relu": fastrnn.RNN, "lstm": fastrnn.LSTM,
            "gru": fastrnn.GRU, "gru_reset_before": fastrnn.GRU}[cell]

    class Skewed(base):
        def backward(self, *args, **kwargs):
            result = super().backward(*args, **kwargs)
            self.grads[SKEWED_TENSOR][SKEWED_ROW] *= factor
            return result

    options = dict(num_layers=2, bidirectional=True, dtype=np.float64, seed=3)
    if cell.startswith("rnn"):
        options["nonlinearity"] = cell[4:]
    if cell == "gru_reset_before":
        options["reset_after"] = False
    return Skewed(INPUT, HIDDEN, **options)


@pytest.mark.parametrize("cell", CELLS)
def test_gradcheck_flags_exactly_the_tensor_with_a_wrong_row(cell):
    layer = _skewed_layer(cell)
    x, state, lengths = _inputs(cell)
    # The true gradient of gradcheck's loss, from the reference: the skewed row's error
    # is 1% of it, which must exceed atol + rtol * |numeric| somewhere in that row.
    rng = np.random.default_rng(0)  # gradcheck's projection of the outputs (seed=0)
    rows = 4
    d_out = rng.standard_normal((T, B, 2 * HIDDEN))
    d_hn = rng.standard_normal((rows, B, HIDDEN))
    d_cn = rng.standard_normal((rows, B, HIDDEN)) if cell == "lstm" else None
    h0, c0 = state if cell == "lstm" else (state, None)
    true = reference_backward(cell, layer.state_dict(), x, h0, c0, lengths, 2, True,
                              d_out=d_out, d_hn=d_hn, d_cn=d_cn)[3][SKEWED_TENSOR]
    row_error = (SKEW - 1) * np.abs(true[SKEWED_ROW])
    assert np.any(row_error > 1e-5 + 1e-3 * np.abs(true[SKEWED_ROW]))

    report = fastrnn.gradcheck(layer, x, state, lengths)
    assert not report.ok
    failing = [row.name for row in report.rows if not row.ok]
    assert failing == [SKEWED_TENSOR], str(report)
    skewed = next(row for row in report.rows if row.name == SKEWED_TENSOR)
    # The error is the skewed row's, and only that row's: its size is 1% of that row.
    assert skewed.max_abs_error == pytest.approx(row_error.max(), rel=1e-3)
    others = max(row.max_abs_error for row in report.rows if row.name != SKEWED_TENSOR)
    assert others < 1e-3 * skewed.max_abs_error
    assert report.max_abs_error == skewed.max_abs_error

    text = str(report)
    lines = {line.split()[0]: line for line in text.splitlines()[2:-1]}
    assert set(lines) == {row.name for row in report.rows}
    assert lines[SKEWED_TENSOR].endswith("NO")
    assert all(line.endswith("yes") for name, line in lines.items() if name != SKEWED_TENSOR)
    assert text.splitlines()[-1].startswith("gradcheck FAILED")


def test_unskewed_twin_passes():
    """The wrapper itself changes nothing else: with a factor of 1 the check passes."""
    layer = _skewed_layer("gru", factor=1.0)
    x, state, lengths = _inputs("gru")
    assert fastrnn.gradcheck(layer, x, state, lengths).ok


def test_gradcheck_refuses_what_is_not_a_layer_and_an_lstm_state_that_is_not_a_pair():
    x, state, _ = _inputs("lstm")
    with pytest.raises(TypeError, match="layer must be a fastrnn RNN, LSTM or GRU"):
        fastrnn.gradcheck({"weight": np.zeros(3)}, x)
    lstm = make_layer("lstm", INPUT, HIDDEN, 2, True, seed=3)
    with pytest.raises(TypeError, match="state must be a pair"):
        fastrnn.gradcheck(lstm, x, state[0])
    for bad, error in ((0.0, ValueError), (-1e-6, ValueError), ("1e-6", TypeError)):
        with pytest.raises(error, match="eps must be a"):
            fastrnn.gradcheck(lstm, x, state, eps=bad)
