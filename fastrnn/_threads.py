"""Threads used by fastrnn's parallel kernels.

numba's thread count is a per-thread setting, so every public call applies the
fastrnn setting for its own duration (and restores the caller's in `finally`):
a layer used from a worker thread uses the same count as from the main thread.

Threading layer: unless NUMBA_THREADING_LAYER is set, fastrnn asks numba for TBB
when the `tbb` package is installed (thread- and fork-safe), else for workqueue
(fork-safe, sleeps rather than spins, so it degrades gracefully on a busy
machine) ahead of GNU OpenMP (which aborts a forked child that uses it).
workqueue must not be entered from two Python threads at once, so kernel calls
are then serialised by a process-wide lock: several Python threads may share
fastrnn safely, each call running on all of fastrnn's cores in turn.
"""

import contextlib
import os
import threading

import numba

from . import _blas

if not os.environ.get("NUMBA_THREADING_LAYER"):
    numba.config.THREADING_LAYER_PRIORITY = ["tbb", "workqueue", "omp"]

_THREAD_SAFE_LAYERS = ("tbb", "omp")
_kernel_lock = threading.RLock()

_ENV_VAR = "FASTRNN_NUM_THREADS"


def _max_threads():
    return numba.config.NUMBA_NUM_THREADS


def _parse_env():
    raw = os.environ.get(_ENV_VAR)
    if raw is None or raw.strip() == "":
        return _max_threads()
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"{_ENV_VAR} must be a positive integer, got {raw!r}") from None
    return _check(value, _ENV_VAR)


def _check(n, name):
    if isinstance(n, bool) or not isinstance(n, (int,)) and not hasattr(n, "__index__"):
        raise TypeError(f"{name} must be an integer, got {type(n).__name__}")
    n = int(n)
    if not 1 <= n <= _max_threads():
        raise ValueError(f"{name} must be between 1 and {_max_threads()} "
                         f"(the cores this process may use), got {n}")
    return n


_num_threads = _parse_env()


def set_num_threads(n):
    """Set how many threads fastrnn's kernels use (1 .. all cores the process may use)."""
    global _num_threads
    _num_threads = _check(n, "n")


def get_num_threads():
    """The number of threads fastrnn's kernels use."""
    return _num_threads


# Below this many multiply-adds per call (about 0.2 ms of work) a call runs the
# single-threaded kernels and touches no thread settings at all (streaming stays
# cheap; BLAS does not split so small products anyway).
SERIAL_WORK = 1 << 21

# Below this many (a few ms of work), or with a per-step recurrent product below
# STEP_SPLIT_WORK, a call also keeps BLAS on one thread: its products gain little
# from a split, and each split product waits for a second thread, which stalls
# whenever another program's threads (a peer framework spinning in the same
# process, say) hold the other cores. Measured side by side with torch and JAX on
# 2 cores: 1.3-2x faster at the benchmark's tiny, small and Elman mid shapes.
SINGLE_THREAD_WORK = 1 << 24
STEP_SPLIT_WORK = 1 << 20

# Above it, two strategies: "blas" runs the single-threaded kernels with BLAS
# threaded across fastrnn's threads; "batch" splits the batch across numba
# threads, each calling single-threaded BLAS. Measured on the 2-core development
# machine, "blas" was faster at every benchmark size (e.g. LSTM 35x64x256x256
# training step 61 ms against 98 ms), so it is the default; FASTRNN_STRATEGY=batch
# selects the other.
STRATEGY = os.environ.get("FASTRNN_STRATEGY", "blas")
if STRATEGY not in ("blas", "batch"):
    raise ValueError(f"FASTRNN_STRATEGY must be 'blas' or 'batch', got {STRATEGY!r}")


_UNTOUCHED = contextlib.nullcontext(1)


def kernel_threads(work=None, step_work=None):
    """Apply fastrnn's thread settings for the body (see STRATEGY).

    `work` is the call's multiply-adds, `step_work` those of one step's recurrent
    product. Yields how many threads the kernels split the batch across: fastrnn's
    count under the "batch" strategy, else 1 (the single-threaded kernels, with
    BLAS threaded, or on one thread for a call too small to be worth splitting).
    """
    if work is not None and work < SERIAL_WORK:
        return _UNTOUCHED  # a plain object: streaming calls skip the generator's cost
    return _applied_threads(work, step_work)


@contextlib.contextmanager
def _applied_threads(work, step_work):
    if (work is not None and work < SINGLE_THREAD_WORK
            or step_work is not None and step_work < STEP_SPLIT_WORK):
        with _blas.limited(1):
            yield 1
        return
    if STRATEGY == "blas" or not _blas.controllable:
        with _blas.limited(_num_threads):
            yield 1
        return
    threads = _num_threads
    with _serialised(), _blas.limited(1):
        previous = numba.get_num_threads()
        if previous == threads:
            yield threads
            return
        numba.set_num_threads(threads)
        try:
            yield threads
        finally:
            numba.set_num_threads(previous)


def _layer_is_thread_safe():
    try:
        return numba.threading_layer() in _THREAD_SAFE_LAYERS
    except ValueError:  # no parallel kernel has run yet: the layer is not chosen
        return False


@contextlib.contextmanager
def _serialised():
    if _layer_is_thread_safe():
        yield
        return
    with _kernel_lock:
        yield
