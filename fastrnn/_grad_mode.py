"""Whether forward calls keep what backward needs: `no_grad()` turns that off
for inference, per thread, like torch.no_grad."""

import contextlib
import threading


class _ThreadState(threading.local):
    """Each thread's mode and the modes to restore; class defaults, so that a
    thread that never entered no_grad reads them without a failed lookup."""
    enabled = True
    stack = None


_state = _ThreadState()


def is_grad_enabled():
    """False inside `no_grad()` on this thread."""
    return _state.enabled


class no_grad(contextlib.ContextDecorator):  # noqa: N801 (torch's spelling)
    """Context manager (or decorator) for inference: forward calls on this thread
    keep no activations for backward, so they write and allocate less; a backward
    call after such a forward raises. Nests; the previous mode comes back on exit.

    The modes to restore live on a per-thread stack, so one instance may be
    entered again, nested or from several threads. As a decorator it covers the
    function's call: a generator function's body runs later, outside it.
    A class rather than a generator: entering costs a streaming call less."""

    def __enter__(self):
        stack = _state.stack
        if stack is None:
            stack = _state.stack = []
        stack.append(is_grad_enabled())
        _state.enabled = False
        return self

    def __exit__(self, *exc_info):
        _state.enabled = _state.stack.pop()
        return False
