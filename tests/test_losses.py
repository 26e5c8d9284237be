"""fastrnn.losses: values and gradients vs torch and finite differences, masking,
extreme logits, float32 vs float64, and argument validation."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from fastrnn import losses


def _ce_data(rng, n=9, c=6, dtype=np.float64):
    return rng.normal(scale=3.0, size=(n, c)).astype(dtype), rng.integers(0, c, n)


def _bce_data(rng, n=9, o=4, dtype=np.float64):
    logits = rng.normal(scale=3.0, size=(n, o)).astype(dtype)
    targets = rng.random((n, o)).astype(dtype)  # soft labels exercise the y term fully
    targets[0] = np.round(targets[0])
    return logits, targets


def _mse_data(rng, n=9, o=4, dtype=np.float64):
    return rng.normal(size=(n, o)).astype(dtype), rng.normal(size=(n, o)).astype(dtype)


# name -> (fastrnn function, data maker, torch functional name)
LOSSES = {
    "cross_entropy": (losses.cross_entropy, _ce_data, "cross_entropy"),
    "binary_cross_entropy": (losses.binary_cross_entropy, _bce_data,
                             "binary_cross_entropy_with_logits"),
    "mse": (losses.mse, _mse_data, "mse_loss"),
}


def _torch_loss(torch, name, outputs, targets, mask=None):
    """torch's value and gradient; a mask becomes a weighted mean of reduction='none'."""
    x = torch.tensor(outputs, requires_grad=True)
    y = torch.tensor(targets)
    functional = getattr(torch.nn.functional, LOSSES[name][2])
    if mask is None:
        loss = functional(x, y)
    else:
        per_item = functional(x, y, reduction="none")
        w = torch.tensor(mask)
        if per_item.ndim == 1:
            loss = (per_item * w).sum() / w.sum()
        else:
            loss = (per_item * w[:, None]).sum() / (w.sum() * per_item.shape[1])
    loss.backward()
    return loss.item(), x.grad.numpy()


@pytest.mark.parametrize("name", LOSSES)
@pytest.mark.parametrize("masked", [False, True], ids=["unmasked", "masked"])
def test_value_and_gradient_match_torch_float64(name, masked, rng):
    torch = pytest.importorskip("torch", reason="torch is needed for the parity check")
    function, make, _ = LOSSES[name]
    outputs, targets = make(rng)
    mask = None
    if masked:
        mask = rng.random(outputs.shape[0])
        mask[[1, 4]] = 0.0
    loss, grad = function(outputs, targets, mask)
    want_loss, want_grad = _torch_loss(torch, name, outputs, targets, mask)
    assert abs(loss - want_loss) <= 1e-13 * max(1.0, abs(want_loss))
    np.testing.assert_allclose(grad, want_grad, rtol=1e-12, atol=1e-15)
    assert grad.dtype == np.float64 and grad.shape == outputs.shape


def _central_differences(f, x, eps=1e-6):
    grad = np.zeros_like(x)
    for index in np.ndindex(x.shape):
        plus, minus = x.copy(), x.copy()
        plus[index] += eps
        minus[index] -= eps
        grad[index] = (f(plus) - f(minus)) / (2 * eps)
    return grad


@pytest.mark.parametrize("name", LOSSES)
def test_gradient_matches_finite_differences(name, rng):
    function, make, _ = LOSSES[name]
    outputs, targets = make(rng, n=5)
    mask = np.array([1.0, 0.0, 0.5, 2.0, 1.0])
    _, grad = function(outputs, targets, mask)
    numeric = _central_differences(lambda x: function(x, targets, mask)[0], outputs)
    np.testing.assert_allclose(grad, numeric, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("name", LOSSES)
def test_mask_excludes_rows(name, rng):
    function, make, _ = LOSSES[name]
    outputs, targets = make(rng)
    mask = np.ones(outputs.shape[0])
    padded = [0, 3, 8]
    mask[padded] = 0.0
    loss, grad = function(outputs, targets, mask)
    keep = mask > 0
    subset_loss, subset_grad = function(outputs[keep], targets[keep])
    assert loss == pytest.approx(subset_loss, rel=1e-14)
    np.testing.assert_allclose(grad[keep], subset_grad, rtol=1e-13)
    assert np.all(grad[padded] == 0.0)
    # Whatever a padded row holds, NaN included, cannot leak into the result.
    garbage = outputs.copy()
    garbage[padded] = np.nan
    assert function(garbage, targets, mask)[0] == loss
    # A boolean mask is the same as a 0/1 one.
    assert function(outputs, targets, keep)[0] == loss


@pytest.mark.parametrize("name", LOSSES)
def test_all_rows_masked_gives_zero(name, rng):
    function, make, _ = LOSSES[name]
    outputs, targets = make(rng, n=3)
    loss, grad = function(outputs, targets, np.zeros(3))
    assert loss == 0.0 and not grad.any()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", ["cross_entropy", "binary_cross_entropy"])
def test_huge_logits_are_finite_without_warnings(name, dtype):
    function = LOSSES[name][0]
    logits = np.array([[1e30, -1e30, 0.0], [-1e30, 1e30, 1e30], [0.0, 0.0, -1e30]],
                      dtype=dtype)
    if name == "cross_entropy":
        targets = np.array([0, 1, 2])
        expected_loss = (0.0 + np.log(2.0) + (np.float64(dtype(1e30)) + np.log(2.0))) / 3
    else:
        targets = np.array([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0], [1.0, 1.0, 1.0]], dtype=dtype)
        big = np.float64(dtype(1e30))
        expected_loss = (3 * np.log(2.0) + 2 * big) / 9
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loss, grad = function(logits, targets)
    assert np.isfinite(loss) and np.all(np.isfinite(grad))
    assert loss == pytest.approx(expected_loss, rel=1e-6)
    assert grad.dtype == dtype


@pytest.mark.parametrize("name", LOSSES)
def test_float32_agrees_with_float64(name, rng):
    function, make, _ = LOSSES[name]
    outputs, targets = make(rng, n=64, dtype=np.float64)
    loss64, grad64 = function(outputs, targets)
    single = outputs.astype(np.float32)
    single_targets = targets if name == "cross_entropy" else targets.astype(np.float32)
    loss32, grad32 = function(single, single_targets)
    assert grad32.dtype == np.float32
    assert loss32 == pytest.approx(loss64, rel=1e-6)
    np.testing.assert_allclose(grad32, grad64, rtol=1e-4, atol=1e-7 * np.abs(grad64).max())


def test_one_dimensional_outputs_and_out_buffer(rng):
    outputs, targets = rng.normal(size=7), rng.normal(size=7)
    loss, grad = losses.mse(outputs, targets)
    assert grad.shape == (7,)
    assert loss == pytest.approx(np.mean((outputs - targets) ** 2), rel=1e-14)
    out = np.empty(7)
    same_loss, same_grad = losses.mse(outputs, targets, out=out)
    assert same_grad is out and same_loss == loss and np.array_equal(out, grad)
    with pytest.raises(ValueError, match="overlap"):
        losses.mse(outputs, targets, out=outputs)
    with pytest.raises(ValueError, match="out"):
        losses.mse(outputs, targets, out=np.empty(7, np.float32))


def test_integer_outputs_are_computed_in_float64():
    loss, grad = losses.mse(np.array([[1, 2]]), np.array([[0, 0]]))
    assert loss == 2.5 and grad.dtype == np.float64


def test_cross_entropy_validation(rng):
    logits, targets = _ce_data(rng, n=4, c=3)
    with pytest.raises(ValueError, match="targets"):
        losses.cross_entropy(logits, np.array([0, 1, 3, 2]))
    with pytest.raises(ValueError, match="targets"):
        losses.cross_entropy(logits, np.array([0, -1, 2, 2]))
    with pytest.raises(TypeError, match="targets"):
        losses.cross_entropy(logits, targets.astype(np.float64))
    with pytest.raises(ValueError, match="targets"):
        losses.cross_entropy(logits, targets[:3])
    with pytest.raises(ValueError, match="logits"):
        losses.cross_entropy(logits[0], targets)
    with pytest.raises(TypeError, match="logits"):
        losses.cross_entropy(logits.astype(complex), targets)
    with pytest.raises(ValueError, match="mask"):
        losses.cross_entropy(logits, targets, mask=np.ones(3))
    with pytest.raises(ValueError, match="mask"):
        losses.cross_entropy(logits, targets, mask=np.array([1.0, -1.0, 1.0, 1.0]))
    with pytest.raises(ValueError, match="mask"):
        losses.cross_entropy(logits, targets, mask=np.array([1.0, np.nan, 1.0, 1.0]))


@pytest.mark.parametrize("function", [losses.binary_cross_entropy, losses.mse])
def test_elementwise_loss_validation(function, rng):
    outputs = rng.normal(size=(4, 2))
    with pytest.raises(ValueError, match="targets"):
        function(outputs, np.zeros((4, 3)))
    with pytest.raises(TypeError, match="targets"):
        function(outputs, np.array([["a", "b"]] * 4))
    with pytest.raises(ValueError, match="shape"):
        function(outputs[None], outputs[None])
    with pytest.raises(ValueError, match="mask"):
        function(outputs, outputs, mask=np.ones((4, 2)))


# --- properties ------------------------------------------------------------------------

@st.composite
def classification(draw):
    n = draw(st.integers(1, 8))
    c = draw(st.integers(1, 6))
    logits = draw(hnp.arrays(np.float64, (n, c),
                             elements=st.floats(-1e6, 1e6, allow_nan=False)))
    targets = draw(hnp.arrays(np.int64, n, elements=st.integers(0, c - 1)))
    mask = draw(hnp.arrays(np.float64, n, elements=st.sampled_from([0.0, 0.5, 1.0])))
    return logits, targets, mask


@given(classification(), st.floats(-1e3, 1e3))
def test_cross_entropy_properties(data, shift):
    logits, targets, mask = data
    loss, grad = losses.cross_entropy(logits, targets, mask)
    assert np.isfinite(loss) and loss >= 0.0
    # softmax - onehot: every row of the gradient sums to zero.
    # The row's share of the mean sets the scale of its entries' rounding errors.
    share = mask / mask.sum() if mask.sum() > 0 else mask
    assert np.all(np.abs(grad.sum(axis=1)) <= 1e-12 * share)
    assert np.all(grad[mask == 0] == 0.0)
    # Shifting a row by a constant changes nothing (up to rounding of the shifted logits).
    shifted_loss, _ = losses.cross_entropy(logits + shift, targets, mask)
    spread = np.abs(logits).max() + abs(shift)
    assert abs(shifted_loss - loss) <= 1e-12 * (1.0 + spread)


@given(hnp.arrays(np.float64, st.tuples(st.integers(1, 6), st.integers(1, 4)),
                  elements=st.floats(-1e300, 1e300, allow_nan=False)),
       st.data())
def test_binary_cross_entropy_is_finite_and_bounded(logits, data):
    targets = data.draw(hnp.arrays(np.float64, logits.shape,
                                   elements=st.sampled_from([0.0, 1.0])))
    loss, grad = losses.binary_cross_entropy(logits, targets)
    assert np.isfinite(loss) and loss >= 0.0
    # |sigmoid(x) - y| <= 1, spread over the N*O elements of the mean.
    assert np.all(np.abs(grad) <= 1.0 / logits.size * (1 + 1e-15))
