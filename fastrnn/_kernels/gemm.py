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
from numba.extending import intrinsic

from ._jit import borrowing_helper

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
def _address(typingctx, array, offset):
    """void* to the element `offset` elements past an array's first one (the
    caller computes the offset from the strides). Makes no view of the array, so
    no reference count changes."""
    if not isinstance(array, types.Array) or not isinstance(offset, types.Integer):
        return None

    def codegen(context, builder, signature, args):
        data = context.make_array(signature.args[0])(context, builder, args[0]).data
        index = context.cast(builder, args[1], signature.args[1], types.intp)
        return builder.bitcast(builder.gep(data, [index]), ir.IntType(8).as_pointer())
    return types.voidptr(array, offset), codegen


@intrinsic
def _scalar_slot(typingctx, like, value):
    """void* to a stack slot holding `value` in the float type of the scalar
    `like` (BLAS's alpha and beta), in the entry block of the calling function."""
    if like not in _BLAS_KINDS:
        return None

    def codegen(context, builder, signature, args):
        converted = context.cast(builder, args[1], signature.args[1], like)
        slot = cgutils.alloca_once(builder, context.get_value_type(like))
        builder.store(converted, slot)
        return builder.bitcast(slot, ir.IntType(8).as_pointer())
    return types.voidptr(like, value), codegen


_BLAS_KINDS = {types.float32: 115, types.float64: 100}  # ord("s"), ord("d")


@intrinsic
def _blas_kind(typingctx, like):
    """BLAS's type letter for the float type of the scalar `like`."""
    if like not in _BLAS_KINDS:
        return None
    kind = _BLAS_KINDS[like]

    def codegen(context, builder, signature, args):
        return context.get_constant(types.intp, kind)
    return types.intp(like), codegen


@borrowing_helper
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


@borrowing_helper
def matmul(a, b, out, transpose_a, transpose_b, accumulate):
    """out = op(a) @ op(b), or out += that if `accumulate`, where op(x) is x.T
    if its flag is set, else x.

    Operands are 2-D arrays of one float dtype whose rows are contiguous (C
    arrays and their row or column slices); out must not overlap a or b.
    Raises ValueError on shapes that do not match, RuntimeError if the BLAS
    could not be called."""
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
    _product_at(out.dtype.type(0.0), transpose_a, transpose_b, rows, columns, inner,
                _address(a, 0), _leading_dimension(a), _address(b, 0), _leading_dimension(b),
                _address(out, 0), _leading_dimension(out), accumulate)


@borrowing_helper
def matmul_blocks(a, blocks, out):
    """out = a @ w for a weight w (K, N) given as its blocks (n_k, n_n, k, d): w
    cut into n_k row chunks of k and n_n column blocks of d, each block a
    row-major (k, d) matrix (see sequence.blocked_product). Each block's product
    writes (the first row chunk) or adds into its columns of out.

    a and out are 2-D arrays whose rows are contiguous, blocks a 4-D array whose
    blocks' rows are. The products go to BLAS at the blocks' addresses, without a
    view of any array: in a time loop they change no reference counts (atomic
    operations, three views a block)."""
    n_k, n_n, k_width, width = blocks.shape
    rows = a.shape[0]
    if a.shape[1] != n_k * k_width or out.shape[0] != rows or out.shape[1] != n_n * width:
        raise ValueError(_SHAPES_DIFFER)
    if rows == 0 or width == 0 or k_width == 0:
        return
    itemsize = blocks.itemsize
    if width > 1 and blocks.strides[3] != itemsize:
        raise ValueError(_ROWS_NOT_CONTIGUOUS)
    lda, ldc = _leading_dimension(a), _leading_dimension(out)
    ldb = max(1, width) if k_width == 1 else blocks.strides[2] // itemsize
    like = out.dtype.type(0.0)
    for k_block in range(n_k):
        for n_block in range(n_n):
            block = (k_block * blocks.strides[0] + n_block * blocks.strides[1]) // itemsize
            _product_at(like, False, False, rows, width, k_width,
                        _address(a, k_block * k_width), lda, _address(blocks, block), ldb,
                        _address(out, n_block * width), ldc, k_block > 0)


@borrowing_helper
def row_times_row_blocks(a, a_offset, w, first_row, row_step, rows, count, out, out_offset):
    """One row times `count` row blocks of w (N, K) transposed: for i < count, the
    `rows` values of out's memory from out_offset + i * rows are the K values of
    a's memory from a_offset times w[r:r + rows].T, r = first_row + i * row_step.
    a, w and out are C-contiguous and every range lies inside its array (the
    caller's to ensure). No views, so no reference counts change: a time loop
    split across threads calls it every step."""
    inner = w.shape[1]
    like = out.dtype.type(0.0)
    for i in range(count):
        _product_at(like, False, True, 1, rows, inner, _address(a, a_offset), inner,
                    _address(w, (first_row + i * row_step) * inner), inner,
                    _address(out, out_offset + i * rows), rows, False)


@borrowing_helper
def _product_at(like, transpose_a, transpose_b, rows, columns, inner, a, lda, b, ldb, out,
                ldc, accumulate):
    """matmul's BLAS call on row-major matrices at the addresses a, b, out (row
    strides lda, ldb, ldc in elements) in the float type of the scalar `like`:
    op(a) (rows, inner), op(b) (inner, columns), all sizes positive. It takes
    no arrays: it compiles once per dtype, whatever its callers' layouts."""
    if max(rows, columns, inner, lda, ldb, ldc) > _C_INT_MAX:
        raise ValueError("matmul: a dimension exceeds the BLAS's 32-bit sizes")
    kind = _blas_kind(like)
    alpha = _scalar_slot(like, 1.0)
    beta = _scalar_slot(like, 1.0 if accumulate else 0.0)
    # op(b)'s and op(a)'s shapes as stored.
    b_rows, b_columns = (columns, inner) if transpose_b else (inner, columns)
    a_rows, a_columns = (inner, rows) if transpose_a else (rows, inner)
    # A row-major (R, C) matrix is the column-major (C, R) one: out^T = op(b)^T op(a)^T.
    trans_b = _TRANSPOSE if transpose_b else _NO_TRANSPOSE
    trans_a = _TRANSPOSE if transpose_a else _NO_TRANSPOSE
    if rows == 1 and (not transpose_a or lda == 1):
        # out's row = op(b)^T (a's row or column): op(b)^T is column-major (columns, inner).
        status = _xxgemv(kind, trans_b, b_columns, b_rows, alpha, b, ldb, a, beta, out)
    elif columns == 1 and ldc == 1 and (transpose_b or ldb == 1):
        # out's column = op(a) (b's column or row): a is column-major (a_columns, a_rows).
        status = _xxgemv(kind, _NO_TRANSPOSE if transpose_a else _TRANSPOSE, a_columns,
                         a_rows, alpha, a, lda, b, beta, out)
    else:
        status = _xxgemm(kind, trans_b, trans_a, columns, rows, inner, alpha, b, ldb, a, lda,
                         beta, out, ldc)
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

    def row_times_row_blocks(a, a_offset, w, first_row, row_step, rows, count, out,  # noqa: F811
                             out_offset):
        """row_times_row_blocks in pure Python (a coverage run), on numpy."""
        inner = w.shape[1]
        row, flat = a.reshape(-1)[a_offset:a_offset + inner], out.reshape(-1)
        for i in range(count):
            first, start = first_row + i * row_step, out_offset + i * rows
            flat[start:start + rows] = w[first:first + rows] @ row

    def matmul_blocks(a, blocks, out):  # noqa: F811
        """matmul_blocks in pure Python (a coverage run): matmul on views of the blocks."""
        n_k, n_n, k_width, width = blocks.shape
        if a.shape[1] != n_k * k_width or out.shape != (a.shape[0], n_n * width):
            raise ValueError(_SHAPES_DIFFER)
        for k_block in range(n_k):
            for n_block in range(n_n):
                matmul(a[:, k_block * k_width:(k_block + 1) * k_width], blocks[k_block, n_block],
                       out[:, n_block * width:(n_block + 1) * width], False, False, k_block > 0)
