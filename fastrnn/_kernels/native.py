"""Calling one compiled kernel from another through its address.

A numba kernel that calls another links the callee's whole code into its own and
LLVM optimises and compiles it again; a parallel loop repeats that for each of
the functions numba builds around its body. A driver that runs a cell's time
loop in a parallel loop thus compiled that loop's code four times over.
`call_compiled` instead calls a kernel already compiled on its own (and cached on
its own) through its address, which the Python caller looks up with
`compiled_address`: the loop's code is compiled once, and the driver around it
only holds the call.

The callee's argument types must be exactly those the caller passes. To keep
them predictable from the Python side, every array passed must be C-contiguous
and writable: `call_compiled` refuses any other at compile time.
"""

import numba
from numba import types
from numba.core import cgutils, errors
from numba.core.typing import Signature
from numba.extending import intrinsic


@intrinsic
def call_compiled(typingctx, address, arguments):
    """Calls the numba function compiled at `address` (numba's own calling
    convention, no result) with the tuple `arguments` unpacked; an error it
    raises is raised by the caller."""
    if not isinstance(address, types.Integer) or not isinstance(arguments, types.BaseTuple):
        return None
    argument_types = tuple(arguments.types)
    for position, argument_type in enumerate(argument_types):
        if isinstance(argument_type, types.Array) and (argument_type.layout != "C"
                                                       or not argument_type.mutable):
            raise errors.TypingError(
                f"call_compiled: argument {position} must be a C-contiguous writable "
                f"array, got {argument_type}")

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
