"""Calling one compiled kernel from another through its address, and the one
parallel loop every kernel shares.

A numba kernel that calls another links the callee's whole code into its own and
LLVM optimises and compiles it again; a parallel loop repeats that for each of
the functions numba builds around its body (and numba's own passes run for each
parallel loop, whatever its body).

`call_compiled` calls a kernel compiled (and cached) on its own through its
address, which the Python caller looks up with `compiled_address`. `launch_serial`
and `launch_parallel` run chunks 0 .. n-1 of such a kernel, the latter one thread
each: the single parallel loop there is, compiled once for every kernel, because
its arguments are three integers. The work a chunk needs travels as a `pack`ed
tuple in the caller's frame, which the chunk kernel `unpack`s knowing its type.

The callee's argument types must be exactly those the caller passes. To keep
them predictable from the Python side, every array passed must be C-contiguous
and writable: `call_compiled` and `pack` refuse any other at compile time.
"""

import numba
from numba import prange, types
from numba.core import cgutils, errors
from numba.core.typing import Signature
from numba.extending import intrinsic

from ._jit import kernel, parallel_kernel, renamed


@intrinsic
def call_compiled(typingctx, address, arguments):
    """Calls the numba function compiled at `address` (numba's own calling
    convention, no result) with the tuple `arguments` unpacked; an error it
    raises is raised by the caller."""
    if not isinstance(address, types.Integer) or not isinstance(arguments, types.BaseTuple):
        return None
    argument_types = tuple(arguments.types)
    _check_arrays("call_compiled", argument_types)

    def codegen(context, builder, signature, llvm_arguments):
        packed_address, packed = llvm_arguments
        values = [builder.extract_value(packed, i) for i in range(len(argument_types))]
        function_type = context.call_conv.get_function_type(types.none, argument_types)
        function = builder.inttoptr(packed_address, function_type.as_pointer())
        status, _ = context.call_conv.call_function(builder, function, types.none,
                                                    argument_types, values)
        with cgutils.if_unlikely(builder, status.is_error):
            context.call_conv.return_status_propagate(builder, status)
        return context.get_dummy_value()

    return types.none(address, arguments), codegen


def argument_types(arguments):
    """numba's types of a call's arguments, as the callee is compiled for them."""
    return tuple(numba.typeof(argument) for argument in arguments)


def compiled_address(dispatcher, types_of_arguments):
    """The address of `dispatcher`'s specialisation for these argument types,
    compiled (or loaded from the cache) first where it is not yet."""
    dispatcher.compile(types_of_arguments)
    result = dispatcher.get_compile_result(Signature(types.none, types_of_arguments, None))
    return result.library.get_pointer_to_function(result.fndesc.llvm_func_name)


def _check_arrays(who, argument_types):
    for position, argument_type in enumerate(argument_types):
        if isinstance(argument_type, types.Array) and (argument_type.layout != "C"
                                                       or not argument_type.mutable):
            raise errors.TypingError(
                f"{who}: argument {position} must be a C-contiguous writable array, "
                f"got {argument_type}")


@intrinsic
def pack(typingctx, arguments):
    """The address of a copy of the tuple `arguments` in the caller's frame, for
    a kernel called during the caller's lifetime to `unpack` (arrays C-contiguous
    and writable, as for call_compiled)."""
    if not isinstance(arguments, types.BaseTuple):
        return None
    _check_arrays("pack", arguments.types)

    def codegen(context, builder, signature, llvm_arguments):
        slot = cgutils.alloca_once(builder, context.get_value_type(arguments))
        builder.store(llvm_arguments[0], slot)
        return builder.ptrtoint(slot, context.get_value_type(types.intp))

    return types.intp(arguments), codegen


@intrinsic
def unpack(typingctx, address, payload_type):
    """The tuple of type `payload_type` (a numba Tuple type) that `pack` left at
    `address`; its arrays are new references, as any other value's."""
    if not isinstance(payload_type, types.TypeRef):
        return None
    tuple_type = payload_type.instance_type

    def codegen(context, builder, signature, llvm_arguments):
        pointer = builder.inttoptr(llvm_arguments[0],
                                   context.get_value_type(tuple_type).as_pointer())
        value = builder.load(pointer)
        context.nrt.incref(builder, tuple_type, value)
        return value

    return tuple_type(address, payload_type), codegen


def _launch(entry, n_chunks, payload):
    """Runs the chunk kernel at `entry` (see chunk_entry) for chunks 0 ..
    n_chunks - 1 of the work `payload` describes, one thread each."""
    for chunk in prange(n_chunks):
        call_compiled(entry, (chunk, n_chunks, payload))


if numba.config.DISABLE_JIT:
    # Pure Python (a coverage run): an "address" is the chunk function itself and
    # a packed payload the tuple.
    def call_compiled(address, arguments):  # noqa: F811
        address(*arguments)

    def pack(arguments):  # noqa: F811
        return arguments

    def unpack(address, payload_type):  # noqa: F811
        return address

    def compiled_address(dispatcher, types_of_arguments):  # noqa: F811
        return dispatcher

launch_serial = kernel(renamed(_launch, "launch_serial", globals()))
launch_parallel = parallel_kernel(renamed(_launch, "launch_parallel", globals()))
