"""The one place that decides how kernels are compiled."""

import numba

# fastmath flags that allow reassociation and FMA contraction but keep IEEE
# NaN/inf semantics ("nnan"/"ninf" are deliberately absent), so a NaN in the
# input still propagates and isfinite checks stay meaningful.
FASTMATH = {"nsz", "arcp", "contract", "reassoc"}

# Kernels are cached on disk: compile time is the user's time.
kernel = numba.njit(cache=True, nogil=True, fastmath=FASTMATH)
parallel_kernel = numba.njit(cache=True, nogil=True, fastmath=FASTMATH, parallel=True)
exact_kernel = numba.njit(cache=True, nogil=True)  # strict IEEE: reductions whose order matters
