"""Threads used by fastrnn's parallel kernels.

numba's thread count is a per-thread setting, so every public call applies the
fastrnn setting for its own duration (and restores the caller's in `finally`):
a layer used from a worker thread uses the same count as from the main thread.

Threading layer: unless NUMBA_THREADING_LAYER is set, fastrnn asks numba for TBB
when the `tbb` package is installed (thread- and fork-safe), else for OpenMP,
else workqueue. A parallel region costs 1.5-3 us to start under OpenMP and about
130 us under workqueue (measured on the 2-core development machine), which is
more than a small call's whole time loop, so under workqueue fastrnn keeps to
threaded BLAS (the "blas" strategy below).

GNU OpenMP aborts a forked child that starts a parallel region once the parent
has started its threads, so such a child runs fastrnn's single-threaded kernels
(same results, one core). Its idle threads spin for GOMP_SPINCOUNT iterations
before they sleep; the default kept a core busy for about 8 ms after every call,
which slows any other threaded code in the process, so fastrnn starts the layer
with 10000 (about 0.4 ms, enough to bridge the gaps between one call's parallel
regions), unless the user set GOMP_SPINCOUNT or OMP_WAIT_POLICY; the
environment is restored afterwards.

workqueue must not be entered from two Python threads at once, so kernel calls
are then serialised by a process-wide lock: several Python threads may share
fastrnn safely, each call running on all of fastrnn's cores in turn.
"""

import contextlib
import os
import threading
from typing import NamedTuple

import numba

from . import _blas
from ._validate import int_from_text, int_in_range

if not os.environ.get("NUMBA_THREADING_LAYER"):
    numba.config.THREADING_LAYER_PRIORITY = ["tbb", "omp", "workqueue"]

_THREAD_SAFE_LAYERS = ("tbb", "omp")
_CHEAP_LAUNCH_LAYERS = ("tbb", "omp")
_kernel_lock = threading.RLock()
_SPIN_VARIABLE = "GOMP_SPINCOUNT"
_SPIN_COUNT = "10000"
_layer_name = None
_forked_after_openmp = False


def _layer():
    """The threading layer, started on first use (see the module docstring)."""
    global _layer_name
    if _layer_name is None:
        set_spin = _SPIN_VARIABLE not in os.environ and "OMP_WAIT_POLICY" not in os.environ
        if set_spin:
            os.environ[_SPIN_VARIABLE] = _SPIN_COUNT
        try:
            numba.get_num_threads()  # starts the layer's threads
        finally:
            if set_spin:
                del os.environ[_SPIN_VARIABLE]
        _layer_name = numba.threading_layer()
    return _layer_name


def _after_fork_in_child():
    global _forked_after_openmp
    if _layer_name == "omp":
        _forked_after_openmp = True


os.register_at_fork(after_in_child=_after_fork_in_child)

_ENV_VAR = "FASTRNN_NUM_THREADS"


def max_threads():
    """The most threads any call may use (NUMBA_NUM_THREADS)."""
    return numba.config.NUMBA_NUM_THREADS


def _parse_env():
    raw = os.environ.get(_ENV_VAR)
    if raw is None or raw.strip() == "":
        return max_threads()
    return _thread_count(int_from_text(raw, _ENV_VAR), _ENV_VAR)


def _thread_count(n, name):
    return int_in_range(n, name, 1, max_threads(), " (the cores this process may use)")


_num_threads = _parse_env()


def set_num_threads(n):
    """Set how many threads fastrnn's kernels use (1 .. all cores the process may use)."""
    global _num_threads
    _num_threads = _thread_count(n, "n")


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

# Above it, three strategies. "batch" splits the batch across numba threads, each
# running its rows' whole time loop with single-threaded BLAS: no thread waits for
# another inside the time loop. "blas" runs the single-threaded kernels with BLAS
# threaded across fastrnn's threads, so every per-step product is split and
# joined. "auto" (the default) picks "batch" where BLAS has small-matrix kernels
# (_blas.small_matrix_kernels: the per-step products then run in blocks at near
# peak on each thread; measured on the 2-core development machine, e.g. LSTM
# 50x32x64x128 forward per-step product 36 -> 23 us), else "blas" (without them
# a single-threaded per-step product ran 1.6x slower than a split one).
# FASTRNN_STRATEGY=blas or =batch forces one.
STRATEGY = os.environ.get("FASTRNN_STRATEGY", "auto")
# The forward pass of a single sequence (B = 1) with at least this many multiply-adds
# in its per-step product (H x G*H) splits its hidden units across the threads
# where the "batch" strategy would split a batch: each thread then reads its share
# of W_hh from its own cache every step, and the threads hand h_t over each step.
UNIT_SPLIT_WORK = 1 << 17
if STRATEGY not in ("auto", "blas", "batch"):
    raise ValueError(f"FASTRNN_STRATEGY must be 'auto', 'blas' or 'batch', got {STRATEGY!r}")


class Plan(NamedTuple):
    """How a call's kernels run: `threads` batch slices (1: the single-threaded
    kernels), whether the per-step products may be split into small-matrix
    blocks (`blocked`), the threads BLAS runs on (`blas_threads`; 1 whenever
    the batch is split), and whether the forward pass of a single sequence
    splits its hidden units across the `threads` instead (`split_units`)."""
    threads: int
    blocked: bool
    blas_threads: int = 1
    split_units: bool = False


_UNTOUCHED = contextlib.nullcontext(Plan(1, _blas.small_matrix_kernels))
_forced_plan = None
_forcing_lock = threading.Lock()


def kernel_threads(work=None, step_work=None, batch=None, forward=False):
    """Apply fastrnn's thread settings for the body (see STRATEGY); yields a Plan.

    `work` is the call's multiply-adds, `step_work` those of one step's recurrent
    product, `batch` the rows the batch strategy may split; `forward` (the
    body runs forward passes) lets a single sequence split its hidden units
    (see UNIT_SPLIT_WORK).
    """
    if _forced_plan is not None:
        return _applied(_forced_for(batch))
    if work is not None and work < SERIAL_WORK:
        return _UNTOUCHED  # a plain object: streaming calls skip the generator's cost
    return _applied(_chosen_plan(work, step_work, batch, forward))


@contextlib.contextmanager
def forced_plan(threads=1, blocked=False, blas_threads=1, split_units=False):
    """Every kernel call in the body runs this plan, whatever its size and the
    strategy: `threads` batch slices (at most the batch's rows; 1 in a forked
    child of an OpenMP parent), per-step products in blocks or not, BLAS on
    `blas_threads` threads when the batch is not split, and with `split_units`
    the forward pass of a single sequence split by hidden units across `threads`.
    For tests, which must reach every path the kernels can take on any machine.
    Not nestable."""
    global _forced_plan
    threads = int_in_range(threads, "threads", 1, max_threads(), " (NUMBA_NUM_THREADS)")
    blas_threads = int_in_range(blas_threads, "blas_threads", 1, max_threads(),
                                " (NUMBA_NUM_THREADS)")
    if threads > 1 and blas_threads != 1:
        raise ValueError("blas_threads must be 1 when the batch is split (threads > 1)")
    with _forcing_lock:
        if _forced_plan is not None:
            raise RuntimeError("forced_plan is already in force")
        _forced_plan = Plan(threads, bool(blocked), blas_threads, bool(split_units))
    try:
        yield _forced_plan
    finally:
        _forced_plan = None


def _forced_for(batch):
    threads, blocked, blas_threads, split_units = _forced_plan
    if batch is not None and not (split_units and batch == 1):
        threads = min(threads, batch)
    if _forked_after_openmp:
        threads = 1
    return Plan(threads, blocked, blas_threads if threads == 1 else 1,
                split_units and threads > 1)


def _batch_split(batch):
    threads = _num_threads if batch is None else min(_num_threads, batch)
    if threads < 2 or not _blas.controllable or _forked_after_openmp:
        return 1
    if STRATEGY == "batch":
        return threads
    if STRATEGY == "auto" and _blas.small_matrix_kernels and _layer() in _CHEAP_LAUNCH_LAYERS:
        return threads
    return 1


def _chosen_plan(work, step_work, batch, forward):
    if forward and batch == 1 and step_work is not None and step_work >= UNIT_SPLIT_WORK:
        threads = _batch_split(None)
        if threads > 1:
            return Plan(threads, _blas.small_matrix_kernels, 1, True)
    threads = _batch_split(batch)
    if threads > 1:
        return Plan(threads, _blas.small_matrix_kernels)
    small = (work is not None and work < SINGLE_THREAD_WORK
             or step_work is not None and step_work < STEP_SPLIT_WORK)
    blas_threads = 1 if small else _num_threads
    return Plan(1, blas_threads == 1 and _blas.small_matrix_kernels, blas_threads)


@contextlib.contextmanager
def _applied(plan):
    if plan.threads == 1:
        with _blas.limited(plan.blas_threads):
            yield plan
        return
    with _serialised(), _blas.limited(1):
        previous = numba.get_num_threads()
        if previous == plan.threads:
            yield plan
            return
        numba.set_num_threads(plan.threads)
        try:
            yield plan
        finally:
            numba.set_num_threads(previous)


# Observers of the plans calls run (tests assert which path a call took).
_observers = []


@contextlib.contextmanager
def observed_runs():
    """Collects a dict for each direction's kernel call made in the body (from
    any thread): see _cells for its keys."""
    runs = []
    _observers.append(runs)
    try:
        yield runs
    finally:
        _observers.remove(runs)


def observing():
    return bool(_observers)


def report_run(record):
    for runs in _observers:
        runs.append(record)


@contextlib.contextmanager
def _serialised():
    if _layer() in _THREAD_SAFE_LAYERS:
        yield
        return
    with _kernel_lock:
        yield
