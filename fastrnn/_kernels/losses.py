"""Loss values and their gradients wrt the network outputs, in one pass.

Each kernel takes C-contiguous 2-D float arrays (N, K), a per-row weight (N,) of the
same dtype (0 for padded rows: such rows are skipped entirely, so whatever they hold,
NaN included, never reaches the result) and writes the gradient into `grad` (N, K).
The loss is the weighted mean over the rows' elements; sums are accumulated in
float64 whatever the array dtype. All weights zero gives loss 0 and a zero gradient.
"""

import math

import numpy as np

from ._jit import kernel


@kernel
def _total_weight(weights):
    total = 0.0
    for r in range(weights.size):
        total += weights[r]
    return total


@kernel
def softmax_cross_entropy(logits, targets, weights, grad):
    """sum_r w_r * (logsumexp(x_r) - x_r[t_r]) / sum_r w_r; grad = w_r/W (softmax - onehot).

    targets: int64 (N,), each in [0, K).
    """
    cast = logits.dtype.type
    n_rows, n_classes = logits.shape
    total = _total_weight(weights)
    if total == 0.0:
        grad[:] = 0
        return 0.0
    loss = 0.0
    for r in range(n_rows):
        weight = weights[r]
        if weight == 0:
            grad[r, :] = 0
            continue
        row = logits[r]
        out = grad[r]
        peak = row[0]
        for c in range(1, n_classes):
            peak = max(peak, row[c])
        # Shifting by the row maximum keeps every exp in (0, 1]: no overflow at any scale.
        sum_exp = 0.0
        for c in range(n_classes):
            e = np.exp(row[c] - peak)
            out[c] = e
            sum_exp += e
        target = targets[r]
        share = float(weight) / total
        loss += float(weight) * ((float(peak) - float(row[target])) + math.log(sum_exp))
        scale = cast(share / sum_exp)
        for c in range(n_classes):
            out[c] = out[c] * scale
        out[target] -= cast(share)
    return loss / total


@kernel
def sigmoid_binary_cross_entropy(outputs, targets, weights, grad):
    """Weighted mean of max(x,0) - x*y + log1p(exp(-|x|)); grad = sigmoid(x) - y, scaled."""
    cast = outputs.dtype.type
    zero = cast(0.0)
    one = cast(1.0)
    n_rows, width = outputs.shape
    total = _total_weight(weights)
    if total == 0.0:
        grad[:] = 0
        return 0.0
    count = total * width
    loss = 0.0
    for r in range(n_rows):
        weight = weights[r]
        if weight == 0:
            grad[r, :] = 0
            continue
        scale = cast(float(weight) / count)
        row_loss = 0.0
        for k in range(width):
            x = outputs[r, k]
            y = targets[r, k]
            # exp(-|x|) <= 1 never overflows; it gives both the log term and the sigmoid.
            e = np.exp(-abs(x))
            wide_x = float(x)  # float64 so that x*y cannot overflow a float32
            row_loss += max(wide_x, 0.0) - wide_x * float(y) + float(np.log1p(e))
            # np.divide, not `/`: no ZeroDivisionError branch, so the loop vectorises.
            sig = np.divide(one if x >= zero else e, one + e)
            grad[r, k] = scale * (sig - y)
        loss += float(weight) * row_loss
    return loss / count


@kernel
def squared_error(outputs, targets, weights, grad):
    """Weighted mean of (y_hat - y)^2; grad = 2 (y_hat - y), scaled."""
    cast = outputs.dtype.type
    n_rows, width = outputs.shape
    total = _total_weight(weights)
    if total == 0.0:
        grad[:] = 0
        return 0.0
    count = total * width
    loss = 0.0
    for r in range(n_rows):
        weight = weights[r]
        if weight == 0:
            grad[r, :] = 0
            continue
        scale = cast(2.0 * float(weight) / count)
        row_loss = 0.0
        for k in range(width):
            diff = outputs[r, k] - targets[r, k]
            wide_diff = float(diff)  # float64: a float32 square overflows beyond 1.8e19
            row_loss += wide_diff * wide_diff
            grad[r, k] = scale * diff
        loss += float(weight) * row_loss
    return loss / count
