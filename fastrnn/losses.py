"""Losses with their gradient wrt the network outputs, numerically stable at any scale.

Every function returns ``(loss, grad)``: the loss as a Python float and its gradient
with the outputs' shape and dtype (float32 stays float32; any other real dtype is
computed in float64). ``mask`` is an optional non-negative weight per row, shape (N,):
0 marks a padded row, which then never counts (whatever it holds, NaN included) and
gets a zero gradient. The loss is the weighted mean over the valid elements, so with
``mask=None`` it equals torch.nn.functional's reduction="mean". If every weight is 0
the loss is 0.0 and the gradient zero (torch would give NaN).

``out=`` takes a preallocated gradient array (right shape and dtype, C-contiguous,
not overlapping the inputs) to write into, for training loops that reuse buffers.
"""

from __future__ import annotations

import numpy as np

from ._kernels import losses as _kernels
from ._validate import FLOAT_DTYPES, float_array, int_array, shape_error

__all__ = ["cross_entropy", "binary_cross_entropy", "mse"]


def cross_entropy(logits, targets, mask=None, *, out=None):
    """Softmax cross-entropy of logits (N, C) against class ids `targets` (N,), each in
    [0, C); like torch.nn.functional.cross_entropy. Returns (loss, dloss/dlogits)."""
    logits = _outputs_array(logits, "logits")
    if logits.ndim != 2 or logits.shape[1] < 1:
        raise shape_error("logits", "(N, C) with C >= 1", logits.shape)
    n_rows, n_classes = logits.shape
    ids = int_array(targets, "targets", "class ids", 0, n_classes - 1,
                    f"{n_classes} classes: the columns of logits")
    if ids.shape != (n_rows,):
        raise shape_error("targets", f"({n_rows},) (one class id per row of logits)", ids.shape)
    ids = np.ascontiguousarray(ids, dtype=np.int64)
    weights = _mask_array(mask, n_rows, logits.dtype)
    grad = _grad_array(out, logits, (ids, weights))
    loss = _kernels.softmax_cross_entropy(logits, ids, weights, grad)
    return float(loss), grad


def binary_cross_entropy(logits, targets, mask=None, *, out=None):
    """Sigmoid binary cross-entropy of logits (N, O) or (N,) against targets of the same
    shape (probabilities, usually 0/1); like
    torch.nn.functional.binary_cross_entropy_with_logits. Returns (loss, dloss/dlogits)."""
    return _elementwise(_kernels.sigmoid_binary_cross_entropy, "logits", logits, targets,
                        mask, out)


def mse(outputs, targets, mask=None, *, out=None):
    """Mean squared error of outputs (N, O) or (N,) against targets of the same shape;
    like torch.nn.functional.mse_loss. Returns (loss, dloss/doutputs)."""
    return _elementwise(_kernels.squared_error, "outputs", outputs, targets, mask, out)


def _elementwise(loss_kernel, name, outputs, targets, mask, out):
    outputs = _outputs_array(outputs, name)
    if outputs.ndim not in (1, 2):
        raise shape_error(name, "(N, O) or (N,)", outputs.shape)
    targets = float_array(targets, "targets", outputs.dtype)
    if targets.shape != outputs.shape:
        raise shape_error("targets", f"{outputs.shape} (the shape of {name})", targets.shape)
    n_rows = outputs.shape[0]
    weights = _mask_array(mask, n_rows, outputs.dtype)
    grad = _grad_array(out, outputs, (targets, weights))
    # The kernels see 2-D arrays; (N,) is (N, 1) without a copy.
    as_2d = outputs.shape if outputs.ndim == 2 else (n_rows, 1)
    loss = loss_kernel(outputs.reshape(as_2d), targets.reshape(as_2d), weights,
                       grad.reshape(as_2d))
    return float(loss), grad


def _outputs_array(value, name):
    array = np.asarray(value)
    return float_array(array, name, array.dtype if array.dtype in FLOAT_DTYPES else np.float64)


def _mask_array(mask, n_rows, dtype):
    if mask is None:
        return np.ones(n_rows, dtype=dtype)
    array = np.asarray(mask)
    if array.dtype.kind not in "biuf":
        raise TypeError(f"mask must hold real weights or booleans, got dtype {array.dtype}")
    if array.shape != (n_rows,):
        raise shape_error("mask", f"({n_rows},) (one weight per row)", array.shape)
    array = np.ascontiguousarray(array, dtype=dtype)
    if not (np.isfinite(array).all() and (array >= 0).all()):
        raise ValueError("mask must hold finite weights >= 0 (0 marks a padded row)")
    return array


def _grad_array(out, outputs, others):
    if out is None:
        return np.empty_like(outputs)
    if not isinstance(out, np.ndarray):
        raise TypeError(f"out must be a numpy array, got {type(out).__name__}")
    if out.dtype != outputs.dtype or out.shape != outputs.shape:
        raise ValueError(f"out must be a {outputs.dtype} array of shape {outputs.shape}, "
                         f"got {out.dtype} {out.shape}")
    if not (out.flags.c_contiguous and out.flags.writeable):
        raise ValueError("out must be C-contiguous and writeable")
    if any(np.may_share_memory(out, other) for other in (outputs, *others)):
        raise ValueError("out must not overlap the loss inputs")
    return out
