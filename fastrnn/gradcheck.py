"""Numerical gradient verification: analytic BPTT against central finite differences."""

import dataclasses

import numpy as np

from ._validate import non_negative_float, positive_float


def numerical_grad(f, x, eps=1e-6):
    """Central-difference gradient of a scalar function `f` at `x`, in float64.

    `f` is called with a float64 array of x's shape whose elements are perturbed
    one at a time by +-eps; it must return a real scalar.
    """
    eps = positive_float(eps, "eps")
    point = np.array(x, dtype=np.float64)  # private copy, perturbed in place
    return _central_differences(f, point, eps)


def _central_differences(f, array, eps):
    """Perturb `array` in place element by element (restoring it) and difference f."""
    grad = np.empty(array.shape, dtype=np.float64)
    if not array.flags.c_contiguous:
        raise ValueError("array must be C-contiguous to be perturbed in place")
    flat, flat_grad = array.reshape(-1), grad.reshape(-1)
    for k in range(flat.size):
        original = flat[k]
        flat[k] = original + eps
        plus = _scalar(f(array))
        flat[k] = original - eps
        minus = _scalar(f(array))
        flat[k] = original
        flat_grad[k] = (plus - minus) / (2.0 * eps)
    return grad


def _scalar(value):
    value = np.asarray(value)
    if value.size != 1 or value.dtype.kind not in "iuf":
        raise TypeError(f"f must return a real scalar, got {value.dtype} array of shape "
                        f"{value.shape}")
    return float(value.reshape(()))


@dataclasses.dataclass(frozen=True)
class TensorCheck:
    """One row of a gradcheck report."""
    name: str
    shape: tuple
    max_abs_error: float
    max_rel_error: float
    ok: bool


@dataclasses.dataclass(frozen=True)
class GradcheckReport:
    """Result of `gradcheck`: `ok`, the worst errors, and a per-tensor table as str()."""
    rows: tuple
    atol: float
    rtol: float

    @property
    def ok(self):
        return all(row.ok for row in self.rows)

    @property
    def max_abs_error(self):
        return max(row.max_abs_error for row in self.rows)

    @property
    def max_rel_error(self):
        return max(row.max_rel_error for row in self.rows)

    def __str__(self):
        header = f"{'tensor':<24} {'shape':<16} {'max abs err':>12} {'max rel err':>12}  ok"
        lines = [header, "-" * len(header)]
        for row in self.rows:
            lines.append(f"{row.name:<24} {str(row.shape):<16} {row.max_abs_error:>12.3e} "
                         f"{row.max_rel_error:>12.3e}  {'yes' if row.ok else 'NO'}")
        verdict = "PASSED" if self.ok else "FAILED"
        lines.append(f"gradcheck {verdict}: |analytic - numeric| <= {self.atol:g} + "
                     f"{self.rtol:g} * |numeric| for every element")
        return "\n".join(lines)


def _compare(name, analytic, numeric, atol, rtol):
    error = np.abs(analytic - numeric)
    scale = max(float(np.abs(numeric).max(initial=0.0)), atol)
    ok = bool(np.all(error <= atol + rtol * np.abs(numeric)))
    return TensorCheck(name, tuple(numeric.shape), float(error.max(initial=0.0)),
                       float(error.max(initial=0.0)) / scale, ok)


def gradcheck(layer, x, state=None, lengths=None, *, eps=1e-6, atol=1e-5, rtol=1e-3, seed=0):
    """Check a layer's BPTT gradients against central finite differences.

    The loss is a fixed random projection of every output (out, h_n and c_n),
    drawn from `seed`. Every parameter, x and the initial state (when given)
    are checked, in float64: a float32 layer is checked through a float64 copy.
    Each element passes when |analytic - numeric| <= atol + rtol * |numeric|.
    """
    eps = positive_float(eps, "eps")
    atol = non_negative_float(atol, "atol", allow_none=False)
    rtol = non_negative_float(rtol, "rtol", allow_none=False)
    if not hasattr(layer, "forward_states"):
        raise TypeError(f"layer must be a fastrnn RNN, LSTM or GRU, got {type(layer).__name__}")
    checked = layer.astype(np.float64)
    x64 = np.array(x, dtype=np.float64)
    h0, c0 = (None if part is None else np.array(part, dtype=np.float64)
              for part in checked.state_parts(state))

    def run(x_value, h_value, c_value):
        return checked.forward_states(x_value, h_value, c_value, lengths=lengths)

    out, h_n, c_n = run(x64, h0, c0)
    rng = np.random.default_rng(seed)
    weights = [rng.standard_normal(out.shape), rng.standard_normal(h_n.shape),
               None if c_n is None else rng.standard_normal(c_n.shape)]

    def loss(x_value, h_value, c_value):
        outputs = run(x_value, h_value, c_value)
        return sum(float(np.sum(o * w)) for o, w in zip(outputs, weights) if w is not None)

    run(x64, h0, c0)  # the cache backward uses must belong to the unperturbed point
    checked.zero_grad()
    dx, dh0, dc0 = checked.backward_states(*weights)

    rows = []
    for name, param in checked.params.items():
        numeric = _central_differences(lambda _: loss(x64, h0, c0), param, eps)
        rows.append(_compare(name, checked.grads[name], numeric, atol, rtol))
    rows.append(_compare("x", dx, _central_differences(lambda v: loss(v, h0, c0), x64, eps),
                         atol, rtol))
    if h0 is not None:
        numeric = _central_differences(lambda v: loss(x64, v, c0), h0, eps)
        rows.append(_compare("h0", dh0, numeric, atol, rtol))
    if c0 is not None:
        numeric = _central_differences(lambda v: loss(x64, h0, v), c0, eps)
        rows.append(_compare("c0", dc0, numeric, atol, rtol))
    return GradcheckReport(tuple(rows), atol, rtol)
