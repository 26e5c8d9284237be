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


# Below this many multiply-adds per call (about 0.2 ms of work) a parallel
# region's launch costs more than it saves: such calls run the serial kernels and
# touch no thread settings at all (streaming stays cheap).
SERIAL_WORK = 1 << 21


@contextlib.contextmanager
def kernel_threads(work=None):
    """Run the body with numba's thread count set to fastrnn's and BLAS single-threaded.

    Yields how many threads the kernels may split work across: fastrnn's count, or
    1 where BLAS threading cannot be controlled (BLAS then threads by itself) or
    the call's `work` (multiply-adds) is too small to be worth splitting.
    """
    if work is not None and work < SERIAL_WORK:
        yield 1
        return
    threads = _num_threads if _blas.controllable else 1
    with _serialised(), _blas.single_threaded():
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
