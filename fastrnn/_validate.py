"""Input checks shared by the public API. Every message names the argument, what was
expected and what came, so bad input never reaches a kernel.

A wrong kind of value (a string for a number, a float array for ids) is a TypeError;
a value of the right kind outside its range or of the wrong shape is a ValueError.
"""

import functools
import math
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


def absent(value, name, reason):
    """Refuses a value where none may be given; `reason` ends the sentence "{name}
    must be None ...", e.g. "for unbatched input"."""
    if value is not None:
        raise ValueError(f"{name} must be None {reason}")


def pair(value, name, what):
    """The two items of a tuple, list or 1-D array (an .npz file stores a tuple as
    one); `what` names them, e.g. "(beta1, beta2)"."""
    try:
        items = tuple(value.ravel().tolist()) if isinstance(value, np.ndarray) else tuple(value)
    except TypeError:
        raise TypeError(f"{name} must be a pair {what}, got {value!r}") from None
    if len(items) != 2:
        raise ValueError(f"{name} must be a pair {what}, got {len(items)} values")
    return items


def one_of(value, choices, name):
    """`value` if it is one of `choices` (names such as a cell kind or a loss)."""
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{name} must be one of {tuple(choices)}, got {value!r}")
    return value


# ------------------------------------------------------------------------ scalars
def scalar_value(value):
    """A 0-d array (as an .npz file stores a scalar) as its Python value; anything
    else as it is."""
    if isinstance(value, np.ndarray) and value.ndim == 0:
        return value.item()
    return value


def int_in_range(value, name, minimum, maximum=None, note=""):
    """An integer (numpy integers too, bool excluded) in [minimum, maximum]; `note`
    says where the maximum comes from, e.g. " (the cores this process may use)"."""
    if type(value) is not int:  # a plain int, the common case, skips the ABC check
        value = scalar_value(value)
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            raise TypeError(f"{name} must be {_integer_range(minimum, maximum, note)}, "
                            f"got {value!r}")
    if value < minimum or (maximum is not None and value > maximum):
        raise ValueError(f"{name} must be {_integer_range(minimum, maximum, note)}, "
                         f"got {value}")
    return int(value)


def _integer_range(minimum, maximum, note):
    if maximum is None:
        return f"an integer >= {minimum}"
    return f"an integer between {minimum} and {maximum}{note}"


def positive_int(value, name):
    """An integer >= 1 (sizes and counts)."""
    return int_in_range(value, name, 1)


def int_from_text(text, name):
    """The integer a string spells (an environment variable's value)."""
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"{name} must be an integer, got {text!r}") from None


def _finite_float(value, name, interval, inside):
    """A finite float for which `inside(value)` holds; `interval` reads like ">= 0"."""
    if type(value) is not float:  # a plain float, the common case, skips the ABC check
        value = scalar_value(value)
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise TypeError(f"{name} must be a real number {interval}, got {value!r}")
        value = float(value)
    if not (math.isfinite(value) and inside(value)):
        raise ValueError(f"{name} must be a finite number {interval}, got {value}")
    return value


def _at_least_zero(value):
    return value >= 0.0


def _above_zero(value):
    return value > 0.0


def _in_unit_interval(value):
    return 0.0 <= value < 1.0


def _in_closed_unit_interval(value):
    return 0.0 <= value <= 1.0


def non_negative_float(value, name, allow_none=True):
    """A finite float >= 0 (clipping thresholds, rates); None passes through when allowed."""
    if value is None and allow_none:
        return None
    return _finite_float(value, name, ">= 0", _at_least_zero)


def positive_float(value, name):
    """A finite float > 0 (a step size, a temperature)."""
    return _finite_float(value, name, "> 0", _above_zero)


def fraction(value, name, *, closed=False):
    """A float in [0, 1), or in [0, 1] when `closed` (probabilities, decay rates)."""
    if closed:
        return _finite_float(value, name, "in [0, 1]", _in_closed_unit_interval)
    return _finite_float(value, name, "in [0, 1)", _in_unit_interval)


def flag(value, name):
    """True or False (numpy booleans too); no other value stands in for one."""
    value = scalar_value(value)
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False, got {value!r}")
    return bool(value)


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


# ------------------------------------------------------------------------- arrays
def shape_error(name, expected, got):
    return ValueError(f"{name} must have shape {expected}, got {tuple(got)}")


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


def flat_buffer(value, name, dtype=None, size=None, writeable=True):
    """A 1-D C-contiguous float32/float64 numpy array used in place (never copied):
    of `dtype` and `size` when given, writeable unless `writeable` is False."""
    if not isinstance(value, np.ndarray):
        raise TypeError(f"{name} must be a numpy array, got {type(value).__name__}")
    if value.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{name} must be float32 or float64, got {value.dtype}")
    if dtype is not None and value.dtype != dtype:
        raise TypeError(f"{name} must have dtype {np.dtype(dtype)}, got {value.dtype}")
    if value.ndim != 1:
        raise ValueError(f"{name} must be a flat 1-D array, got shape {value.shape}")
    if size is not None and value.size != size:
        raise shape_error(name, f"({size},)", value.shape)
    if not value.flags.c_contiguous:
        raise ValueError(f"{name} must be C-contiguous (a strided view came)")
    if writeable and not value.flags.writeable:
        raise ValueError(f"{name} must be writeable (it is updated in place)")
    return value


def int_array(value, name, what, low, high, bound):
    """An integer array of `what` ("token ids") whose values lie in [low, high];
    `bound` says where the range comes from ("the sequence length T")."""
    array = np.asarray(value)
    if array.dtype.kind not in "iu":
        raise TypeError(f"{name} must be an integer array of {what}, got dtype {array.dtype}")
    if array.size and (array.min() < low or array.max() > high):
        raise ValueError(f"{name} must lie in [{low}, {high}] ({bound}), got values from "
                         f"{array.min()} to {array.max()}")
    return array


@functools.lru_cache(maxsize=64)
def _full_lengths(batch, n_steps):
    return np.full(batch, n_steps, dtype=np.int64)


def lengths_array(lengths, batch, n_steps, name="lengths"):
    """Sequence lengths as int64 (B,), each in [1, T]; None means all are T.

    The array for None is shared between calls: callers only read it."""
    if lengths is None:
        return _full_lengths(batch, n_steps)
    array = int_array(lengths, name, "sequence lengths", 1, n_steps, "the sequence length T")
    if array.shape != (batch,):
        raise shape_error(name, f"({batch},) (one length per sequence)", array.shape)
    return np.require(array, dtype=np.int64, requirements=["C", "W"])


def state_dict_arrays(state_dict, params, owner, dtype):
    """The arrays of `state_dict` (a mapping of names to array-likes) cast to
    `dtype`, checked to have exactly the keys and shapes of `params` (the
    owner's name -> array), so that nothing is written unless all of it fits."""
    if not hasattr(state_dict, "keys"):
        raise TypeError(f"state_dict must be a mapping of names to arrays, "
                        f"got {type(state_dict).__name__}")
    missing = sorted(set(params) - set(state_dict.keys()))
    extra = sorted(set(state_dict.keys()) - set(params))
    if missing or extra:
        raise KeyError(f"state_dict keys do not match {owner}: "
                       f"missing {missing}, unexpected {extra}")
    staged = {}
    for name, target in params.items():
        value = float_array(state_dict[name], f"state_dict[{name!r}]", dtype)
        if value.shape != target.shape:
            raise shape_error(f"state_dict[{name!r}]", target.shape, value.shape)
        staged[name] = value
    return staged
