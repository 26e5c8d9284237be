"""Control the threads of the BLAS that numba's np.dot calls, for one call at a time.

numba's np.dot calls scipy's bundled OpenBLAS. When fastrnn splits work across its
own threads (each calling BLAS on its own slice), a multi-threaded BLAS inside
them would oversubscribe the cores (OpenBLAS even warns it may hang), so BLAS
gets one thread; when the kernels run on one thread, BLAS gets fastrnn's thread
count. `limited(n)` sets it for the duration of a call and restores the caller's
setting afterwards. Where the library cannot be found (another scipy build),
`controllable` is False and BLAS keeps its own threading.
"""

import contextlib
import ctypes
import glob
import os
import threading

# OpenBLAS worker threads spin for 2**28 clock cycles (about 0.1 s) after each call
# before they sleep: in a process that also runs torch, JAX or the user's own
# threads, that takes cores from them. 2**20 cycles (about 0.3 ms) still covers the
# gaps between one call's per-step products. The setting is read once, when the
# library loads, so it is applied only if the library is not loaded yet and the user
# has not chosen a value, and the environment is left as it was.
_TIMEOUT_VARIABLE = "OPENBLAS_THREAD_TIMEOUT"
_set_timeout = _TIMEOUT_VARIABLE not in os.environ
if _set_timeout:
    os.environ[_TIMEOUT_VARIABLE] = "20"
try:
    import scipy.linalg.cython_blas  # noqa: F401  (loads the library numba's np.dot uses)
finally:
    if _set_timeout:
        del os.environ[_TIMEOUT_VARIABLE]


def _find_openblas():
    import scipy

    libs = os.path.join(os.path.dirname(os.path.dirname(scipy.__file__)), "scipy.libs")
    for path in sorted(glob.glob(os.path.join(libs, "libscipy_openblas*.so*"))):
        try:
            library = ctypes.CDLL(path)
            get, set_ = library.scipy_openblas_get_num_threads, \
                library.scipy_openblas_set_num_threads
        except (OSError, AttributeError):
            continue
        get.restype, get.argtypes = ctypes.c_int, []
        set_.restype, set_.argtypes = None, [ctypes.c_int]
        return get, set_, _core_name(library)
    return None, None, ""


def _core_name(library):
    try:
        name = library.scipy_openblas_get_corename
    except AttributeError:
        return ""
    name.restype, name.argtypes = ctypes.c_char_p, []
    return (name() or b"").decode("ascii", "replace")


_get_threads, _set_threads, core_name = _find_openblas()
controllable = _get_threads is not None

# OpenBLAS's AVX-512 cores run a GEMM with M * N * K <= 1e6 (column-major terms,
# neither operand transposed twice) through "small-matrix" kernels that read the
# operands in place instead of packing them first. A recurrent step's product,
# split into column blocks under that size, then skips the repacking of the whole
# weight that one packed GEMM does every step. Other cores (Haswell, Zen without
# AVX-512, ARM) would pack every block: no blocking there.
SMALL_PRODUCT = 1_000_000
small_matrix_kernels = core_name.lower() in ("skylakex", "cooperlake", "sapphirerapids")


# Calls from several Python threads overlap: the first to enter saves the caller's
# setting and the last to leave restores it.
_guard = threading.Lock()
_active_calls = 0
_saved_threads = None


@contextlib.contextmanager
def limited(threads):
    """BLAS runs on `threads` threads for the duration of the body."""
    global _active_calls, _saved_threads
    if not controllable:
        yield
        return
    with _guard:
        if _active_calls == 0:
            _saved_threads = _get_threads()
            if _saved_threads != threads:
                _set_threads(threads)
        _active_calls += 1
    try:
        yield
    finally:
        with _guard:
            _active_calls -= 1
            if _active_calls == 0 and _get_threads() != _saved_threads:
                _set_threads(_saved_threads)
