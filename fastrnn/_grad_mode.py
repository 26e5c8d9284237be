"""Whether forward calls keep what backward needs: `no_grad()` turns that off
for inference, per thread, like torch.no_grad."""

import contextlib
import threading

_state = threading.local()


def is_grad_enabled():
    """False inside `no_grad()` on this thread."""
    return getattr(_state, "enabled", True)


class no_grad(contextlib.ContextDecorator):  # noqa: N801 (torch's spelling)
    """Context manager (or decorator) for inference: forward calls on this thread
    keep no activations for backward, so they write and allocate less; a backward
    call after such a forward raises. Nests; the previous mode comes back on exit.
    A class rather than a generator: entering costs a streaming call less."""

    def _recreate_cm(self):
        return type(self)()  # a decorated function may recurse: one instance per entry

    def __enter__(self):
        self._previous = is_grad_enabled()
        _state.enabled = False
        return self

    def __exit__(self, *exc_info):
        _state.enabled = self._previous
        return False
