"""Several Python threads and processes using fastrnn at once get correct results."""

import multiprocessing
import os
import subprocess
import sys
import threading

import numpy as np
import pytest

import fastrnn


def _layer_output(seed):
    layer = fastrnn.LSTM(4, 6, num_layers=2, bidirectional=True, dtype=np.float64, seed=seed)
    x = np.random.default_rng(seed).standard_normal((12, 5, 4))
    out, _ = layer(x, lengths=np.array([12, 3, 7, 1, 12]))
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
    queue.put(_layer_output(3))

if __name__ == "__main__":
    expected = _layer_output(3)  # the parent runs parallel kernels before forking
    context = multiprocessing.get_context({method!r})
    queue = context.Queue()
    process = context.Process(target=child, args=(queue,))
    process.start()
    out, dx, norm = queue.get(timeout=300)
    process.join(timeout=60)
    assert process.exitcode == 0, process.exitcode
    np.testing.assert_array_equal(out, expected[0])
    np.testing.assert_array_equal(dx, expected[1])
    assert norm == expected[2]
    print("same results in the child")
"""


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_processes_use_cached_kernels(method, tmp_path):
    # A fresh interpreter, so that libraries other tests imported (JAX warns at
    # every fork) do not take part.
    if method not in multiprocessing.get_all_start_methods():
        pytest.skip(f"start method {method!r} does not exist on this platform")
    tests = os.path.dirname(os.path.abspath(__file__))
    script = tmp_path / "parent.py"
    script.write_text(_PROCESS_SCRIPT.format(tests=tests, method=method))
    root = os.path.dirname(tests)
    env = dict(os.environ, PYTHONPATH=root + os.pathsep + os.environ.get("PYTHONPATH", ""))
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                            timeout=600, env=env)
    assert result.returncode == 0, result.stderr
    assert "same results in the child" in result.stdout


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
assert os.environ.get("OPENBLAS_THREAD_TIMEOUT") == {expected_env!r}
fastrnn.set_num_threads(2)
layer = fastrnn.LSTM(256, 256, dtype=np.float32, seed=0)
x = np.random.default_rng(0).standard_normal((10, 64, 256)).astype(np.float32)
for _ in range(2):
    out, _ = layer(x)
    layer.backward(np.ones_like(out))
usage = resource.getrusage(resource.RUSAGE_SELF)
before = usage.ru_utime + usage.ru_stime
time.sleep(0.3)
usage = resource.getrusage(resource.RUSAGE_SELF)
print(usage.ru_utime + usage.ru_stime - before)
"""


@pytest.mark.parametrize("user_timeout", [None, "28"])
def test_blas_threads_go_idle_after_a_call(user_timeout):
    """BLAS workers stop spinning soon after a call, so other libraries in the process
    get the cores back; a timeout the user set is left as it is."""
    if fastrnn._threads._max_threads() < 2:
        pytest.skip("needs two cores for a multi-threaded BLAS call")
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_THREAD_TIMEOUT"}
    if user_timeout is not None:
        env["OPENBLAS_THREAD_TIMEOUT"] = user_timeout
    tests = os.path.dirname(os.path.abspath(__file__))
    env["PYTHONPATH"] = os.path.dirname(tests) + os.pathsep + env.get("PYTHONPATH", "")
    script = _IDLE_CPU_SCRIPT.format(expected_env=user_timeout)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            timeout=600, env=env)
    assert result.returncode == 0, result.stderr
    idle_cpu_seconds = float(result.stdout.strip().splitlines()[-1])
    if user_timeout is None:
        assert idle_cpu_seconds < 0.03
    else:  # OpenBLAS's own default: a worker spins for about 0.1 s
        assert idle_cpu_seconds > 0.03
