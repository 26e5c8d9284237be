"""fastrnn._kernels._jit.prefer_vector_width: the register width a kernel's loops
are vectorised with, which the LSTM's forward time loop sets to 512 bits."""

import re

import llvmlite.binding as llvm
import numba
import numpy as np
import pytest
from numba.core.errors import TypingError

from fastrnn._kernels._jit import FASTMATH, prefer_vector_width

pytestmark = pytest.mark.skipif(numba.config.DISABLE_JIT,
                                reason="nothing compiles under NUMBA_DISABLE_JIT")
_ATTRIBUTE = '"prefer-vector-width"="512"'


def _scaled(width):
    """A loop LLVM vectorises, compiled with prefer_vector_width(width)."""
    scale, offset = np.float32(2.5), np.float32(1.0)

    @numba.njit(fastmath=FASTMATH)
    def scaled(source, out):
        prefer_vector_width(width)
        for i in range(source.shape[0]):
            out[i] = scale * source[i] + offset
    return scaled


def _compiled(kernel, n=1000):
    source = np.arange(n, dtype=np.float32)
    out = np.empty_like(source)
    kernel(source, out)
    return out, next(iter(kernel.inspect_llvm().values())), next(iter(kernel.inspect_asm().values()))


def test_the_width_is_an_attribute_of_the_calling_function_and_changes_no_result():
    wide, wide_ir, _ = _compiled(_scaled(512))
    default, default_ir, _ = _compiled(_scaled(0))
    np.testing.assert_array_equal(wide, default)
    np.testing.assert_array_equal(wide, 2.5 * np.arange(1000, dtype=np.float32) + 1.0)
    assert _ATTRIBUTE in wide_ir
    assert "prefer-vector-width" not in default_ir


@pytest.mark.skipif(not llvm.get_host_cpu_features().get("avx512f"),
                    reason="needs a CPU with AVX-512 (this project's CI machine has it)")
def test_on_an_avx512_cpu_the_loop_runs_in_512_bit_registers():
    _, _, asm = _compiled(_scaled(512))
    # float32 arithmetic (v...ps) on 512-bit registers
    assert re.search(r"\tv\w+ps\t.*%zmm", asm), asm


def test_the_width_must_be_a_compile_time_constant():
    @numba.njit
    def from_argument(bits):
        prefer_vector_width(bits)

    with pytest.raises(TypingError):
        from_argument(512)
