"""Saying when fastrnn's kernels compile.

numba compiles each kernel the first time a process calls it with new argument
types and caches the result on disk (cache=True, see _kernels/_jit.py): with an
empty cache the first calls wait for the compiler (tens of seconds), later
processes load the compiled code in a fraction of a second.

numba broadcasts a "numba:compile" event (numba.core.event, a public API) each
time a dispatcher really compiles, and only then: a kernel found in the disk
cache, or already loaded in the process, sends none. A listener on it knows that
a compile is about to start exactly when one is, with no guess about the cache's
state, and costs one registration per watched block (microseconds). Events of
numba functions outside fastrnn are ignored.
"""

import contextlib

from numba.core import event

NOTICE = "fastrnn: compiling kernels (first run only)"
_PACKAGE = __name__.partition(".")[0] + "."


class _KernelCompiles(event.Listener):
    """Calls `on_compile(name)` as each of fastrnn's kernels starts compiling."""

    def __init__(self, on_compile):
        self._on_compile = on_compile

    def on_start(self, compile_event):
        function = compile_event.data["dispatcher"].py_func
        if function.__module__.startswith(_PACKAGE):
            self._on_compile(f"{function.__module__}.{function.__qualname__}")

    def on_end(self, compile_event):
        pass


@contextlib.contextmanager
def recording_compilations():
    """Yields a list that collects the name of each specialisation of fastrnn's
    kernels that numba compiles in the body (kernels called by kernels too)."""
    names = []
    with event.install_listener("numba:compile", _KernelCompiles(names.append)):
        yield names


@contextlib.contextmanager
def announce_compilation(stream):
    """Writes NOTICE to `stream` (one line, once) when numba starts compiling one
    of fastrnn's kernels in the body, and nothing when they all come from the
    cache. With `stream` None the body runs unwatched."""
    if stream is None:
        yield
        return
    announced = []

    def announce(_name):
        if not announced:
            announced.append(True)
            stream.write(NOTICE + "\n")
            stream.flush()

    with event.install_listener("numba:compile", _KernelCompiles(announce)):
        yield
