"""The one place that decides how kernels are compiled."""

import types

import numba
from numba import types as numba_types
from numba.extending import intrinsic, register_jitable

# fastmath flags that allow reassociation and FMA contraction but keep IEEE
# NaN/inf semantics ("nnan"/"ninf" are deliberately absent), so a NaN in the
# input still propagates and isfinite checks stay meaningful.
FASTMATH = {"nsz", "arcp", "contract", "reassoc"}

# Kernels are cached on disk: compile time is the user's time. error_model="numpy"
# makes float division IEEE (x/0 -> inf) instead of a checked, unvectorisable branch.
_COMMON = {"nogil": True, "error_model": "numpy"}


def jit(function, *, parallel=False, cache=False):
    """`function` compiled with fastrnn's flags; `cache` for entry points called
    from Python (functions only called from other kernels are compiled into them)."""
    return numba.njit(fastmath=FASTMATH, parallel=parallel, cache=cache, **_COMMON)(function)


def called_by_address(function):
    """`function` compiled and cached without a Python entry point, for kernels
    that are only ever called through their address (native.call_compiled):
    numba then builds no wrapper for it, and the helpers it calls compile with
    the same flags as when other helpers call them, so once for both."""
    return numba.njit(fastmath=FASTMATH, cache=True, no_cpython_wrapper=True, **_COMMON)(function)


def inlined(function):
    """`function` compiled into each caller at numba's level: no code of its own."""
    return numba.njit(fastmath=FASTMATH, inline="always", **_COMMON)(function)


def helper(function):
    """`function` compiled for kernels to call, once per argument types: numba
    compiles a jitted function again for each literal flag a caller passes
    (matmul(..., True) and matmul(..., False)); its overloads, as this is, try
    the ordinary types first. Called from Python, it runs as plain Python."""
    return register_jitable(fastmath=FASTMATH, **_COMMON)(function)


def borrowing_helper(function):
    """A helper (see `helper`) that takes arrays, keeps no reference to any and
    allocates none: compiled without reference counting, so a call does not
    increment and decrement the count of each array it is passed (atomic
    operations, which a time loop would pay for every step). numba compiles what
    it calls with its flags: those helpers must allocate nothing either."""
    return register_jitable(fastmath=FASTMATH, _nrt=False, **_COMMON)(function)


def gate_math(function):
    """A cell's step function, inlined into the engine's loops before LLVM sees
    them: there its buffers are the loop's own fresh arrays, which LLVM knows
    alias nothing, so it vectorises the gate loops without runtime checks."""
    return inlined(function)


kernel = numba.njit(fastmath=FASTMATH, cache=True, **_COMMON)
parallel_kernel = numba.njit(fastmath=FASTMATH, parallel=True, cache=True, **_COMMON)
exact_kernel = numba.njit(cache=True, **_COMMON)  # strict IEEE: reductions whose order matters


@intrinsic
def prefer_vector_width(typingctx, bits):
    """Lets LLVM vectorise the calling function's loops with registers of `bits`
    bits (a literal int; 0 leaves the CPU's default, 256 on AVX-512 Intel CPUs,
    which choose it against their clock drop under 512-bit code). Where the width
    is not the CPU's, LLVM caps it at the widest the CPU has."""
    if not isinstance(bits, numba_types.IntegerLiteral):
        return None
    width = bits.literal_value

    def codegen(context, builder, signature, arguments):
        if width:
            # A string attribute, which llvmlite's attribute set does not list.
            set.add(builder.function.attributes, f'"prefer-vector-width"="{width}"')
        return context.get_dummy_value()
    return numba_types.none(bits), codegen


if numba.config.DISABLE_JIT:
    def prefer_vector_width(bits):  # noqa: F811
        """Nothing to vectorise in pure Python (a coverage run)."""


def renamed(template, name, namespace):
    """A copy of the function `template` named `name`, whose globals are
    `namespace`: numba compiles and caches it apart from the template and its
    other copies (its cache tells functions apart by name, not by their flags
    or globals)."""
    function = types.FunctionType(template.__code__, namespace, name, template.__defaults__)
    function.__qualname__ = name
    return function
