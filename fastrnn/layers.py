"""Recurrent layers with torch's semantics: fastrnn.RNN, fastrnn.LSTM, fastrnn.GRU.

Parameters and gradients each live in one flat buffer; `params` and `grads` map
torch's names to views of it, so clipping and optimizer updates are single
kernel calls over all of a layer's numbers.
"""

import copy
import types

import numpy as np

from . import _threads
from ._cells import CELLS
from ._grad_mode import is_grad_enabled
from ._parameters import ParameterSet, state_pair
from ._validate import (
    absent,
    as_dtype,
    flat_buffer,
    float_array,
    fraction,
    lengths_array,
    non_negative_float,
    one_of,
    positive_int,
    seed_sequence,
    shape_error,
)

# Caches that hold no activations, so that backward can say why: a forward
# call under no_grad(), and one that raised after dropping the previous call's.
_NO_GRAD_FORWARD = types.MappingProxyType({})
_UNFINISHED_FORWARD = types.MappingProxyType({})


class _RecurrentLayer(ParameterSet):
    """Shared machinery of RNN, LSTM and GRU (one cell kind per subclass)."""

    _cell_key = None

    def __init__(self, input_size, hidden_size, num_layers=1, bias=True, batch_first=False,
                 dropout=0.0, bidirectional=False, dtype=np.float32, seed=None):
        self.input_size = positive_int(input_size, "input_size")
        self.hidden_size = positive_int(hidden_size, "hidden_size")
        self.num_layers = positive_int(num_layers, "num_layers")
        self.bias = bool(bias)
        self.batch_first = bool(batch_first)
        self.bidirectional = bool(bidirectional)
        self.dtype = as_dtype(dtype)
        self.dropout = fraction(dropout, "dropout")
        self.training = True
        self._cell = CELLS[self._cell_key]
        self._spec = self._cell.spec
        self.num_directions = 2 if self.bidirectional else 1
        self._layout = self._parameter_layout()
        size = sum(int(np.prod(shape)) for _, shape in self._layout)
        self._bind_buffers(np.empty(size, dtype=self.dtype))
        init_seed, dropout_seed = seed_sequence(seed).spawn(2)
        self._dropout_rng = np.random.default_rng(dropout_seed)
        self.reset_parameters(init_seed)

    def _bind_buffers(self, flat_params, flat_grads=None):
        """Adopt `flat_params` (and `flat_grads`, else fresh zeros) as the layer's buffers.

        A model uses this to place the layer's numbers inside its own flat buffers.
        """
        self._flat_params = flat_params
        self._flat_grads = np.zeros_like(flat_params) if flat_grads is None else flat_grads
        self.params = types.MappingProxyType(self._views(self._flat_params))
        self.grads = types.MappingProxyType(self._views(self._flat_grads))
        self._zero_bias = np.zeros(self._cell.n_gates * self.hidden_size, dtype=self.dtype)
        self._direction_arrays = {
            (layer, direction): self._bind_direction(layer, direction)
            for layer in range(self.num_layers) for direction in range(self.num_directions)}
        self._cache = None
        self.grad_norm = None

    def astype(self, dtype):
        """A new layer of the same configuration holding these parameters cast to `dtype`."""
        dtype = as_dtype(dtype)
        new = copy.copy(self)
        new.dtype = dtype
        new._bind_buffers(self._flat_params.astype(dtype))
        return new

    # ----------------------------------------------------------------- parameters
    @property
    def flat_params(self):
        """Every parameter in one flat array; the arrays in `params` are views of it."""
        return self._flat_params

    @property
    def flat_grads(self):
        """Every gradient in one flat array; the arrays in `grads` are views of it."""
        return self._flat_grads

    def bind_buffers(self, flat_params, flat_grads):
        """Move the layer's parameters and gradients into the caller's flat buffers.

        Both must be writeable C-contiguous 1-D arrays of the layer's dtype with
        `flat_params.size` elements, not overlapping. The current values are
        copied in; from then on the layer reads and writes them there (`params`,
        `grads`, `flat_params` and `flat_grads` are views of them), so a model can
        hold several layers' numbers in one buffer and clip or update them in one
        call. The next backward needs a new forward call. Returns the layer.
        """
        size = self._flat_params.size
        flat_buffer(flat_params, "flat_params", self.dtype, size)
        flat_buffer(flat_grads, "flat_grads", self.dtype, size)
        if np.may_share_memory(flat_params, flat_grads):
            raise ValueError("flat_params and flat_grads must not overlap")
        flat_params[:] = self._flat_params
        flat_grads[:] = self._flat_grads
        self._bind_buffers(flat_params, flat_grads)
        return self

    def _parameter_layout(self):
        gates = self._cell.n_gates * self.hidden_size
        layout = []
        for layer in range(self.num_layers):
            layer_input = self.input_size if layer == 0 else self.num_directions * self.hidden_size
            for direction in range(self.num_directions):
                suffix = f"_l{layer}" + ("_reverse" if direction else "")
                layout.append(("weight_ih" + suffix, (gates, layer_input)))
                layout.append(("weight_hh" + suffix, (gates, self.hidden_size)))
                if self.bias:
                    layout.append(("bias_ih" + suffix, (gates,)))
                    layout.append(("bias_hh" + suffix, (gates,)))
        return layout

    def _views(self, flat):
        views, offset = {}, 0
        for name, shape in self._layout:
            size = int(np.prod(shape))
            views[name] = flat[offset:offset + size].reshape(shape)
            offset += size
        return views

    def train(self, mode=True):
        """Training mode (the default, as in torch): dropout between layers is applied."""
        self.training = bool(mode)
        return self

    def eval(self):
        """Inference mode: no dropout."""
        return self.train(False)

    def seed_dropout(self, seed):
        """Restart the dropout generator from `seed` (an int >= 0, a SeedSequence or None).

        The masks of the training-mode forward calls that follow are drawn from
        ``numpy.random.default_rng(seed)``: each call draws, for k = 0 .. num_layers-2
        in turn, ``keep = rng.random((T, B, D*H)) >= dropout`` (time-major whatever
        `batch_first`), and layer k+1 reads layer k's output times
        ``keep / (1 - dropout)``. Calls in eval mode, or with dropout 0, draw nothing.
        Reseeding before each of several calls makes them use the same masks (a
        gradient check of a layer with dropout does this). Returns the layer.
        """
        self._dropout_rng = np.random.default_rng(seed_sequence(seed))
        return self

    @property
    def dropout_state(self):
        """The dropout generator's state (numpy's `bit_generator.state`, a JSON-able
        dict), for checkpoints: assigning it back makes the next training-mode
        calls draw the same masks as they would have from where it was read."""
        return self._dropout_rng.bit_generator.state

    @dropout_state.setter
    def dropout_state(self, state):
        self._dropout_rng.bit_generator.state = state

    def _dropout_mask(self, shape):
        """Inverted-dropout mask (kept units scaled by 1/(1-p)), or None when inactive."""
        if not (self.training and self.dropout > 0.0):
            return None
        keep = self._dropout_rng.random(shape) >= self.dropout
        return (keep / (1.0 - self.dropout)).astype(self.dtype)

    def reset_parameters(self, seed=None):
        """Draw every parameter from U(-1/sqrt(H), 1/sqrt(H)), reproducibly from `seed`.

        Values are drawn in float64 and cast, so float32 and float64 layers built
        from the same seed hold the same numbers up to rounding.
        """
        rng = np.random.default_rng(seed)
        bound = 1.0 / np.sqrt(self.hidden_size)
        self._flat_params[:] = rng.uniform(-bound, bound, self._flat_params.size)

    def _direction_params(self, layer, direction):
        """(w_ih, w_hh, b_ih, b_hh, dw_ih, dw_hh, db_ih, db_hh) of one layer and direction."""
        return self._direction_arrays[layer, direction]

    def _bind_direction(self, layer, direction):
        suffix = f"_l{layer}" + ("_reverse" if direction else "")
        p, g = self.params, self.grads
        if self.bias:
            return (p["weight_ih" + suffix], p["weight_hh" + suffix],
                    p["bias_ih" + suffix], p["bias_hh" + suffix],
                    g["weight_ih" + suffix], g["weight_hh" + suffix],
                    g["bias_ih" + suffix], g["bias_hh" + suffix])
        # No bias parameters: zero biases in, bias gradients into a scratch buffer
        # that nothing reads (db_ih and db_hh share it).
        scratch = np.zeros_like(self._zero_bias)
        return (p["weight_ih" + suffix], p["weight_hh" + suffix],
                self._zero_bias, self._zero_bias,
                g["weight_ih" + suffix], g["weight_hh" + suffix], scratch, scratch)

    # ------------------------------------------------------------------- forward
    def _state_shape(self, batch, unbatched):
        rows = self.num_layers * self.num_directions
        return (rows, self.hidden_size) if unbatched else (rows, batch, self.hidden_size)

    def _initial_state(self, value, name, batch, unbatched):
        shape = self._state_shape(batch, unbatched)
        if value is None:
            return np.zeros((shape[0], batch, self.hidden_size), dtype=self.dtype)
        array = float_array(value, name, self.dtype)
        if array.shape != shape:
            layout = "(num_layers*num_directions, H)" if unbatched else \
                "(num_layers*num_directions, B, H)"
            raise shape_error(name, f"{shape} {layout}", array.shape)
        return array.reshape(shape[0], batch, self.hidden_size) if unbatched else array

    def _sequence_input(self, x):
        source = x
        x = float_array(x, "x", self.dtype)
        if is_grad_enabled() and np.may_share_memory(x, source):
            x = x.copy()  # backward must see what forward saw, whatever the caller does
        if x.ndim == 2:
            unbatched = True
            x = x[:, None, :]
        elif x.ndim == 3:
            unbatched = False
            if self.batch_first:
                x = np.ascontiguousarray(x.transpose(1, 0, 2))
        else:
            layout = "(B, T, I)" if self.batch_first else "(T, B, I)"
            raise ValueError(f"x must be 2-D (T, I) unbatched or 3-D {layout}, "
                             f"got {x.ndim}-D with shape {x.shape}")
        n_steps, batch, features = x.shape
        if features != self.input_size:
            raise ValueError(f"x must have {self.input_size} features (input_size) in its "
                             f"last dimension, got shape {x.shape} with {features}")
        if n_steps == 0 or batch == 0:
            raise ValueError(f"x must have at least one time step and one sequence, "
                             f"got shape {x.shape}")
        return x, unbatched

    def _run_forward(self, x, h0, c0, lengths):
        """Forward through every layer and direction; x is the result of _sequence_input."""
        x, unbatched = x
        n_steps, batch, _ = x.shape
        if unbatched and lengths is not None:
            raise ValueError("lengths must be None for unbatched (T, I) input")
        padded = lengths is not None
        lengths = lengths_array(lengths, batch, n_steps)
        if padded and lengths.min() < n_steps:
            # Padded steps never reach the arithmetic (a NaN pad must not leak into
            # gradients), so zero them in a private copy.
            x = x.copy()
            steps = np.arange(n_steps)[:, None]
            x[steps >= lengths[None, :]] = 0.0
        h0 = self._initial_state(h0, "h0", batch, unbatched)
        if self._cell.has_cell_state:
            c0 = self._initial_state(c0, "c0", batch, unbatched)
        hidden = self.hidden_size
        keep = is_grad_enabled()
        h_n = np.empty_like(h0)
        c_n = np.empty_like(h0) if self._cell.has_cell_state else None
        layer_inputs, caches, masks = [], [], []
        layer_input = x.reshape(n_steps * batch, -1)
        # The previous call's activations go now, not after this call's exist too:
        # keeping both doubled a training step's peak memory.
        self._cache = _UNFINISHED_FORWARD
        with _threads.kernel_threads(self._work(n_steps, batch), self._step_work(batch),
                                    batch, forward=True) as plan:
            for layer in range(self.num_layers):
                outputs = []
                for direction in range(self.num_directions):
                    row = layer * self.num_directions + direction
                    w_ih, w_hh, b_ih, b_hh = self._direction_params(layer, direction)[:4]
                    c0_row = c0[row] if c_n is not None else None
                    out, cache = self._cell.forward(
                        layer_input, w_ih, w_hh, b_ih, b_hh, h0[row], c0_row, lengths,
                        bool(direction), plan, keep, h_n[row],
                        c_n[row] if c_n is not None else None)
                    outputs.append(out)
                    caches.append(cache)
                layer_inputs.append(layer_input)
                out = outputs[0] if len(outputs) == 1 else np.concatenate(outputs, axis=2)
                layer_input = out.reshape(n_steps * batch, -1)
                if layer + 1 < self.num_layers:
                    masks.append(self._dropout_mask(layer_input.shape))
                    if masks[-1] is not None:
                        layer_input = layer_input * masks[-1]
        self._cache = dict(layer_inputs=layer_inputs, caches=caches, lengths=lengths,
                           n_steps=n_steps, batch=batch, unbatched=unbatched,
                           masks=masks) if keep else _NO_GRAD_FORWARD
        out = out.reshape(n_steps, batch, self.num_directions * hidden)
        return self._to_user_layout(out, unbatched), self._state_to_user(h_n, unbatched), \
            (self._state_to_user(c_n, unbatched) if c_n is not None else None)

    def _work(self, n_steps, batch):
        """Multiply-adds of one forward pass (decides serial or parallel kernels)."""
        gates = self._cell.n_gates * self.hidden_size
        width = self.input_size + self.hidden_size
        return n_steps * batch * gates * width * self.num_layers * self.num_directions

    def _step_work(self, batch):
        """Multiply-adds of one step's recurrent product (B, H) @ (H, gates * H)."""
        return batch * self._cell.n_gates * self.hidden_size * self.hidden_size

    def _to_user_layout(self, seq, unbatched):
        if unbatched:
            return seq[:, 0, :]
        if self.batch_first:
            return np.ascontiguousarray(seq.transpose(1, 0, 2))
        return seq

    def _state_to_user(self, state, unbatched):
        return state[:, 0, :] if unbatched else state

    # ------------------------------------------------------------------ backward
    def _sequence_grad(self, d_out, cache):
        n_steps, batch, unbatched = cache["n_steps"], cache["batch"], cache["unbatched"]
        width = self.num_directions * self.hidden_size
        if d_out is None:
            return np.zeros((n_steps, batch, width), dtype=self.dtype)
        d_out = float_array(d_out, "d_out", self.dtype)
        if unbatched:
            expected = (n_steps, width)
        elif self.batch_first:
            expected = (batch, n_steps, width)
        else:
            expected = (n_steps, batch, width)
        if d_out.shape != expected:
            raise shape_error("d_out", f"{expected} (the shape of the forward output)",
                              d_out.shape)
        if unbatched:
            return d_out.reshape(n_steps, 1, width)
        if self.batch_first:
            return np.ascontiguousarray(d_out.transpose(1, 0, 2))
        return d_out

    def _run_backward(self, d_out, d_hn, d_cn, max_norm, clip_value, clip_hidden):
        cache = self._cache
        if cache is None:
            raise RuntimeError(f"{type(self).__name__}.backward called before forward: "
                               "call the layer on an input first")
        if cache is _UNFINISHED_FORWARD:
            raise RuntimeError(f"{type(self).__name__}.backward: the last forward call "
                               "raised before it finished, and its activations (and the "
                               "previous call's) are gone; call the layer again")
        if cache is _NO_GRAD_FORWARD:
            raise RuntimeError(f"{type(self).__name__}.backward needs the activations of a "
                               "forward call made with gradients enabled; the last forward "
                               "ran inside fastrnn.no_grad(), which keeps none")
        max_norm = non_negative_float(max_norm, "max_norm")
        clip_value = non_negative_float(clip_value, "clip_value")
        clip_hidden = non_negative_float(clip_hidden, "clip_hidden")
        d_out = self._sequence_grad(d_out, cache)
        n_steps, batch, unbatched = cache["n_steps"], cache["batch"], cache["unbatched"]
        d_hn = self._initial_state(d_hn, "d_hn", batch, unbatched)
        has_c = self._cell.has_cell_state
        d_cn = self._initial_state(d_cn, "d_cn", batch, unbatched) if has_c else None
        lengths = cache["lengths"]
        hidden = self.hidden_size
        dh0 = np.empty_like(d_hn)
        dc0 = np.empty_like(d_hn) if has_c else None
        clip_hidden = np.inf if clip_hidden is None else clip_hidden
        d_layer_out = d_out
        with _threads.kernel_threads(2 * self._work(n_steps, batch), self._step_work(batch),
                                    batch) as plan:
            for layer in reversed(range(self.num_layers)):
                layer_input = cache["layer_inputs"][layer]
                d_input = None
                for direction in range(self.num_directions):
                    row = layer * self.num_directions + direction
                    w_ih, w_hh, _, _, dw_ih, dw_hh, db_ih, db_hh = \
                        self._direction_params(layer, direction)
                    d_out_dir = d_layer_out[:, :, direction * hidden:(direction + 1) * hidden]
                    dx, dh, dc = self._cell.backward(
                        cache["caches"][row], layer_input, w_ih, w_hh, lengths,
                        bool(direction), np.ascontiguousarray(d_out_dir), d_hn[row],
                        d_cn[row] if has_c else None, clip_hidden, plan,
                        dw_ih, dw_hh, db_ih, db_hh)
                    dh0[row] = dh
                    if has_c:
                        dc0[row] = dc
                    d_input = dx if d_input is None else d_input + dx
                if layer > 0 and cache["masks"][layer - 1] is not None:
                    d_input *= cache["masks"][layer - 1]
                d_layer_out = d_input.reshape(n_steps, batch, -1)
        self._clip_grads(max_norm, clip_value)
        dx = self._to_user_layout(d_layer_out, unbatched)
        return dx, self._state_to_user(dh0, unbatched), \
            (self._state_to_user(dc0, unbatched) if has_c else None)

    # ----------------------------------------------- any cell, one call signature
    def state_parts(self, state):
        """The (h, c) parts of `state` in this layer's call form: (h0, c0) for a
        layer with a cell state (`has_cell_state`: the LSTM), (state, None) for the
        others. None gives (None, None)."""
        if self.has_cell_state:
            return state_pair(state, "state")
        return state, None

    def forward_states(self, x, h0=None, c0=None, lengths=None):
        """The layer's forward call with the state in parts, for code that serves
        every cell: returns (out, h_n, c_n), c_n None for a layer without a cell
        state (which then takes no c0)."""
        if self.has_cell_state:
            out, (h_n, c_n) = self(x, (h0, c0), lengths=lengths)
            return out, h_n, c_n
        absent(c0, "c0", f"({type(self).__name__} has no cell state)")
        out, h_n = self(x, h0, lengths=lengths)
        return out, h_n, None

    def backward_states(self, d_out, d_hn=None, d_cn=None, max_norm=None, clip_value=None,
                        clip_hidden=None):
        """`backward` with the state gradients in parts (as forward_states): returns
        (dx, dh0, dc0), dc0 None for a layer without a cell state (which then takes
        no d_cn). The clipping keywords are backward's."""
        clipping = dict(max_norm=max_norm, clip_value=clip_value, clip_hidden=clip_hidden)
        if self.has_cell_state:
            dx, (dh0, dc0) = self.backward(d_out, (d_hn, d_cn), **clipping)
            return dx, dh0, dc0
        absent(d_cn, "d_cn", f"({type(self).__name__} has no cell state)")
        dx, dh0 = self.backward(d_out, d_hn, **clipping)
        return dx, dh0, None

    _repr_defaults = {"num_layers": 1, "bias": True, "batch_first": False,
                      "bidirectional": False}

    def __repr__(self):
        extra = "".join(f", {k}={getattr(self, k)!r}" for k, default in
                        self._repr_defaults.items() if getattr(self, k) != default)
        return (f"{type(self).__name__}({self.input_size}, {self.hidden_size}{extra}, "
                f"dtype={self.dtype.name})")


class RNN(_RecurrentLayer):
    """Elman RNN: h_t = f(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh), f = tanh or relu."""

    def __init__(self, input_size, hidden_size, num_layers=1, nonlinearity="tanh", bias=True,
                 batch_first=False, dropout=0.0, bidirectional=False, dtype=np.float32,
                 seed=None):
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(f"nonlinearity must be 'tanh' or 'relu', got {nonlinearity!r}")
        self.nonlinearity = nonlinearity
        self._cell_key = "rnn_" + nonlinearity
        super().__init__(input_size, hidden_size, num_layers, bias, batch_first, dropout,
                         bidirectional, dtype, seed)

    def __call__(self, x, h0=None, lengths=None):
        """Returns (out, h_n): out (T, B, D*H), h_n (num_layers*D, B, H)."""
        out, h_n, _ = self._run_forward(self._sequence_input(x), h0, None, lengths)
        return out, h_n

    forward = __call__

    def backward(self, d_out, d_hn=None, max_norm=None, clip_value=None, clip_hidden=None):
        """BPTT for the last forward call; accumulates into `grads`.

        Returns (dx, dh0). Clipping, in this order: `clip_hidden` clips the gradient
        flowing into every hidden state element-wise at every step; `clip_value`
        clips every parameter gradient element-wise; `max_norm` rescales all
        parameter gradients to a global L2 norm of at most max_norm, and the
        pre-clip norm is kept in `self.grad_norm` (as torch's clip_grad_norm_
        returns it).
        """
        dx, dh0, _ = self._run_backward(d_out, d_hn, None, max_norm, clip_value, clip_hidden)
        return dx, dh0


class GRU(RNN):
    """GRU, gate order r, z, n. `reset_after` True (the default) is torch's
    variant, n = tanh(W_in x + b_in + r * (W_hn h + b_hn)); False is the classic
    one (Cho et al. 2014, Keras's reset_after=False, ONNX's default
    linear_before_reset=0), n = tanh(W_in x + b_in + W_hn (r * h) + b_hn). The
    parameters' names and shapes are the same."""

    _repr_defaults = dict(_RecurrentLayer._repr_defaults, reset_after=True)

    def __init__(self, input_size, hidden_size, num_layers=1, bias=True, batch_first=False,
                 dropout=0.0, bidirectional=False, dtype=np.float32, seed=None,
                 reset_after=True):
        self.reset_after = bool(reset_after)
        self._cell_key = "gru" if self.reset_after else "gru_reset_before"
        _RecurrentLayer.__init__(self, input_size, hidden_size, num_layers, bias, batch_first,
                                 dropout, bidirectional, dtype, seed)


class LSTM(_RecurrentLayer):
    """LSTM with torch's gate order i, f, g, o."""

    _cell_key = "lstm"

    def __call__(self, x, state=None, lengths=None):
        """Returns (out, (h_n, c_n)); state is (h0, c0), either may be None."""
        h0, c0 = state_pair(state, "state")
        out, h_n, c_n = self._run_forward(self._sequence_input(x), h0, c0, lengths)
        return out, (h_n, c_n)

    forward = __call__

    def backward(self, d_out, d_state=None, max_norm=None, clip_value=None, clip_hidden=None):
        """BPTT for the last forward call; returns (dx, (dh0, dc0)). See RNN.backward."""
        d_hn, d_cn = state_pair(d_state, "d_state")
        dx, dh0, dc0 = self._run_backward(d_out, d_hn, d_cn, max_norm, clip_value, clip_hidden)
        return dx, (dh0, dc0)


# The public cell names (SequenceModel, the CLI, the benchmarks) and their layers.
_LAYERS = {"rnn": (RNN, {"nonlinearity": "tanh"}), "rnn_relu": (RNN, {"nonlinearity": "relu"}),
           "lstm": (LSTM, {}), "gru": (GRU, {}),
           "gru_reset_before": (GRU, {"reset_after": False})}
CELL_NAMES = tuple(_LAYERS)


def layer_for_cell(cell, input_size, hidden_size, **options):
    """The layer for a cell name: "rnn" (tanh), "rnn_relu", "lstm", "gru" or
    "gru_reset_before" (the GRU with reset_after=False)."""
    layer_class, fixed = _LAYERS[one_of(cell, CELL_NAMES, "cell")]
    return layer_class(input_size, hidden_size, **fixed, **options)
