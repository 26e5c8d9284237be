"""The linear head (y = x W^T + b) forward and backward.

In kernels so that its products run on the same BLAS (scipy's, through numba) as
the recurrent kernels: numpy's separate OpenBLAS would keep a second pool of
spinning threads competing for the same cores.
"""

import numpy as np

from ._jit import kernel
from .gemm import accumulate_at_transposed
from .sequence import add_column_sums


@kernel
def linear_forward(features, weight, bias, out):
    np.dot(features, weight.T, out)
    for row in range(out.shape[0]):
        for col in range(out.shape[1]):
            out[row, col] += bias[col]


@kernel
def linear_backward(d_out, features, weight, d_weight, d_bias, d_features):
    """Accumulates d_weight and d_bias; writes d_features."""
    n_rows, n_out = d_out.shape
    accumulate_at_transposed(d_out, features, d_weight, 0, n_rows, 0, n_out)
    add_column_sums(d_out, 0, n_rows, 0, n_out, d_bias)
    np.dot(d_out, weight, d_features)
