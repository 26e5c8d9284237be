"""The linear head (y = x W^T + b) forward and backward.

In kernels so that its products run on the same BLAS (scipy's, through numba) as
the recurrent kernels: numpy's separate OpenBLAS would keep a second pool of
spinning threads competing for the same cores.
"""

import numpy as np

from ._jit import kernel
from .sequence import accumulate_param_grads


@kernel
def linear_forward(features, weight, bias, out):
    np.dot(features, weight.T, out)
    for row in range(out.shape[0]):
        for col in range(out.shape[1]):
            out[row, col] += bias[col]


@kernel
def linear_backward(d_out, features, weight, d_weight, d_bias, d_features):
    """Accumulates d_weight and d_bias; writes d_features."""
    accumulate_param_grads(d_out, features, d_weight, d_bias)
    np.dot(d_out, weight, d_features)
