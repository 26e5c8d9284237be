"""Single-step cells with torch's semantics: fastrnn.RNNCell, LSTMCell, GRUCell.

One call advances a batch by one time step, the streaming path: one compiled
call of the cell's step kernel (fastrnn._kernels.engine), input checks that cost
a few attribute reads when the shapes and dtypes are those of the last call, and
no allocation beyond the outputs (the kernel keeps what backward needs in a work
buffer the cell reuses). Parameters and gradients live in one flat buffer each;
`params` and `grads` map torch's names to views of it.
"""

import types

import numpy as np

from . import _threads
from ._grad_mode import is_grad_enabled
from ._kernels.engine import step_work_size
from ._parameters import ParameterSet, state_pair
from ._validate import (
    as_dtype,
    float_array,
    non_negative_float,
    one_of,
    positive_int,
    seed_sequence,
    shape_error,
)
from .cells import SPECS


class _StepCell(ParameterSet):
    """Shared machinery of the single-step cells (one cell kind per subclass)."""

    _spec_name = None

    def __init__(self, input_size, hidden_size, bias=True, dtype=np.float32, seed=None):
        self.input_size = positive_int(input_size, "input_size")
        self.hidden_size = positive_int(hidden_size, "hidden_size")
        self.bias = bool(bias)
        self.dtype = as_dtype(dtype)
        self._spec = SPECS[self._spec_name]
        width = self._spec.n_gates * self.hidden_size
        shapes = {"weight_ih": (width, self.input_size), "weight_hh": (width, self.hidden_size),
                  "bias_ih": (width,), "bias_hh": (width,)}
        # The kernel reads biases in every case; without them they stay zero and
        # are not among `params`.
        size = sum(int(np.prod(shape)) for shape in shapes.values())
        self._flat_params = np.zeros(size, dtype=self.dtype)
        self._flat_grads = np.zeros(size, dtype=self.dtype)
        params, grads, offset = {}, {}, 0
        for name, shape in shapes.items():
            end = offset + int(np.prod(shape))
            if self.bias or name.startswith("weight"):
                params[name] = self._flat_params[offset:end].reshape(shape)
                grads[name] = self._flat_grads[offset:end].reshape(shape)
            offset = end
        self._weights_size = width * (self.input_size + self.hidden_size)
        self.params = types.MappingProxyType(params)
        self.grads = types.MappingProxyType(grads)
        self.grad_norm = None
        self._batch = None  # rows of the buffers below
        self._last = None  # (batch, unbatched) of the latest call made with gradients
        self.reset_parameters(seed)

    # ----------------------------------------------------------------- parameters
    def reset_parameters(self, seed=None):
        """Draw every parameter from U(-1/sqrt(H), 1/sqrt(H)), reproducibly from `seed`
        (an int, a SeedSequence or None), as torch's cells are initialised."""
        rng = np.random.default_rng(seed_sequence(seed))
        bound = 1.0 / np.sqrt(self.hidden_size)
        count = self._flat_params.size if self.bias else self._weights_size
        self._flat_params[:count] = rng.uniform(-bound, bound, count)

    # -------------------------------------------------------------------- forward
    def _step(self, x, h, c):
        """(h1, c1, unbatched) for one step; c and c1 are (B, 0) for cells without
        a cell state."""
        dtype, state_shape = self.dtype, self._state_shape
        if (type(x) is np.ndarray and x.shape == self._input_shape and x.dtype == dtype
                and x.flags.c_contiguous and type(h) is np.ndarray and h.shape == state_shape
                and h.dtype == dtype and h.flags.c_contiguous
                and (c is self._no_cell_state
                     or type(c) is np.ndarray and c.shape == state_shape and c.dtype == dtype
                     and c.flags.c_contiguous)):
            unbatched = False  # the arrays the last call took or returned: no checks needed
        else:
            x, h, c, unbatched = self._checked(x, h, c)
            state_shape = self._state_shape
        batch = self._batch
        h1 = np.empty(state_shape, dtype=dtype)
        c1 = np.empty(state_shape, dtype=dtype) if self.has_cell_state else self._no_cell_state
        with _threads.kernel_threads(batch * self._weights_size, batch=1):
            self._spec.kernels.step_forward(x, self._flat_params, self._ones, h, c, self._work,
                                            h1, c1)
        self._last = (batch, unbatched) if is_grad_enabled() else None
        return h1, c1, unbatched

    def _checked(self, x, h, c):
        x = float_array(x, "x", self.dtype)
        if x.ndim not in (1, 2):
            raise ValueError(f"x must be 1-D (I,) unbatched or 2-D (B, I), got {x.ndim}-D "
                             f"with shape {x.shape}")
        unbatched = x.ndim == 1
        x = np.ascontiguousarray(x.reshape(1, -1) if unbatched else x)
        batch, features = x.shape
        if features != self.input_size:
            raise ValueError(f"x must have {self.input_size} features (input_size) in its "
                             f"last dimension, got shape {x.shape if not unbatched else (features,)}")
        if batch == 0:
            raise ValueError("x must hold at least one sequence, got shape (0, I)")
        if batch != self._batch:
            self._resize(batch)
        h = self._state(h, "h", batch, unbatched)
        c = self._state(c, "c", batch, unbatched) if self.has_cell_state \
            else self._no_cell_state
        return x, h, c, unbatched

    def _state(self, value, name, batch, unbatched):
        if value is None:
            return np.zeros((batch, self.hidden_size), dtype=self.dtype)
        array = float_array(value, name, self.dtype)
        expected = (self.hidden_size,) if unbatched else (batch, self.hidden_size)
        if array.shape != expected:
            layout = "(H,) for unbatched x" if unbatched else "(B, H)"
            raise shape_error(name, f"{expected} {layout}", array.shape)
        return np.ascontiguousarray(array.reshape(batch, self.hidden_size))

    def _resize(self, batch):
        """Buffers for a batch of `batch` rows (kept until the batch size changes)."""
        spec = self._spec
        self._work = np.empty(step_work_size(batch, self.input_size, self.hidden_size,
                                             spec.n_gates, spec.cache_width, spec.scratch_count),
                                    dtype=self.dtype)
        self._ones = np.ones(batch, dtype=np.int64)  # every row's "length" is this step
        self._no_cell_state = np.empty((batch, 0), dtype=self.dtype)
        self._batch = batch
        self._input_shape = (batch, self.input_size)
        self._state_shape = (batch, self.hidden_size)
        self._last = None

    _no_cell_state = _input_shape = _state_shape = None

    # ------------------------------------------------------------------- backward
    def _step_backward(self, d_h1, d_c1, max_norm, clip_value):
        if self._last is None:
            raise RuntimeError(f"{type(self).__name__}.backward needs a call made with "
                               "gradients enabled first (none since the last batch-size "
                               "change, or the last ran inside fastrnn.no_grad())")
        max_norm = non_negative_float(max_norm, "max_norm")
        clip_value = non_negative_float(clip_value, "clip_value")
        batch, unbatched = self._last
        d_h1 = self._state(d_h1, "d_h1", batch, unbatched)
        d_c1 = self._state(d_c1, "d_c1", batch, unbatched) if self.has_cell_state \
            else self._no_cell_state
        dx = np.empty((batch, self.input_size), dtype=self.dtype)
        dh = np.empty((batch, self.hidden_size), dtype=self.dtype)
        dc = np.empty_like(dh) if self.has_cell_state else self._no_cell_state
        with _threads.kernel_threads(2 * batch * self._weights_size, batch=1):
            self._spec.kernels.step_backward(self._flat_params, self._flat_grads, self._ones,
                                             d_h1, d_c1, self._work, self.input_size, dx, dh,
                                             dc)
        if not self.bias:
            self._flat_grads[self._weights_size:] = 0.0
        self._clip_grads(max_norm, clip_value)
        if unbatched:
            return dx[0], dh[0], dc[0] if self.has_cell_state else None
        return dx, dh, dc if self.has_cell_state else None

    def __repr__(self):
        extra = ("" if self.bias else ", bias=False") + \
            ("" if getattr(self, "reset_after", True) else ", reset_after=False")
        return (f"{type(self).__name__}({self.input_size}, {self.hidden_size}{extra}, "
                f"dtype={self.dtype.name})")


def _user_state(state, unbatched):
    return state[0] if unbatched else state


class RNNCell(_StepCell):
    """Elman cell, one step: h1 = f(W_ih x + b_ih + W_hh h + b_hh), f = tanh or relu."""

    def __init__(self, input_size, hidden_size, bias=True, nonlinearity="tanh",
                 dtype=np.float32, seed=None):
        self.nonlinearity = one_of(nonlinearity, ("tanh", "relu"), "nonlinearity")
        self._spec_name = "rnn_" + nonlinearity
        super().__init__(input_size, hidden_size, bias, dtype, seed)

    def __call__(self, x, h=None):
        """h1 (B, H) from x (B, I) or unbatched (I,) and h (zeros if omitted)."""
        h1, _, unbatched = self._step(x, h, self._no_cell_state)
        return _user_state(h1, unbatched)

    forward = __call__

    def backward(self, d_h1, max_norm=None, clip_value=None):
        """Gradients of the latest call; accumulates into `grads`. Returns (dx, dh).
        `clip_value` clips every parameter gradient element-wise, then `max_norm`
        rescales them to a global L2 norm of at most max_norm (the pre-clip norm
        is kept in `grad_norm`)."""
        dx, dh, _ = self._step_backward(d_h1, None, max_norm, clip_value)
        return dx, dh


class GRUCell(RNNCell):
    """GRU cell; `reset_after` as on fastrnn.GRU: True (the default) is torch's
    variant, n = tanh(W_in x + b_in + r * (W_hn h + b_hn)), False the classic
    one, n = tanh(W_in x + b_in + W_hn (r * h) + b_hn)."""

    def __init__(self, input_size, hidden_size, bias=True, dtype=np.float32, seed=None,
                 reset_after=True):
        self.reset_after = bool(reset_after)
        self._spec_name = "gru" if self.reset_after else "gru_reset_before"
        _StepCell.__init__(self, input_size, hidden_size, bias, dtype, seed)


class LSTMCell(_StepCell):
    """LSTM cell, one step, torch's gate order i, f, g, o."""

    _spec_name = "lstm"

    def __call__(self, x, state=None):
        """(h1, c1) from x (B, I) or unbatched (I,) and state (h, c) (zeros if omitted)."""
        h, c = state_pair(state, "state")
        h1, c1, unbatched = self._step(x, h, c)
        return _user_state(h1, unbatched), _user_state(c1, unbatched)

    forward = __call__

    def backward(self, d_state, max_norm=None, clip_value=None):
        """Gradients of the latest call for d_state = (d_h1, d_c1) (either may be
        None: zeros); returns (dx, (dh, dc)). Clipping as RNNCell.backward."""
        d_h1, d_c1 = state_pair(d_state, "d_state")
        dx, dh, dc = self._step_backward(d_h1, d_c1, max_norm, clip_value)
        return dx, (dh, dc)


_STEP_CELLS = {"rnn": (RNNCell, {"nonlinearity": "tanh"}),
               "rnn_relu": (RNNCell, {"nonlinearity": "relu"}),
               "lstm": (LSTMCell, {}), "gru": (GRUCell, {}),
               "gru_reset_before": (GRUCell, {"reset_after": False})}


def step_cell_for(cell, input_size, hidden_size, **options):
    """The single-step cell for a cell name (as fastrnn.layers.layer_for_cell)."""
    cell_class, fixed = _STEP_CELLS[one_of(cell, tuple(_STEP_CELLS), "cell")]
    return cell_class(input_size, hidden_size, **fixed, **options)
