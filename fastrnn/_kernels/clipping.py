"""Gradient clipping on one flat gradient buffer."""

import numpy as np

from ._jit import exact_kernel, kernel


@exact_kernel
def clip_by_value(grads, clip_value):
    for k in range(grads.size):
        g = grads[k]
        if g > clip_value:
            grads[k] = clip_value
        elif g < -clip_value:
            grads[k] = -clip_value


@kernel
def global_norm(grads):
    """L2 norm accumulated in float64 whatever the dtype; inf/NaN propagate.

    Reassociation lets the sum vectorise (8x faster); it changes the result only
    in float64 rounding."""
    total = 0.0
    for k in range(grads.size):
        g = np.float64(grads[k])
        total += g * g
    return np.sqrt(total)


@exact_kernel
def clip_by_norm(grads, max_norm):
    """Scale grads so their L2 norm is at most max_norm; returns the pre-clip norm.

    Same rule as torch.nn.utils.clip_grad_norm_: coefficient max_norm / (norm + 1e-6),
    applied only when it is below 1.
    """
    norm = global_norm(grads)
    coefficient = max_norm / (norm + 1e-6)
    if coefficient < 1.0:
        for k in range(grads.size):
            grads[k] *= coefficient
    return norm
