"""Input checks shared by the public API. Every message names the argument, what was
expected and what came, so bad input never reaches a kernel."""

import functools
import numbers

import numpy as np

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def as_dtype(dtype, name="dtype"):
    """The float dtype of a layer or model: float32 or float64."""
    try:
        resolved = np.dtype(dtype)
    except TypeError:
        raise TypeError(f"{name} must be float32 or float64, got {dtype!r}") from None
    if resolved not in FLOAT_DTYPES:
        raise TypeError(f"{name} must be float32 or float64, got {resolved}")
    return resolved


def positive_int(value, name, minimum=1):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer >= {minimum}, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value}")
    return int(value)


def non_negative_float(value, name, allow_none=True):
    """A finite float >= 0 (clipping thresholds); None passes through when allowed."""
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number >= 0, got {value!r}")
    value = float(value)
    if not (value >= 0.0 and np.isfinite(value)):
        raise ValueError(f"{name} must be a finite number >= 0, got {value}")
    return value


def float_array(value, name, dtype):
    """Cast `value` to a C-contiguous array of `dtype`.

    Rule: real numbers (bool excluded: integers, float16/32/64) are cast to the
    layer's dtype; complex, bool, strings and objects are refused. Views,
    Fortran-ordered and read-only arrays are accepted (copied when needed).
    """
    if (type(value) is np.ndarray and value.dtype == dtype and value.flags.c_contiguous
            and value.flags.writeable):
        return value  # the common case, kept cheap for one-step (streaming) calls
    array = np.asarray(value) if not isinstance(value, np.ndarray) else value
    kind = array.dtype.kind
    if kind not in "iuf":
        raise TypeError(f"{name} must hold real numbers (float or int), got dtype {array.dtype}")
    # Writable and C-contiguous: a read-only array would make numba compile (and
    # cache) a separate specialisation of every kernel.
    return np.require(array, dtype=dtype, requirements=["C", "W"])


@functools.lru_cache(maxsize=64)
def _full_lengths(batch, n_steps):
    return np.full(batch, n_steps, dtype=np.int64)


def seed_sequence(seed, name="seed"):
    """A numpy SeedSequence from None, an int, a sequence of ints or a SeedSequence."""
    if isinstance(seed, np.random.SeedSequence):
        return seed
    if isinstance(seed, np.random.Generator):
        raise TypeError(f"{name} must be an int, None or a SeedSequence, got a Generator")
    try:
        return np.random.SeedSequence(seed)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be an int >= 0, None or a SeedSequence, "
                        f"got {seed!r}") from None


def shape_error(name, expected, got):
    return ValueError(f"{name} must have shape {expected}, got {tuple(got)}")


def lengths_array(lengths, batch, n_steps, name="lengths"):
    """Sequence lengths as int64 (B,), each in [1, T]; None means all are T.

    The array for None is shared between calls: callers only read it."""
    if lengths is None:
        return _full_lengths(batch, n_steps)
    array = np.asarray(lengths)
    if array.dtype.kind not in "iu":
        raise TypeError(f"{name} must be an integer array, got dtype {array.dtype}")
    if array.shape != (batch,):
        raise shape_error(name, f"({batch},) (one length per sequence)", array.shape)
    if batch and (array.min() < 1 or array.max() > n_steps):
        raise ValueError(f"{name} must lie in [1, {n_steps}] (the sequence length T), "
                         f"got values from {array.min()} to {array.max()}")
    return np.require(array, dtype=np.int64, requirements=["C", "W"])
