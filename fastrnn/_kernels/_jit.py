"""The one place that decides how kernels are compiled."""

import numba

# fastmath flags that allow reassociation and FMA contraction but keep IEEE
# NaN/inf semantics ("nnan"/"ninf" are deliberately absent), so a NaN in the
# input still propagates and isfinite checks stay meaningful.
FASTMATH = {"nsz", "arcp", "contract", "reassoc"}

# Kernels are cached on disk: compile time is the user's time. error_model="numpy"
# makes float division IEEE (x/0 -> inf) instead of a checked, unvectorisable branch.
_COMMON = {"cache": True, "nogil": True, "error_model": "numpy"}
kernel = numba.njit(fastmath=FASTMATH, **_COMMON)
parallel_kernel = numba.njit(fastmath=FASTMATH, parallel=True, **_COMMON)
exact_kernel = numba.njit(**_COMMON)  # strict IEEE: reductions whose order matters
