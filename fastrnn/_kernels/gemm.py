"""Every matrix product of the kernels: out (+)= op(a) @ op(b) on 2-D arrays and
their row and column slices, through the BLAS numba's np.dot calls (numba's
`numba_xxgemm` and `numba_xxgemv` helpers, which forward to scipy's BLAS).

numba's np.dot wants whole contiguous arrays (it copies a slice first), always
writes its result (accumulating needed a temporary the size of the output) and
compiles about half a second of shape checks and dispatch into every kernel
that calls it. `matmul` takes any 2-D array whose rows are contiguous, passing
the row stride as BLAS's leading dimension, and can accumulate; it is compiled
once per dtype, whatever the layouts of its operands and the flags its callers
pass.

Like np.dot, a product with a single row or column of output goes to GEMV,
which OpenBLAS runs faster than a one-row GEMM.
"""

import numba
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.core.imputils import impl_ret_borrowed
from numba.extending import intrinsic

from ._jit import helper

# int numba_xxgemm(kind, transa, transb, m, n, k, *alpha, *a, lda, *b, ldb, *beta,
# *c, ldc) and numba_xxgemv(kind, trans, m, n, *alpha, *a, lda, *x, *beta, *y):
# column-major BLAS, c = alpha op(a) op(b) + beta c and y = alpha op(a) x + beta y,
# unit vector strides. Pointers are declared void* as numba's own lowering
# declares them (one module may hold both).
_xxgemm = types.ExternalFunction("numba_xxgemm", types.intc(
    types.char, types.char, types.char, types.intp, types.intp, types.intp,
    types.voidptr, types.voidptr, types.intp, types.voidptr, types.intp,
    types.voidptr, types.voidptr, types.intp))
_xxgemv = types.ExternalFunction("numba_xxgemv", types.intc(
    types.char, types.char, types.intp, types.intp, types.voidptr, types.voidptr, types.intp,
    types.voidptr, types.voidptr, types.voidptr))

_NO_TRANSPOSE = 110  # ord("n")
_TRANSPOSE = 116     # ord("t")
_C_INT_MAX = 2**31 - 1  # scipy's BLAS takes 32-bit sizes
_SHAPES_DIFFER = "matmul: the operands' shapes do not match"
_ROWS_NOT_CONTIGUOUS = "matmul: every operand's rows must be contiguous"


@intrinsic
def _data(typingctx, array):
    """void* to the first element of an array's data."""
    def codegen(context, builder, signature, args):
        data = context.make_array(signature.args[0])(context, builder, args[0]).data
        return builder.bitcast(data, ir.IntType(8).as_pointer())
    return types.voidptr(array), codegen


@intrinsic
def _scalar_slot(typingctx, array, value):
    """void* to a stack slot holding `value` in the array's dtype (BLAS's alpha
    and beta), in the entry block of the calling function."""
    dtype = array.dtype

    def codegen(context, builder, signature, args):
        converted = context.cast(builder, args[1], signature.args[1], dtype)
        slot = cgutils.alloca_once(builder, context.get_value_type(dtype))
        builder.store(converted, slot)
        return builder.bitcast(slot, ir.IntType(8).as_pointer())
    return types.voidptr(array, value), codegen


@helper
def _leading_dimension(matrix):
    """BLAS's leading dimension of a row-major matrix whose rows are contiguous:
    its row stride in elements (any value at least the row length where there is
    only one row, which BLAS never steps over)."""
    rows, columns = matrix.shape
    if columns > 1 and matrix.strides[1] != matrix.itemsize:
        raise ValueError(_ROWS_NOT_CONTIGUOUS)
    if rows <= 1:
        return max(1, columns)
    return matrix.strides[0] // matrix.itemsize


@intrinsic
def _any_layout(typingctx, array):
    """The array itself, typed with layout "A": whatever the layouts of its
    callers' operands, _matmul compiles once per dtype."""
    if not isinstance(array, types.Array):
        return None
    result = array.copy(layout="A")

    def codegen(context, builder, signature, args):
        value = context.cast(builder, args[0], signature.args[0], result)
        return impl_ret_borrowed(context, builder, result, value)
    return result(array), codegen


@helper
def matmul(a, b, out, transpose_a, transpose_b, accumulate):
    """out = op(a) @ op(b), or out += that if `accumulate`, where op(x) is x.T
    if its flag is set, else x.

    Operands are 2-D arrays of one float dtype whose rows are contiguous (C
    arrays and their row or column slices); out must not overlap a or b.
    Raises ValueError on shapes that do not match, RuntimeError if the BLAS
    could not be called."""
    _matmul(_any_layout(a), _any_layout(b), _any_layout(out), transpose_a, transpose_b,
            accumulate)


@helper
def _matmul(a, b, out, transpose_a, transpose_b, accumulate):
    rows = a.shape[1] if transpose_a else a.shape[0]
    inner = a.shape[0] if transpose_a else a.shape[1]
    b_inner = b.shape[1] if transpose_b else b.shape[0]
    columns = b.shape[0] if transpose_b else b.shape[1]
    if inner != b_inner or out.shape[0] != rows or out.shape[1] != columns:
        raise ValueError(_SHAPES_DIFFER)
    if rows == 0 or columns == 0:
        return
    if inner == 0:
        if not accumulate:
            for row in range(rows):
                for col in range(columns):
                    out[row, col] = 0.0
        return
    lda, ldb, ldc = _leading_dimension(a), _leading_dimension(b), _leading_dimension(out)
    if max(rows, columns, inner, lda, ldb, ldc) > _C_INT_MAX:
        raise ValueError("matmul: a dimension exceeds the BLAS's 32-bit sizes")
    kind = 115 if out.itemsize == 4 else 100  # ord("s"), ord("d"): float32, float64
    alpha = _scalar_slot(out, 1.0)
    beta = _scalar_slot(out, 1.0 if accumulate else 0.0)
    # A row-major (R, C) matrix is the column-major (C, R) one: out^T = op(b)^T op(a)^T.
    trans_b = _TRANSPOSE if transpose_b else _NO_TRANSPOSE
    trans_a = _TRANSPOSE if transpose_a else _NO_TRANSPOSE
    if rows == 1 and (not transpose_a or lda == 1):
        # out's row = op(b)^T (a's row or column): op(b)^T is column-major (columns, inner).
        status = _xxgemv(kind, trans_b, b.shape[1], b.shape[0], alpha, _data(b), ldb,
                         _data(a), beta, _data(out))
    elif columns == 1 and ldc == 1 and (transpose_b or ldb == 1):
        # out's column = op(a) (b's column or row): a is column-major (a.shape[1], a.shape[0]).
        status = _xxgemv(kind, _NO_TRANSPOSE if transpose_a else _TRANSPOSE, a.shape[1],
                         a.shape[0], alpha, _data(a), lda, _data(b), beta, _data(out))
    else:
        status = _xxgemm(kind, trans_b, trans_a, columns, rows, inner, alpha, _data(b), ldb,
                         _data(a), lda, beta, _data(out), ldc)
    if status != 0:
        raise RuntimeError("matmul: the BLAS could not be called")


if numba.config.DISABLE_JIT:
    def matmul(a, b, out, transpose_a, transpose_b, accumulate):  # noqa: F811
        """matmul in pure Python (a coverage run), on numpy, with its checks."""
        left, right = (a.T if transpose_a else a), (b.T if transpose_b else b)
        if left.shape[1] != right.shape[0] or out.shape != (left.shape[0], right.shape[1]):
            raise ValueError(_SHAPES_DIFFER)
        if out.size == 0:
            return
        for matrix in (a, b, out) if left.shape[1] else ():
            if matrix.shape[1] > 1 and matrix.strides[1] != matrix.itemsize:
                raise ValueError(_ROWS_NOT_CONTIGUOUS)
        if accumulate:
            out += left @ right
        else:
            out[...] = left @ right
