"""Several Python threads and processes using fastrnn at once get correct results."""

import multiprocessing
import os
import subprocess
import sys
import threading

import numpy as np
import pytest

import fastrnn


def _layer_output(seed, size=4):
    """A float64 LSTM step; size 4 runs the single-threaded kernels, size 32 is
    large enough for the parallel ones."""
    layer = fastrnn.LSTM(size, size + 2, num_layers=2, bidirectional=True, dtype=np.float64,
                         seed=seed)
    x = np.random.default_rng(seed).standard_normal((3 * size, 5, size))
    out, _ = layer(x, lengths=np.array([3 * size, 3, 7, 1, 3 * size]))
    dx, _ = layer.backward(np.ones_like(out), max_norm=1.0)
    return out, dx, layer.grad_norm


def test_threads_with_their_own_layers_match_serial_results():
    expected = {seed: _layer_output(seed) for seed in range(6)}
    results, errors = {}, []

    def worker(seed):
        try:
            for _ in range(5):
                results[seed] = _layer_output(seed)
        except Exception as error:  # reported below; a thread cannot fail the test itself
            errors.append(error)

    threads = [threading.Thread(target=worker, args=(seed,)) for seed in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors
    assert all(not thread.is_alive() for thread in threads)
    for seed, (out, dx, norm) in expected.items():
        np.testing.assert_array_equal(results[seed][0], out)
        np.testing.assert_array_equal(results[seed][1], dx)
        assert results[seed][2] == norm


def test_threads_sharing_one_layer_for_inference():
    layer = fastrnn.GRU(3, 8, dtype=np.float32, seed=1)
    inputs = [np.random.default_rng(k).standard_normal((20, 4, 3)) for k in range(8)]
    expected = [layer(x)[0] for x in inputs]
    results = [None] * len(inputs)

    def worker(k):
        for _ in range(10):
            results[k] = layer(inputs[k])[0]

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(len(inputs))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    for got, want in zip(results, expected):
        np.testing.assert_array_equal(got, want)


_PROCESS_SCRIPT = """
import multiprocessing, sys
import numpy as np
sys.path.insert(0, {tests!r})
from test_concurrency import _layer_output

def child(queue):
    queue.put(_layer_output(3, {size}))

if __name__ == "__main__":
    expected = _layer_output(3, {size})  # the parent runs fastrnn before forking
    import fastrnn._threads
    print("parent started a threading layer:", fastrnn._threads._layer_name is not None)
    context = multiprocessing.get_context({method!r})
    queue = context.Queue()
    process = context.Process(target=child, args=(queue,))
    process.start()
    out, dx, norm = queue.get(timeout=300)
    process.join(timeout=60)
    assert process.exitcode == 0, process.exitcode
    # A forked child of an OpenMP parent runs the single-threaded kernels, which
    # sum in another order than the batch split: equal to rounding.
    np.testing.assert_allclose(out, expected[0], rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(dx, expected[1], rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(norm, expected[2], rtol=1e-12)
    print("same results in the child")
"""


@pytest.mark.parametrize("size", [4, 32])
@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_processes_use_cached_kernels(method, size, tmp_path):
    """Size 32 starts the threading layer in the parent first: a forked child of an
    OpenMP parent must still work (it runs the single-threaded kernels)."""
    # A fresh interpreter, so that libraries other tests imported (JAX warns at
    # every fork) do not take part.
    if method not in multiprocessing.get_all_start_methods():
        pytest.skip(f"start method {method!r} does not exist on this platform")
    tests = os.path.dirname(os.path.abspath(__file__))
    script = tmp_path / "parent.py"
    script.write_text(_PROCESS_SCRIPT.format(tests=tests, method=method, size=size))
    root = os.path.dirname(tests)
    env = dict(os.environ, PYTHONPATH=root + os.pathsep + os.environ.get("PYTHONPATH", ""))
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                            timeout=600, env=env)
    assert result.returncode == 0, result.stderr
    assert "same results in the child" in result.stdout
    assert f"parent started a threading layer: {size == 32}" in result.stdout


def test_blas_thread_setting_is_restored():
    from fastrnn import _blas

    if not _blas.controllable:
        pytest.skip("this scipy build's BLAS threads cannot be controlled")
    before = _blas._get_threads()
    _layer_output(0)
    assert _blas._get_threads() == before


_IDLE_CPU_SCRIPT = """
import os, resource, time
import numpy as np
import fastrnn
fastrnn.set_num_threads(2)
layer = fastrnn.LSTM({size}, {size}, dtype=np.float32, seed=0)
x = np.random.default_rng(0).standard_normal((10, 64, {size})).astype(np.float32)
for _ in range(3):
    out, _ = layer(x)
    layer.backward(np.ones_like(out))
for name in {names!r}:  # fastrnn restores the variables it sets while loading
    assert os.environ.get(name) == {expected!r}[name], name
print(fastrnn._threads._layer_name)
usage = resource.getrusage(resource.RUSAGE_SELF)
before = usage.ru_utime + usage.ru_stime
time.sleep(0.3)
usage = resource.getrusage(resource.RUSAGE_SELF)
print(usage.ru_utime + usage.ru_stime - before)
"""


def _idle_cpu_after_calls(strategy, size, variables):
    """(threading layer, CPU seconds the process burns in 0.3 s of sleep after a few
    training steps) in a fresh interpreter with the given environment variables
    (None: unset)."""
    if fastrnn._threads._max_threads() < 2:
        pytest.skip("needs two cores for multi-threaded calls")
    env = dict(os.environ, FASTRNN_STRATEGY=strategy)
    for name, value in variables.items():
        env.pop(name, None)
        if value is not None:
            env[name] = value
    tests = os.path.dirname(os.path.abspath(__file__))
    env["PYTHONPATH"] = os.path.dirname(tests) + os.pathsep + env.get("PYTHONPATH", "")
    script = _IDLE_CPU_SCRIPT.format(size=size, names=list(variables), expected=variables)
    result = subprocess.run([sys.executable, "-c", script],
                            capture_output=True, text=True, timeout=600, env=env)
    assert result.returncode == 0, result.stderr
    layer, idle = result.stdout.split()[-2:]
    return layer, float(idle)


@pytest.mark.parametrize("user_timeout", [None, "28"])
def test_blas_threads_go_idle_after_a_call(user_timeout):
    """BLAS workers stop spinning soon after a call, so other libraries in the process
    get the cores back; a timeout the user set is left as it is."""
    _, idle = _idle_cpu_after_calls("blas", 256, {"OPENBLAS_THREAD_TIMEOUT": user_timeout})
    if user_timeout is None:
        assert idle < 0.03
    else:  # OpenBLAS's own default: a worker spins for about 0.1 s
        assert idle > 0.03


@pytest.mark.parametrize("user_policy", [None, "ACTIVE"])
def test_openmp_threads_go_idle_after_a_call(user_policy):
    """numba's OpenMP workers sleep soon after a call (GNU OpenMP's default spin kept a
    core busy for about 8 ms); a wait policy the user set is left as it is."""
    layer, idle = _idle_cpu_after_calls(
        "batch", 64, {"GOMP_SPINCOUNT": None, "OMP_WAIT_POLICY": user_policy})
    if layer != "omp":
        pytest.skip(f"numba runs the {layer} threading layer here, not OpenMP")
    if user_policy is None:
        assert idle < 0.03
    else:  # an ACTIVE worker spins for much longer than the 0.3 s measured
        assert idle > 0.1
