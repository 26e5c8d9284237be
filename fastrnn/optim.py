"""Optimizers over one flat parameter array: SGD, Adam, AdamW, Adagrad, RMSprop.

They follow torch.optim's formulas (single-tensor implementation), but work on a
single flat C-contiguous float32/float64 array of parameters and a matching array of
gradients, updated in place by one fused Numba kernel per step::

    opt = Adam(lr=1e-3)
    opt.step(params, grads)        # params -= update(grads), state kept in opt

State buffers are allocated on the first step with that array's size and dtype; the
optimizer then stays bound to them (``zero_state()`` forgets everything).
``state_dict()``/``load_state_dict()`` round-trip the hyperparameters, the step count
and the buffers exactly, so training resumes bit for bit.
"""

from __future__ import annotations

import numbers
from collections.abc import Mapping

import numpy as np

from ._kernels import optim as _kernels
from ._validate import (
    flag,
    flat_buffer,
    fraction,
    non_negative_float,
    pair,
    positive_float,
    scalar_value,
)

__all__ = ["Optimizer", "SGD", "Adam", "AdamW", "Adagrad", "RMSprop"]

_FLOAT_DTYPES = {"float32": np.dtype(np.float32), "float64": np.dtype(np.float64)}


def _betas(value, name):
    """A pair (beta1, beta2) of decay rates in [0, 1)."""
    beta1, beta2 = pair(value, name, "(beta1, beta2)")
    return (fraction(beta1, f"{name}[0]"), fraction(beta2, f"{name}[1]"))


def _non_negative(value, name):
    return non_negative_float(value, name, allow_none=False)


def _closed_fraction(value, name):
    return fraction(value, name, closed=True)


class Optimizer:
    """Common machinery: validation, lazy state, step counting, state_dict.

    A subclass declares `_spec` (hyperparameter name -> check(value, name), in
    constructor order), `_buffer_fills(hyper)` (state buffer name -> initial value,
    for the buffers this configuration uses) and `_update(params, grads, step)` (the
    kernel call).
    """

    _spec: dict = {}

    def __init__(self, **hyperparameters):
        self._hyper = self._checked(hyperparameters)
        self._reset()

    # -- subclass hooks --------------------------------------------------------------

    @classmethod
    def _check_combination(cls, hyper):
        """Constraints between hyperparameters; raise ValueError."""

    @staticmethod
    def _buffer_fills(hyper):
        return {}

    def _update(self, params, grads, step):
        raise NotImplementedError

    # -- public API ------------------------------------------------------------------

    @property
    def hyperparameters(self):
        """A copy of the hyperparameters, by constructor argument name."""
        return dict(self._hyper)

    @property
    def lr(self):
        return self._hyper["lr"]

    @lr.setter
    def lr(self, value):
        # The one hyperparameter a schedule changes between steps.
        self._hyper["lr"] = _non_negative(value, "lr")

    @property
    def step_count(self):
        """Number of steps taken since construction / zero_state()."""
        return self._step

    def __getattr__(self, name):
        # Read access to every hyperparameter as an attribute (opt.momentum, ...).
        hyper = self.__dict__.get("_hyper")
        if hyper is not None and name in hyper:
            return hyper[name]
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self._hyper.items())
        return f"{type(self).__name__}({args})"

    def step(self, params, grads):
        """Update `params` in place from `grads` (flat, C-contiguous, same shape and
        float dtype); returns None."""
        self._check_arrays(params, grads)
        if self._dtype is None:
            self._bind(params.size, params.dtype)
        self._update(params, grads, self._step + 1)
        self._step += 1

    def zero_state(self):
        """Forget the step count and all buffers; the next step starts afresh and may
        use arrays of any size/dtype."""
        self._reset()

    def state_dict(self):
        """Plain Python scalars/strings and numpy array copies:
        'optimizer' (class name), 'step', every hyperparameter and, once a step has
        been taken, 'size', 'dtype' and the state buffers."""
        state = {"optimizer": type(self).__name__, "step": self._step}
        state.update(self._hyper)
        if self._dtype is not None:
            state["size"] = self._size
            state["dtype"] = self._dtype.name
            for name, buffer in self._buffers.items():
                state[name] = buffer.copy()
        return state

    def load_state_dict(self, state):
        """Restore what state_dict() returned (values may also be 0-d/1-d arrays, as
        from an .npz file). On any error the optimizer is left unchanged."""
        if not isinstance(state, Mapping):
            raise TypeError(f"state must be a dict, got {type(state).__name__}")
        state = {key: scalar_value(value) for key, value in state.items()}
        kind = state.get("optimizer")
        if kind != type(self).__name__:
            raise ValueError(f"state['optimizer'] must be {type(self).__name__!r}, got {kind!r}")
        step = state.get("step")
        if isinstance(step, bool) or not isinstance(step, numbers.Integral) or step < 0:
            raise ValueError(f"state['step'] must be an integer >= 0, got {step!r}")
        step = int(step)
        missing = [name for name in self._spec if name not in state]
        if missing:
            raise ValueError(f"state is missing hyperparameters {missing}")
        hyper = self._checked({name: state[name] for name in self._spec}, prefix="state")
        fills = self._buffer_fills(hyper)

        expected = {"optimizer", "step", *self._spec}
        bound = step > 0
        if bound:
            expected |= {"size", "dtype", *fills}
        missing = sorted(expected - set(state))
        extra = sorted(set(state) - expected)
        if missing or extra:
            raise ValueError(f"state keys do not match a {type(self).__name__} at step "
                             f"{step}: missing {missing}, unexpected {extra}")
        buffers = {}
        size = dtype = None
        if bound:
            size, dtype = self._size_and_dtype(state["size"], state["dtype"])
            for name in fills:
                buffer = np.asarray(state[name])
                if buffer.dtype != dtype or buffer.shape != (size,):
                    raise ValueError(f"state[{name!r}] must be a {dtype.name} array of shape "
                                     f"({size},), got {buffer.dtype} {buffer.shape}")
                buffers[name] = np.array(buffer, order="C", copy=True)

        self._hyper = hyper
        self._step = step
        self._size, self._dtype, self._buffers = size, dtype, buffers

    # -- internals -------------------------------------------------------------------

    @classmethod
    def _checked(cls, hyper, prefix=None):
        checked = {}
        for name, check in cls._spec.items():
            label = f"{prefix}[{name!r}]" if prefix else name
            checked[name] = check(hyper[name], label)
        cls._check_combination(checked)
        return checked

    def _reset(self):
        self._step = 0
        self._size = None
        self._dtype = None
        self._buffers = {}

    def _bind(self, size, dtype):
        self._size, self._dtype = int(size), np.dtype(dtype)
        self._buffers = {name: np.full(size, fill, dtype=dtype)
                         for name, fill in self._buffer_fills(self._hyper).items()}

    def _buffer(self, name):
        """The named buffer, or an empty array when this configuration has none."""
        buffer = self._buffers.get(name)
        return buffer if buffer is not None else np.empty(0, dtype=self._dtype)

    @staticmethod
    def _size_and_dtype(size, dtype):
        if isinstance(size, bool) or not isinstance(size, numbers.Integral) or size < 1:
            raise ValueError(f"state['size'] must be an integer >= 1, got {size!r}")
        if not isinstance(dtype, str) or dtype not in _FLOAT_DTYPES:
            raise ValueError(f"state['dtype'] must be 'float32' or 'float64', got {dtype!r}")
        return int(size), _FLOAT_DTYPES[dtype]

    def _check_arrays(self, params, grads):
        flat_buffer(params, "params")
        flat_buffer(grads, "grads", dtype=params.dtype, size=params.size, writeable=False)
        if params.size == 0:
            raise ValueError("params must hold at least one element, got an empty array")
        if self._dtype is not None and (params.size != self._size or params.dtype != self._dtype):
            raise ValueError(
                f"this {type(self).__name__} holds state for {self._size} {self._dtype.name} "
                f"parameters, got {params.size} {params.dtype.name}; call zero_state() "
                f"or use a new optimizer")


class SGD(Optimizer):
    """Stochastic gradient descent with optional (Nesterov) momentum and L2 weight
    decay, as torch.optim.SGD."""

    _spec = {"lr": _non_negative, "momentum": _non_negative,
             "dampening": _closed_fraction, "weight_decay": _non_negative,
             "nesterov": flag}

    def __init__(self, lr=1e-3, momentum=0.0, dampening=0.0, weight_decay=0.0,
                 nesterov=False):
        super().__init__(lr=lr, momentum=momentum, dampening=dampening,
                         weight_decay=weight_decay, nesterov=nesterov)

    @classmethod
    def _check_combination(cls, hyper):
        if hyper["nesterov"] and (hyper["momentum"] <= 0.0 or hyper["dampening"] != 0.0):
            raise ValueError("nesterov=True needs momentum > 0 and dampening == 0, got "
                             f"momentum={hyper['momentum']}, dampening={hyper['dampening']}")

    @staticmethod
    def _buffer_fills(hyper):
        return {"momentum_buffer": 0.0} if hyper["momentum"] != 0.0 else {}

    def _update(self, params, grads, step):
        h = self._hyper
        _kernels.sgd_update(params, grads, self._buffer("momentum_buffer"), step, h["lr"],
                            h["momentum"], h["dampening"], h["nesterov"], h["weight_decay"])


class Adam(Optimizer):
    """Adam with torch's bias correction; weight_decay is an L2 term added to the
    gradient (torch.optim.Adam). amsgrad keeps the running maximum of the second
    moment."""

    _spec = {"lr": _non_negative, "betas": _betas, "eps": positive_float,
             "weight_decay": _non_negative, "amsgrad": flag}
    _decoupled = False

    def __init__(self, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0,
                 amsgrad=False):
        super().__init__(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                         amsgrad=amsgrad)

    @staticmethod
    def _buffer_fills(hyper):
        fills = {"exp_avg": 0.0, "exp_avg_sq": 0.0}
        if hyper["amsgrad"]:
            fills["max_exp_avg_sq"] = 0.0
        return fills

    def _update(self, params, grads, step):
        h = self._hyper
        beta1, beta2 = h["betas"]
        _kernels.adam_update(params, grads, self._buffers["exp_avg"],
                             self._buffers["exp_avg_sq"], self._buffer("max_exp_avg_sq"),
                             step, h["lr"], beta1, beta2, h["eps"], h["weight_decay"],
                             self._decoupled, h["amsgrad"])


class AdamW(Adam):
    """Adam with decoupled weight decay (params *= 1 - lr*weight_decay before the
    Adam step), as torch.optim.AdamW."""

    _decoupled = True

    def __init__(self, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2,
                 amsgrad=False):
        super().__init__(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                         amsgrad=amsgrad)


class Adagrad(Optimizer):
    """Adagrad with learning-rate decay lr / (1 + (step-1)*lr_decay), as
    torch.optim.Adagrad."""

    _spec = {"lr": _non_negative, "lr_decay": _non_negative,
             "weight_decay": _non_negative, "initial_accumulator_value": _non_negative,
             "eps": positive_float}

    def __init__(self, lr=1e-2, lr_decay=0.0, weight_decay=0.0,
                 initial_accumulator_value=0.0, eps=1e-10):
        super().__init__(lr=lr, lr_decay=lr_decay, weight_decay=weight_decay,
                         initial_accumulator_value=initial_accumulator_value, eps=eps)

    @staticmethod
    def _buffer_fills(hyper):
        return {"sum": hyper["initial_accumulator_value"]}

    def _update(self, params, grads, step):
        h = self._hyper
        _kernels.adagrad_update(params, grads, self._buffers["sum"], step, h["lr"],
                                h["lr_decay"], h["weight_decay"], h["eps"])


class RMSprop(Optimizer):
    """RMSprop with optional momentum and centering, as torch.optim.RMSprop."""

    _spec = {"lr": _non_negative, "alpha": _closed_fraction, "eps": positive_float,
             "weight_decay": _non_negative, "momentum": _non_negative,
             "centered": flag}

    def __init__(self, lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0.0, momentum=0.0,
                 centered=False):
        super().__init__(lr=lr, alpha=alpha, eps=eps, weight_decay=weight_decay,
                         momentum=momentum, centered=centered)

    @staticmethod
    def _buffer_fills(hyper):
        fills = {"square_avg": 0.0}
        if hyper["centered"]:
            fills["grad_avg"] = 0.0
        if hyper["momentum"] > 0.0:
            fills["momentum_buffer"] = 0.0
        return fills

    def _update(self, params, grads, step):
        h = self._hyper
        _kernels.rmsprop_update(params, grads, self._buffers["square_avg"],
                                self._buffer("grad_avg"), self._buffer("momentum_buffer"),
                                h["lr"], h["alpha"], h["eps"], h["weight_decay"],
                                h["momentum"], h["centered"])
