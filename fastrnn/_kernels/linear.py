"""The linear head (y = x W^T + b) forward and backward.

In kernels so that its products run on the same BLAS (scipy's, through numba) as
the recurrent kernels: numpy's separate OpenBLAS would keep a second pool of
spinning threads competing for the same cores.
"""


from ._jit import kernel
from .gemm import matmul
from .sequence import add_column_sums


@kernel
def linear_forward(features, weight, bias, out):
    matmul(features, weight, out, False, True, False)
    for row in range(out.shape[0]):
        for col in range(out.shape[1]):
            out[row, col] += bias[col]


@kernel
def linear_backward(d_out, features, weight, d_weight, d_bias, d_features):
    """Accumulates d_weight and d_bias; writes d_features."""
    n_rows, n_out = d_out.shape
    matmul(d_out, features, d_weight, True, False, True)
    add_column_sums(d_out, 0, n_rows, 0, n_out, d_bias)
    matmul(d_out, weight, d_features, False, False, False)
