"""Several Python threads and processes using fastrnn at once get correct results,
on the multi-threaded kernels, and the thread settings fastrnn makes while its
libraries load are in force then and restored afterwards (tested as a mechanism,
not by timing idle threads)."""

import multiprocessing
import os
import subprocess
import sys
import threading

import numpy as np
import pytest

import fastrnn
from fastrnn import _threads


def _layer_output(seed, size=4):
    """A float64 LSTM step; size 4 runs the single-threaded kernels, size 32 is
    large enough for the parallel ones."""
    layer = fastrnn.LSTM(size, size + 2, num_layers=2, bidirectional=True, dtype=np.float64,
                         seed=seed)
    x = np.random.default_rng(seed).standard_normal((3 * size, 5, size))
    out, _ = layer(x, lengths=np.array([3 * size, 3, 7, 1, 3 * size]))
    dx, _ = layer.backward(np.ones_like(out), max_norm=1.0)
    return out, dx, layer.grad_norm


@pytest.fixture
def two_thread_batch_split(monkeypatch):
    """fastrnn on 2 threads with the batch split, on any machine (tests/conftest.py
    lets numba start 3 threads even on one core)."""
    monkeypatch.setattr(_threads, "STRATEGY", "batch")
    before = fastrnn.get_num_threads()
    fastrnn.set_num_threads(2)
    yield
    fastrnn.set_num_threads(before)


def _run_concurrently(worker, n_threads):
    errors = []

    def guarded(k):
        try:
            worker(k)
        except Exception as error:  # reported below; a thread cannot fail the test itself
            errors.append(error)

    threads = [threading.Thread(target=guarded, args=(k,)) for k in range(n_threads)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert all(not thread.is_alive() for thread in threads)
    assert not errors, errors


def test_threads_with_their_own_layers_match_serial_results(two_thread_batch_split):
    with _threads.forced_plan(threads=1):
        serial = {seed: _layer_output(seed, 32) for seed in range(4)}
    expected = {seed: _layer_output(seed, 32) for seed in range(4)}
    results = {}

    def worker(seed):
        for _ in range(3):
            results[seed] = _layer_output(seed, 32)

    with _threads.observed_runs() as runs:
        _run_concurrently(worker, 4)
    assert runs and {run["threads"] for run in runs} == {2}  # each call split its batch
    for seed, (out, dx, norm) in expected.items():
        np.testing.assert_array_equal(results[seed][0], out)
        np.testing.assert_array_equal(results[seed][1], dx)
        assert results[seed][2] == norm
        # and the batch split agrees with the single-threaded kernels to rounding
        np.testing.assert_allclose(out, serial[seed][0], rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(dx, serial[seed][1], rtol=1e-12, atol=1e-14)
        assert norm == pytest.approx(serial[seed][2], rel=1e-12)


def test_threads_sharing_one_layer_for_inference(two_thread_batch_split):
    layer = fastrnn.GRU(16, 64, dtype=np.float32, seed=1)
    inputs = [np.random.default_rng(k).standard_normal((20, 8, 16)) for k in range(6)]
    with _threads.forced_plan(threads=1):
        serial = [layer(x)[0] for x in inputs]
    expected = [layer(x)[0] for x in inputs]
    results = [None] * len(inputs)

    def worker(k):
        for _ in range(5):
            results[k] = layer(inputs[k])[0]

    with _threads.observed_runs() as runs:
        _run_concurrently(worker, len(inputs))
    assert runs and {run["threads"] for run in runs} == {2}
    for got, want, single in zip(results, expected, serial):
        np.testing.assert_array_equal(got, want)
        np.testing.assert_allclose(got, single, rtol=1e-5, atol=1e-6)


def test_concurrent_calls_on_different_plans_restore_blas_threads(two_thread_batch_split,
                                                                 monkeypatch):
    """Calls that run BLAS on 2 threads (one sequence, nothing to split: the unit
    split is kept off) and calls that split the batch (BLAS on 1) overlap: each
    gives its result, and the caller's BLAS setting is back afterwards."""
    from fastrnn import _blas

    monkeypatch.setattr(_threads, "UNIT_SPLIT_WORK", 1 << 62)

    if not _blas.controllable:
        pytest.skip("this scipy build's BLAS threads cannot be controlled")
    blas_threads_before = _blas._get_threads()
    layer = fastrnn.LSTM(16, 512, dtype=np.float64, seed=3)
    rng = np.random.default_rng(3)
    inputs = [rng.standard_normal((16, 1, 16)), rng.standard_normal((16, 16, 16))]
    with fastrnn.no_grad():
        expected = [layer(x)[0] for x in inputs]
    results = {}

    def worker(k):
        for _ in range(4):
            with fastrnn.no_grad():
                results[k] = layer(inputs[k % 2])[0]

    with _threads.observed_runs() as runs:
        _run_concurrently(worker, 4)
    plans = {(run["threads"], run["blas_threads"]) for run in runs}
    assert plans == {(1, 2), (2, 1)}
    for k, got in results.items():
        np.testing.assert_allclose(got, expected[k % 2], rtol=1e-12, atol=1e-14)
    assert _blas._get_threads() == blas_threads_before


_WORKQUEUE_SCRIPT = """
import threading
import numpy as np
import fastrnn
fastrnn.set_num_threads(2)
layer = fastrnn.LSTM(16, 32, dtype=np.float64, seed=0)
inputs = [np.random.default_rng(k).standard_normal((60, 8, 16)) for k in range(4)]
expected = [layer(x)[0] for x in inputs]
results = [None] * len(inputs)

def worker(k):
    for _ in range(20):
        results[k] = layer(inputs[k])[0]

threads = [threading.Thread(target=worker, args=(k,)) for k in range(len(inputs))]
for thread in threads:
    thread.start()
for thread in threads:
    thread.join()
import numba
print("layer", numba.threading_layer())
for got, want in zip(results, expected):
    np.testing.assert_array_equal(got, want)
print("same results")
"""


def test_workqueue_layer_is_entered_by_one_python_thread_at_a_time():
    """numba's workqueue layer must not be entered from two Python threads at once
    (numba aborts the process): fastrnn serialises its parallel calls there."""
    tests = os.path.dirname(os.path.abspath(__file__))
    env = dict(os.environ, NUMBA_THREADING_LAYER="workqueue", FASTRNN_STRATEGY="batch",
               PYTHONPATH=os.path.dirname(tests) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    result = subprocess.run([sys.executable, "-c", _WORKQUEUE_SCRIPT], capture_output=True,
                            text=True, timeout=600, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "layer workqueue" in result.stdout and "same results" in result.stdout


_PROCESS_SCRIPT = """
import multiprocessing, sys
import numpy as np
sys.path.insert(0, {tests!r})
from test_concurrency import _layer_output

def child(queue):
    queue.put(_layer_output(3, {size}))

if __name__ == "__main__":
    import contextlib
    import fastrnn._threads
    # the parent runs fastrnn before forking; size 32 on two threads, whatever the
    # machine's plan would choose
    split = fastrnn._threads.forced_plan(threads=2) if {size} == 32 else contextlib.nullcontext()
    with split:
        expected = _layer_output(3, {size})
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


_LOAD_ENVIRONMENT_SCRIPT = """
import os, sys
import numpy as np

def mapped(fragment):
    with open("/proc/self/maps") as maps:
        return fragment in maps.read()

state = {{"before load": "never seen", "loaded": False}}

def at_import(event, args):
    # Every import until the library appears records the environment: the last
    # record is what was in force when the import that loaded it ran.
    if event == "import" and not state["loaded"]:
        state["loaded"] = mapped({library!r})
        if not state["loaded"]:
            state["before load"] = os.environ.get({name!r}, "unset")

sys.addaudithook(at_import)
import fastrnn
fastrnn.set_num_threads(2)
layer = fastrnn.LSTM(32, 32, dtype=np.float32, seed=0)
x = np.random.default_rng(0).standard_normal((10, 64, 32)).astype(np.float32)
out, _ = layer(x)
layer.backward(np.ones_like(out))
print("at load:", state["before load"])
print("loaded by an import:", mapped({library!r}) and state["before load"] != "never seen")
print("after:", os.environ.get({name!r}, "unset"))
"""


def _environment_at_library_load(library, name, variables):
    """(value of environment variable `name` when the import that loads `library`
    ran, whether an import after the interpreter's start loaded it, `name`
    afterwards), in
    a fresh interpreter that runs a multi-threaded training step, with
    `variables` set (None: unset)."""
    if not os.path.exists("/proc/self/maps"):
        pytest.skip("needs /proc/self/maps (Linux) to see when a library loads")
    env = dict(os.environ, FASTRNN_STRATEGY="batch")
    for variable, value in variables.items():
        env.pop(variable, None)
        if value is not None:
            env[variable] = value
    tests = os.path.dirname(os.path.abspath(__file__))
    env["PYTHONPATH"] = os.path.dirname(tests) + os.pathsep + env.get("PYTHONPATH", "")
    script = _LOAD_ENVIRONMENT_SCRIPT.format(library=library, name=name)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            timeout=600, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = dict(line.split(": ", 1) for line in result.stdout.splitlines() if ": " in line)
    return lines["at load"], lines["loaded by an import"] == "True", lines["after"]


@pytest.mark.parametrize("user_timeout", [None, "28"])
def test_openblas_loads_with_a_short_thread_timeout_and_the_environment_is_restored(
        user_timeout):
    """OpenBLAS reads OPENBLAS_THREAD_TIMEOUT once, when it loads: fastrnn sets 20
    (idle workers sleep within about 0.3 ms of a call instead of spinning for
    0.1 s) for that moment only, and leaves a value the user set as it is."""
    at_load, loaded, after = _environment_at_library_load(
        "scipy.libs/libscipy_openblas", "OPENBLAS_THREAD_TIMEOUT",
        {"OPENBLAS_THREAD_TIMEOUT": user_timeout})
    assert loaded
    assert at_load == (user_timeout or "20")
    assert after == (user_timeout or "unset")


@pytest.mark.parametrize("user_variables", [{}, {"OMP_WAIT_POLICY": "ACTIVE"},
                                            {"GOMP_SPINCOUNT": "300"}])
def test_openmp_starts_with_a_short_spin_and_the_environment_is_restored(user_variables):
    """GNU OpenMP reads GOMP_SPINCOUNT when it loads (numba's OpenMP layer starts
    it): fastrnn sets 10000 (idle workers sleep within about 0.4 ms instead of
    spinning for 8 ms) for that moment only, unless the user chose a spin count
    or a wait policy."""
    variables = {"GOMP_SPINCOUNT": None, "OMP_WAIT_POLICY": None, **user_variables}
    at_load, loaded, after = _environment_at_library_load(
        "libgomp", "GOMP_SPINCOUNT", variables)
    if not loaded:
        pytest.skip("numba did not start its OpenMP layer here (TBB installed?)")
    assert at_load == user_variables.get("GOMP_SPINCOUNT", "unset" if user_variables else
                                         "10000")
    assert after == user_variables.get("GOMP_SPINCOUNT", "unset")
