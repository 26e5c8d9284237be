"""fastrnn: PyTorch-identical RNN, LSTM and GRU on fused Numba kernels, for the CPU."""

from . import _allocator, optim
from ._grad_mode import is_grad_enabled, no_grad
from ._threads import get_num_threads, set_num_threads
from .clip import clip_grad_norm, clip_grad_value
from .gradcheck import GradcheckReport, gradcheck, numerical_grad
from .layers import GRU, LSTM, RNN
from .model import SequenceModel, load
from .single_step import GRUCell, LSTMCell, RNNCell

__version__ = "0.1.0"

_allocator.warm_on_import()

__all__ = ["RNN", "LSTM", "GRU", "RNNCell", "LSTMCell", "GRUCell", "clip_grad_norm",
           "clip_grad_value", "set_num_threads", "get_num_threads", "gradcheck", "numerical_grad",
           "GradcheckReport", "SequenceModel", "load", "optim", "no_grad", "is_grad_enabled",
           "__version__"]
