"""Products of a single row (a batch of one) with a weight, as vectorised loops.

For one row, a loop LLVM vectorises runs about as fast as OpenBLAS's GEMV
(faster on small weights, slower on those that do not fit in L2), and it can run
on any range of the weight's rows from several threads at once, without BLAS's
own threads: the single-step cells split a batch of one's products so, each
thread on its own rows of the weights.

w is (N, K) with contiguous rows; vectors are 1-D; every range [start, stop)
lies inside w's rows (the caller's to ensure). No views, no allocation.
"""

from ._jit import borrowing_helper


@borrowing_helper
def rows_times_vector(w, vector, out, start, stop):
    """out[r] = w[r] . vector for r in [start, stop); four rows a pass, so each
    element of `vector` is loaded once for four rows."""
    inner = w.shape[1]
    zero = out.dtype.type(0.0)
    row = start
    while row + 4 <= stop:
        s0 = s1 = s2 = s3 = zero
        for k in range(inner):
            value = vector[k]
            s0 += w[row, k] * value
            s1 += w[row + 1, k] * value
            s2 += w[row + 2, k] * value
            s3 += w[row + 3, k] * value
        out[row] = s0
        out[row + 1] = s1
        out[row + 2] = s2
        out[row + 3] = s3
        row += 4
    while row < stop:
        total = zero
        for k in range(inner):
            total += w[row, k] * vector[k]
        out[row] = total
        row += 1


@borrowing_helper
def add_rows_combination(w, coefficients, out, start, stop):
    """out += sum over r in [start, stop) of coefficients[r] * w[r] (out has K
    values): four rows a pass, so out is loaded and stored once for four."""
    inner = w.shape[1]
    row = start
    while row + 4 <= stop:
        c0, c1, c2, c3 = (coefficients[row], coefficients[row + 1], coefficients[row + 2],
                          coefficients[row + 3])
        for k in range(inner):
            out[k] += c0 * w[row, k] + c1 * w[row + 1, k] + c2 * w[row + 2, k] + c3 * w[row + 3, k]
        row += 4
    while row < stop:
        coefficient = coefficients[row]
        for k in range(inner):
            out[k] += coefficient * w[row, k]
        row += 1


@borrowing_helper
def add_outer_rows(coefficients, vector, target, start, stop):
    """target[r] += coefficients[r] * vector for r in [start, stop) (a rank-one
    update of those rows of target (N, K))."""
    inner = target.shape[1]
    for row in range(start, stop):
        coefficient = coefficients[row]
        for k in range(inner):
            target[row, k] += coefficient * vector[k]
