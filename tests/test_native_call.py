"""fastrnn._kernels.native: kernels calling kernels compiled on their own through
their addresses, and the layers' arrays that reach such calls."""

import json
import os
import subprocess
import sys

import numba
import numpy as np
import pytest
from numba.core.errors import TypingError

import fastrnn
from fastrnn import _threads
from fastrnn._kernels import engine
from fastrnn._kernels._jit import inlined
from fastrnn._kernels.native import (
    argument_types,
    call_compiled,
    compiled_address,
    launch_parallel,
    launch_serial,
    pack,
)


@numba.njit
def _scaled_rows(start, stop, scale, source, out):
    for row in range(start, stop):
        for col in range(source.shape[1]):
            out[row, col] = scale * source[row, col]


@numba.njit
def _refuses_negative(value, out):
    if value < 0:
        raise ValueError("negative value")
    out[0] = value


@numba.njit
def _caller(address, start, stop, scale, source, out):
    call_compiled(address, (start, stop, scale, source, out))


@numba.njit
def _raising_caller(address, value, out):
    call_compiled(address, (value, out))


def test_call_compiled_runs_the_kernel_at_the_address():
    source = np.arange(12.0).reshape(4, 3)
    out = np.zeros_like(source)
    arguments = (1, 3, 2.5, source, out)
    address = compiled_address(_scaled_rows, argument_types(arguments))
    _caller(address, *arguments)
    expected = np.zeros_like(source)
    expected[1:3] = 2.5 * source[1:3]
    np.testing.assert_array_equal(out, expected)


def test_an_error_in_the_called_kernel_is_raised_by_the_caller():
    out = np.zeros(1)
    address = compiled_address(_refuses_negative, argument_types((1.0, out)))
    _raising_caller(address, 4.0, out)
    assert out[0] == 4.0
    with pytest.raises(ValueError, match="negative value"):
        _raising_caller(address, -1.0, out)


@pytest.mark.parametrize("make", [
    pytest.param(lambda a: np.asfortranarray(a), id="fortran-order"),
    pytest.param(lambda a: a[:, ::2], id="strided"),
    pytest.param(lambda a: _read_only(a), id="read-only"),
])
def test_call_compiled_refuses_arrays_whose_type_python_cannot_predict(make):
    source = make(np.ones((4, 6)))
    out = np.zeros((4, 6))
    address = compiled_address(_scaled_rows, argument_types((0, 4, 1.0, np.ones((4, 6)), out)))
    with pytest.raises(TypingError, match="argument 3 must be a C-contiguous writable array"):
        _caller(address, 0, 4, 1.0, source, out)


def _read_only(array):
    array = array.copy()
    array.flags.writeable = False
    return array


def _read_only_fortran(array):
    return _read_only(np.asfortranarray(array))


@pytest.mark.parametrize("awkward", [_read_only, _read_only_fortran])
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("cell", ["lstm", "gru", "gru_reset_before", "rnn"])
def test_layers_take_read_only_and_non_contiguous_states_and_gradients(cell, threads, awkward):
    """h0, c0, d_out, d_hn and d_cn that are read-only (C- or Fortran-ordered)
    give what their writable C-ordered copies give, on the single- and the
    multi-threaded kernels: the layers copy what the kernels cannot take."""
    layer = fastrnn.layers.layer_for_cell(cell, 3, 5, dtype="float64", seed=1)
    rng = np.random.default_rng(2)
    x = rng.standard_normal((20, 4, 3))
    h0, d_hn = rng.standard_normal((2, 1, 4, 5))
    d_out = rng.standard_normal((20, 4, 5))
    c0, d_cn = (0.5 * h0, 2.0 * d_hn) if layer.has_cell_state else (None, None)

    def run(convert):
        def converted(array):
            return None if array is None else convert(array)

        with _threads.forced_plan(threads=threads, blocked=True):
            forward = layer.forward_states(x, converted(h0), converted(c0))
            backward = layer.backward_states(converted(d_out), converted(d_hn),
                                             converted(d_cn))
        return [array for array in forward + backward if array is not None]

    expected = run(np.ascontiguousarray)
    got = run(awkward)
    assert len(got) == len(expected) == (6 if layer.has_cell_state else 4)
    for have, want in zip(got, expected):
        np.testing.assert_array_equal(have, want)


@inlined
def _record_thread(chunk, n_chunks, out):
    out[chunk] = numba.get_thread_id()


@numba.njit
def _launch_recording(launch, address, n_chunks, out):
    launch(address, n_chunks, pack((out,)))


@pytest.mark.skipif(numba.config.NUMBA_NUM_THREADS < 2, reason="needs two numba threads")
def test_parallel_launch_runs_its_chunks_on_different_threads():
    """launch_parallel runs each chunk on a thread of its own, launch_serial all
    on the calling one (a parallel launcher compiled or loaded as the serial one
    would run every parallel kernel on one core)."""
    ids = np.full(2, -1, dtype=np.int64)
    address = engine.chunk_entry(_record_thread, numba.typeof((ids,)))
    previous = numba.get_num_threads()
    numba.set_num_threads(2)
    try:
        _launch_recording(launch_parallel, address, 2, ids)
        assert sorted(ids) == [0, 1]
        _launch_recording(launch_serial, address, 2, ids)
        assert list(ids) == [0, 0]
    finally:
        numba.set_num_threads(previous)


_PURE_PYTHON_SCRIPT = """
import json, sys
import numpy as np
import fastrnn
results = {}
for cell in ("rnn", "lstm", "gru", "gru_reset_before"):
    layer = fastrnn.layers.layer_for_cell(cell, 3, 4, num_layers=2, bidirectional=True,
                                          dtype="float64", seed=1)
    x = np.random.default_rng(2).standard_normal((5, 2, 3))
    out = layer(x, lengths=np.array([5, 3]))[0]
    layer.backward(np.cos(out))
    dx = layer.backward(np.cos(out))[0]  # the gradients accumulate over both
    results[cell] = {"out": out.tolist(), "dx": dx.tolist(),
                     **{name: grad.tolist() for name, grad in layer.grads.items()}}
json.dump(results, sys.stdout)
"""


def test_a_pure_python_run_computes_what_the_kernels_do(tmp_path):
    """Under NUMBA_DISABLE_JIT (the line-coverage run) the launcher, pack/unpack and
    matmul have pure-Python stand-ins: outputs and every gradient of each cell, two
    layers, both directions, ragged lengths, gradients accumulated over two calls, float64
    (float32's tanh differs by design), against this process's kernels."""
    script = tmp_path / "pure_python.py"
    script.write_text(_PURE_PYTHON_SCRIPT)
    env = dict(os.environ, NUMBA_DISABLE_JIT="1")
    run = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                         env=env, timeout=600)
    assert run.returncode == 0, run.stderr
    pure = json.loads(run.stdout)
    namespace = {}
    exec(_PURE_PYTHON_SCRIPT.replace("json.dump(results, sys.stdout)", ""), namespace)
    for cell, compiled in namespace["results"].items():
        assert pure[cell].keys() == compiled.keys()
        for name, values in compiled.items():
            np.testing.assert_allclose(pure[cell][name], values, rtol=1e-10, atol=1e-12,
                                       err_msg=f"{cell} {name}")
