"""GEMM on sub-matrices with accumulation: C += A^T B on row slices and column
ranges, which numba's np.dot cannot express (it wants whole contiguous arrays
and writes its result; accumulating needed a temporary the size of C).

Calls the BLAS GEMM that numba's own np.dot calls (numba's `numba_xxgemm`
helper, which forwards to scipy's BLAS), with leading dimensions and offsets.
"""

import numpy as np
from llvmlite import ir
from numba import types
from numba.extending import intrinsic

from ._jit import kernel

# int numba_xxgemm(kind, transa, transb, m, n, k, *alpha, *a, lda, *b, ldb, *beta,
# *c, ldc): column-major GEMM, c = alpha op(a) op(b) + beta c. Pointers are
# declared void* as numba's own lowering declares them (one module may hold both).
_xxgemm = types.ExternalFunction("numba_xxgemm", types.intc(
    types.char, types.char, types.char, types.intp, types.intp, types.intp,
    types.voidptr, types.voidptr, types.intp, types.voidptr, types.intp,
    types.voidptr, types.voidptr, types.intp))

_NO_TRANSPOSE = 110  # ord("n")
_TRANSPOSE = 116     # ord("t")


@intrinsic
def _element_address(typingctx, array, index):
    """void* to element `index` of a contiguous array's data (flat index)."""
    def codegen(context, builder, signature, args):
        data = context.make_array(signature.args[0])(context, builder, args[0]).data
        pointer = builder.gep(data, [args[1]])
        return builder.bitcast(pointer, ir.IntType(8).as_pointer())
    return types.voidptr(array, types.intp), codegen


@kernel
def accumulate_at_transposed(left, right, out, row0, row1, col0, columns):
    """out[col0:col0+columns] += left[row0:row1, col0:col0+columns]^T @ right[row0:row1]

    for C-contiguous 2-D left (N, G), right (N, K) and out (G, K) of one float
    dtype. Raises if the BLAS could not be called."""
    if not (left.flags.c_contiguous and right.flags.c_contiguous and out.flags.c_contiguous):
        raise ValueError("accumulate_at_transposed needs C-contiguous arrays")
    n_rows = row1 - row0
    width = left.shape[1]
    inner = right.shape[1]
    if n_rows <= 0 or columns <= 0 or inner == 0:
        return
    scalars = np.ones(2, dtype=out.dtype)  # alpha = beta = 1: accumulate
    kind = 115 if out.itemsize == 4 else 100  # ord("s"), ord("d"): float32, float64
    # Row-major (R, C) is column-major (C, R): out^T (K, g) = right^T (K, n) @ slice (n, g).
    status = _xxgemm(kind, _NO_TRANSPOSE, _TRANSPOSE, inner, columns, n_rows,
                     _element_address(scalars, 0), _element_address(right, row0 * inner), inner,
                     _element_address(left, row0 * width + col0), width,
                     _element_address(scalars, 1), _element_address(out, col0 * inner), inner)
    if status != 0:
        raise RuntimeError("the BLAS GEMM could not be called")
