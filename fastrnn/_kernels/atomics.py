"""Atomic operations on int64 arrays, for threads of one kernel call that hand
work to each other (the unit-split time loop, see engine._forward_unit_rows).

numba has no atomics of its own on the CPU; these are LLVM's, sequentially
consistent: a thread's writes before an atomic_add or a successful
compare_and_swap are seen by any thread whose atomic_load then reads the value
it wrote. Under NUMBA_DISABLE_JIT (one thread) they are plain array operations.
"""

import llvmlite.binding
import numba
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

_ORDER = "seq_cst"


def _int64_array(array):
    return (isinstance(array, types.Array) and array.dtype == types.int64
            and array.ndim == 1 and array.layout == "C")


def _element(context, builder, array_type, array, index):
    data = context.make_array(array_type)(context, builder, array).data
    return builder.gep(data, [index])


@intrinsic
def atomic_add(typingctx, array, index, value):
    """array[index] += value atomically; returns the value before."""
    if not _int64_array(array):
        return None

    def codegen(context, builder, signature, args):
        pointer = _element(context, builder, signature.args[0], args[0], args[1])
        addend = context.cast(builder, args[2], signature.args[2], types.int64)
        return builder.atomic_rmw("add", pointer, addend, _ORDER)
    return types.int64(array, types.intp, types.int64), codegen


@intrinsic
def atomic_load(typingctx, array, index):
    """array[index], read atomically."""
    if not _int64_array(array):
        return None

    def codegen(context, builder, signature, args):
        pointer = _element(context, builder, signature.args[0], args[0], args[1])
        return builder.load_atomic(pointer, _ORDER, 8)
    return types.int64(array, types.intp), codegen


@intrinsic
def compare_and_swap(typingctx, array, index, expected, new):
    """Sets array[index] to `new` if it holds `expected`, atomically; True if it did."""
    if not _int64_array(array):
        return None

    def codegen(context, builder, signature, args):
        pointer = _element(context, builder, signature.args[0], args[0], args[1])
        old = context.cast(builder, args[2], signature.args[2], types.int64)
        new_value = context.cast(builder, args[3], signature.args[3], types.int64)
        result = builder.cmpxchg(pointer, old, new_value, _ORDER, _ORDER)
        return builder.extract_value(result, 1)
    return types.boolean(array, types.intp, types.int64, types.int64), codegen


_X86 = llvmlite.binding.get_process_triple().startswith(("x86_64", "i686"))


@intrinsic
def spin_pause(typingctx):
    """Tells an x86 CPU that the thread is spinning on a value another writes
    (the core's other hyperthread gets its resources); nothing elsewhere."""

    def codegen(context, builder, signature, args):
        if _X86:
            pause = cgutils.get_or_insert_function(
                builder.module, ir.FunctionType(ir.VoidType(), []), "llvm.x86.sse2.pause")
            builder.call(pause, [])
        return context.get_dummy_value()
    return types.none(), codegen


if numba.config.DISABLE_JIT:
    def atomic_add(array, index, value):  # noqa: F811
        """atomic_add in pure Python (a coverage run: one thread)."""
        old = int(array[index])
        array[index] = old + value
        return old

    def atomic_load(array, index):  # noqa: F811
        """atomic_load in pure Python (a coverage run: one thread)."""
        return int(array[index])

    def compare_and_swap(array, index, expected, new):  # noqa: F811
        """compare_and_swap in pure Python (a coverage run: one thread)."""
        if array[index] != expected:
            return False
        array[index] = new
        return True

    def spin_pause():  # noqa: F811
        """Nothing to wait for in pure Python (a coverage run: one thread)."""
