"""What the sequence layers and the single-step cells share: parameters and
gradients in one flat buffer each (`params` and `grads` map torch's names to
views of them), torch's state_dict interface, the clipping of a backward call,
and the (h, c) pair of a cell with a cell state."""

from ._kernels.clipping import clip_by_norm, clip_by_value
from ._validate import state_dict_arrays


class ParameterSet:
    """Base of RNN/LSTM/GRU and RNNCell/LSTMCell/GRUCell. Subclasses set `_spec`
    (their cell's fastrnn.cells.CellSpec), `dtype`, `params`, `grads` and
    `_flat_grads`."""

    @property
    def n_gates(self):
        """Gate blocks stacked in weight_ih / weight_hh (rows = n_gates * hidden_size)."""
        return self._spec.n_gates

    @property
    def has_cell_state(self):
        """Whether the cell carries a cell state c beside h (the LSTM)."""
        return self._spec.has_cell_state

    def zero_grad(self):
        self._flat_grads[:] = 0.0

    def state_dict(self):
        """Copies of the parameters, keyed by torch's names."""
        return {name: value.copy() for name, value in self.params.items()}

    def load_state_dict(self, state_dict):
        """Load parameters from a mapping of torch's names to array-likes (a torch
        module's state_dict moved to numpy). All keys and shapes are checked
        before anything is written, so a failed load changes nothing."""
        staged = state_dict_arrays(state_dict, self.params, type(self).__name__, self.dtype)
        for name, value in staged.items():
            self.params[name][...] = value

    def _clip_grads(self, max_norm, clip_value):
        """After a backward call: `clip_value` clips every gradient element-wise,
        then `max_norm` rescales them all to a global L2 norm of at most max_norm,
        keeping the pre-clip norm in `grad_norm` (None without max_norm)."""
        if clip_value is not None:
            clip_by_value(self._flat_grads, clip_value)
        self.grad_norm = clip_by_norm(self._flat_grads, max_norm) if max_norm is not None \
            else None


def state_pair(value, name):
    """(h, c) from a pair or None."""
    if value is None:
        return None, None
    if not isinstance(value, (tuple, list)) or len(value) != 2:
        raise TypeError(f"{name} must be a pair (h, c) or None, got {type(value).__name__}")
    return value[0], value[1]
