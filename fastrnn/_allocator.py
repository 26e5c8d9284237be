"""The process's malloc, which every call's temporaries come from.

glibc's malloc serves a block above its mmap threshold (128 KiB in a new process)
with fresh pages from the OS and gives freed memory at the top of its heap back past
its trim threshold, so a process that has only run fastrnn would fault its multi-MB
temporaries (gates, their gradients, caches) back in on every call. Freeing one
large block raises both thresholds to its size, up to 32 MiB (trim: twice that):
a process that has freed any large array runs in that state. `import fastrnn` puts
the process there with `warm` (an allocation it never touches: no memory is used),
unless FASTRNN_MALLOC_WARMUP=0; then up to 64 MiB of freed memory stays in the
process instead of going back to the OS at once. Other mallocs are unaffected.
"""

import os

import numpy as np

WARM_BYTES = 32 * 2**20 - 2**16
ENVIRONMENT_VARIABLE = "FASTRNN_MALLOC_WARMUP"


def warm():
    """Allocate and free (untouched) one block of WARM_BYTES: see above."""
    np.empty(WARM_BYTES, dtype=np.uint8)


def warm_on_import():
    """`warm`, unless the environment variable says FASTRNN_MALLOC_WARMUP=0."""
    value = os.environ.get(ENVIRONMENT_VARIABLE, "1").strip()
    if value not in ("0", "1", ""):
        raise ValueError(f"{ENVIRONMENT_VARIABLE} must be 0 or 1, got {value!r}")
    if value != "0":
        warm()
