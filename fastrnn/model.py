"""SequenceModel: a recurrent layer, a linear head, a loss and an optimizer, trained
by one call per batch (forward, loss, BPTT, clipping and update), and its checkpoints.

The training loop over long sequences lives in fastrnn.training, the character
vocabulary and sampling in fastrnn.text; the model's methods of the same names
call them."""

import contextlib
import math
import numbers
import os
import tempfile

import numpy as np

from . import _threads
from . import losses as _losses
from . import optim as _optim
from . import text as _text
from . import training as _training
from ._grad_mode import no_grad
from ._kernels.clipping import clip_by_norm, clip_by_value, global_norm
from ._kernels.linear import linear_backward, linear_forward
from ._validate import (
    absent,
    as_dtype,
    float_array,
    fraction,
    int_array,
    int_in_range,
    non_negative_float,
    one_of,
    positive_int,
    seed_sequence,
    shape_error,
)
from .io import load_checkpoint, save_checkpoint
from .layers import CELL_NAMES, layer_for_cell
from .text import UNKNOWN, Vocabulary

__all__ = ["SequenceModel", "load", "CELLS", "OUTPUTS", "LOSSES", "UNKNOWN"]

CELLS = CELL_NAMES
OUTPUTS = ("sequence", "last")
LOSSES = ("cross_entropy", "mse", "bce")
_OPTIMIZERS = {"SGD": _optim.SGD, "Adam": _optim.Adam, "AdamW": _optim.AdamW,
               "Adagrad": _optim.Adagrad, "RMSprop": _optim.RMSprop}


class SequenceModel:
    """Recurrent layer + linear head + loss + optimizer (see DESIGN.md, "Training").

    Parameters are named like a torch module with attributes `rnn` and `head`
    ("rnn.weight_ih_l0", ..., "head.weight", "head.bias") and live in one flat
    buffer, so clipping and the optimizer update are one kernel call each.

    Non-finite values: when a training step's loss or gradient norm is NaN or inf,
    the update is skipped (weights and optimizer state untouched), the step is
    counted in `skipped_steps`, and train_step returns the non-finite loss.
    """

    def __init__(self, cell="lstm", input_size=None, hidden_size=64, output_size=1,
                 num_layers=1, bidirectional=False, vocab_size=None, output="sequence",
                 loss="cross_entropy", optimizer=None, max_norm=None, clip_value=None,
                 dropout=0.0, dtype=np.float32, seed=None):
        one_of(cell, CELLS, "cell")
        one_of(output, OUTPUTS, "output")
        one_of(loss, LOSSES, "loss")
        if vocab_size is not None:
            vocab_size = int_in_range(vocab_size, "vocab_size", 2)
            input_size = vocab_size
        elif input_size is None:
            raise ValueError("input_size is required when vocab_size is not given")
        optimizer = _optim.Adam(lr=1e-3) if optimizer is None else optimizer
        if not isinstance(optimizer, _optim.Optimizer):
            raise TypeError(f"optimizer must be a fastrnn.optim optimizer, got "
                            f"{type(optimizer).__name__}")
        self.config = dict(cell=cell, input_size=positive_int(input_size, "input_size"),
                           hidden_size=positive_int(hidden_size, "hidden_size"),
                           output_size=positive_int(output_size, "output_size"),
                           num_layers=positive_int(num_layers, "num_layers"),
                           bidirectional=bool(bidirectional), vocab_size=vocab_size,
                           output=output, loss=loss,
                           max_norm=non_negative_float(max_norm, "max_norm"),
                           clip_value=non_negative_float(clip_value, "clip_value"),
                           dropout=fraction(dropout, "dropout"),
                           dtype=as_dtype(dtype).name,
                           seed=_seed_for_config(seed))
        if loss == "cross_entropy" and self.config["output_size"] < 2:
            raise ValueError("output_size must be >= 2 (the number of classes) for "
                             f"cross_entropy, got {output_size}")
        self.dtype = as_dtype(dtype)
        self.optimizer = optimizer
        self.vocabulary = None  # a text.Vocabulary for character models (from_text)
        self.skipped_steps = 0
        self.grad_norm = None
        init_seed, layer_seed = seed_sequence(seed).spawn(2)
        self.rnn = layer_for_cell(cell, self.config["input_size"], hidden_size,
                                  num_layers=num_layers, bidirectional=bidirectional,
                                  dropout=dropout, dtype=self.dtype, seed=layer_seed)
        features = self.rnn.num_directions * self.config["hidden_size"]
        n_rnn = self.rnn.flat_params.size
        n_out = self.config["output_size"]
        self._flat_params = np.empty(n_rnn + n_out * features + n_out, dtype=self.dtype)
        self._flat_grads = np.zeros_like(self._flat_params)
        self.rnn.bind_buffers(self._flat_params[:n_rnn], self._flat_grads[:n_rnn])
        self.head_weight = self._flat_params[n_rnn:n_rnn + n_out * features].reshape(n_out,
                                                                                   features)
        self.head_bias = self._flat_params[n_rnn + n_out * features:]
        self._head_weight_grad = self._flat_grads[n_rnn:n_rnn + n_out * features].reshape(
            n_out, features)
        self._head_bias_grad = self._flat_grads[n_rnn + n_out * features:]
        bound = 1.0 / math.sqrt(features)  # torch.nn.Linear's default init
        rng = np.random.default_rng(init_seed)
        self._flat_params[n_rnn:] = rng.uniform(-bound, bound, self._flat_params.size - n_rnn)

    # ------------------------------------------------------------------ parameters
    @property
    def params(self):
        named = {f"rnn.{name}": value for name, value in self.rnn.params.items()}
        named["head.weight"], named["head.bias"] = self.head_weight, self.head_bias
        return named

    @property
    def grads(self):
        named = {f"rnn.{name}": value for name, value in self.rnn.grads.items()}
        named["head.weight"], named["head.bias"] = self._head_weight_grad, self._head_bias_grad
        return named

    @property
    def flat_params(self):
        """Every parameter (the layer's, then the head's) in one flat array; the
        arrays in `params` are views of it."""
        return self._flat_params

    @property
    def flat_grads(self):
        """Every gradient in one flat array, laid out as `flat_params`."""
        return self._flat_grads

    @property
    def num_parameters(self):
        """The number of trained numbers (the recurrent layer's and the head's)."""
        return self._flat_params.size

    def state_dict(self):
        return {name: value.copy() for name, value in self.params.items()}

    def load_state_dict(self, state_dict):
        """Load torch-named weights; checks everything before writing anything."""
        head = {k: state_dict[k] for k in ("head.weight", "head.bias") if k in state_dict}
        rnn = {k[4:]: v for k, v in state_dict.items() if k.startswith("rnn.")}
        extra = sorted(set(state_dict) - set(self.params))
        if extra or len(head) != 2:
            raise KeyError(f"state_dict keys do not match SequenceModel: unexpected {extra}, "
                           f"missing {sorted({'head.weight', 'head.bias'} - set(head))}")
        staged = {}
        for name, target in (("head.weight", self.head_weight), ("head.bias", self.head_bias)):
            value = float_array(head[name], f"state_dict[{name!r}]", self.dtype)
            if value.shape != target.shape:
                raise shape_error(f"state_dict[{name!r}]", target.shape, value.shape)
            staged[name] = value
        self.rnn.load_state_dict(rnn)  # validates fully before writing
        self.head_weight[...] = staged["head.weight"]
        self.head_bias[...] = staged["head.bias"]

    def zero_grad(self):
        self._flat_grads[:] = 0.0

    # ---------------------------------------------------------------------- inputs
    def _inputs(self, x, lengths):
        """(T, B, I) float input and whether x was unbatched. The layer checks the
        lengths (and that x holds a step and a sequence) when it is called."""
        vocab_size = self.config["vocab_size"]
        if vocab_size is not None:
            ids = int_array(x, "x", "token ids", 0, vocab_size - 1, f"vocab_size {vocab_size}")
            if ids.ndim not in (1, 2):
                raise ValueError(f"x must be token ids of shape (T, B) or (T,), got shape "
                                 f"{ids.shape}")
            unbatched = ids.ndim == 1
            ids = ids[:, None] if unbatched else ids
            x = np.zeros(ids.shape + (vocab_size,), dtype=self.dtype)
            np.put_along_axis(x, ids[..., None].astype(np.intp), 1.0, axis=2)
        else:
            x = float_array(x, "x", self.dtype)
            if x.ndim not in (2, 3):
                raise ValueError(f"x must be (T, B, {self.config['input_size']}) or "
                                 f"(T, {self.config['input_size']}), got shape {x.shape}")
            unbatched = x.ndim == 2
            x = x[:, None, :] if unbatched else x
        if unbatched:
            absent(lengths, "lengths", "for unbatched input")
        return x, unbatched

    def _targets(self, y, n_steps, batch, unbatched):
        """Targets flattened to rows matching the head's output rows."""
        last = self.config["output"] == "last"
        n_out = self.config["output_size"]
        if self.config["loss"] == "cross_entropy":
            expected = ((batch,) if last else (n_steps, batch))
            if unbatched:
                expected = () if last else (n_steps,)
            y = int_array(y, "y", "class ids", 0, n_out - 1, f"output_size {n_out}")
            if y.shape != expected:
                raise shape_error("y", expected, y.shape)
            return np.ascontiguousarray(y.reshape(-1), dtype=np.int64)
        expected = (batch, n_out) if last else (n_steps, batch, n_out)
        if unbatched:
            expected = (n_out,) if last else (n_steps, n_out)
        y = float_array(y, "y", self.dtype)
        if y.shape != expected:
            raise shape_error("y", expected, y.shape)
        return y.reshape(-1, n_out)

    # --------------------------------------------------------------------- forward
    def _forward(self, x, lengths, state):
        """Returns (logits rows, features rows, row mask, final state, lengths as an
        array or None)."""
        n_steps, batch = x.shape[:2]
        out, final = self.rnn(x, state, lengths=lengths)
        lengths = None if lengths is None else np.asarray(lengths)  # the layer checked them
        if self.config["output"] == "last":
            h_n, _ = self.rnn.state_parts(final)
            top = h_n[-self.rnn.num_directions:]  # (D, B, H): each direction's final state
            features = np.ascontiguousarray(top.transpose(1, 0, 2).reshape(batch, -1))
            mask = None
        else:
            features = out.reshape(n_steps * batch, -1)
            mask = None
            if lengths is not None:
                mask = (np.arange(n_steps)[:, None] < lengths[None, :]).reshape(-1)
                mask = mask.astype(self.dtype)
        # Huge weights (a diverging run) may overflow here: inf/NaN then flow to the
        # loss and the step is skipped (kernels raise no floating-point warnings).
        logits = np.empty((features.shape[0], self.config["output_size"]), dtype=self.dtype)
        with self._blas_threads(features.shape[0]):
            linear_forward(features, self.head_weight, self.head_bias, logits)
        return logits, features, mask, final, lengths

    def _blas_threads(self, rows):
        """Thread settings for the head's products (see fastrnn._threads)."""
        return _threads.kernel_threads(rows * self.head_weight.size)

    @contextlib.contextmanager
    def _inference(self):
        """Eval mode (no dropout) and no_grad (no activations kept) for the block."""
        was_training = self.rnn.training
        self.rnn.eval()
        try:
            with no_grad():
                yield
        finally:
            self.rnn.train(was_training)

    def predict(self, x, lengths=None, state=None, return_state=False):
        """Logits/outputs: (T, B, O) for output="sequence", (B, O) for "last".

        `state` is an initial state as the layer takes it; with `return_state`
        the result is (outputs, final state), so that a stream of calls (sampling,
        scoring a long sequence window by window) carries the state along.
        """
        x, unbatched = self._inputs(x, lengths)
        n_steps, batch = x.shape[:2]
        with self._inference():
            logits, _, _, final, lengths = self._forward(x, lengths, state)
        n_out = self.config["output_size"]
        if self.config["output"] == "last":
            outputs = logits[0] if unbatched else logits
        else:
            logits = logits.reshape(n_steps, batch, n_out)
            if lengths is not None:
                logits[np.arange(n_steps)[:, None] >= lengths[None, :]] = 0.0
            outputs = logits[:, 0] if unbatched else logits
        return (outputs, final) if return_state else outputs

    # -------------------------------------------------------------------- training
    def _loss(self, logits, targets, mask):
        name = self.config["loss"]
        if name == "cross_entropy":
            return _losses.cross_entropy(logits, targets, mask)
        if name == "bce":
            return _losses.binary_cross_entropy(logits, targets, mask)
        return _losses.mse(logits, targets, mask)

    def train_step(self, x, y, lengths=None, state=None):
        """One fused training step: forward, loss, BPTT, clipping, update. Returns the loss.

        `state` is an optional initial state (as the layer takes it); the final state
        is kept in `self.last_state` for truncated BPTT.
        """
        loss = self.compute_gradients(x, y, lengths=lengths, state=state)
        self.apply_gradients(loss)
        return loss

    def compute_gradients(self, x, y, lengths=None, state=None):
        """The first half of train_step: forward, loss and BPTT, leaving this batch's
        gradients of the loss in `flat_grads` (unclipped) and the final state in
        `last_state`; the weights are not touched. Returns the loss.

        With apply_gradients, for callers that combine the gradients of several
        batches first (fastrnn.distributed sums them over MPI ranks)."""
        x, unbatched = self._inputs(x, lengths)
        n_steps, batch = x.shape[:2]
        targets = self._targets(y, n_steps, batch, unbatched)
        self.rnn.train(True)
        logits, features, mask, final, _ = self._forward(x, lengths, state)
        loss, d_logits = self._loss(logits, targets, mask)
        self.zero_grad()
        d_features = np.empty_like(features)
        with self._blas_threads(features.shape[0]):
            linear_backward(d_logits, features, self.head_weight, self._head_weight_grad,
                            self._head_bias_grad, d_features)
        if self.config["output"] == "last":
            directions, hidden = self.rnn.num_directions, self.config["hidden_size"]
            rows = self.rnn.num_layers * directions
            d_hn = np.zeros((rows, batch, hidden), dtype=self.dtype)
            d_hn[-directions:] = d_features.reshape(batch, directions, hidden).transpose(1, 0, 2)
            self.rnn.backward_states(None, d_hn)
        else:
            self.rnn.backward_states(d_features.reshape(n_steps, batch, -1))
        self.last_state = final
        return float(loss)

    def apply_gradients(self, loss):
        """The second half of train_step: clip `flat_grads` as configured and let the
        optimizer update the weights, unless `loss` or the gradients are not finite
        (then the step is skipped and counted in `skipped_steps`). Sets `grad_norm`
        (the pre-clip norm); returns whether the weights were updated."""
        finite = math.isfinite(loss)
        if self.config["clip_value"] is not None:
            # Value clipping would turn an inf gradient finite: look before clipping.
            finite = finite and math.isfinite(global_norm(self._flat_grads))
            clip_by_value(self._flat_grads, self.config["clip_value"])
        if self.config["max_norm"] is not None:
            norm = clip_by_norm(self._flat_grads, self.config["max_norm"])
        else:
            norm = global_norm(self._flat_grads)
        self.grad_norm = float(norm)
        if not (finite and math.isfinite(norm)):
            self.skipped_steps += 1  # a non-finite step never reaches the weights
            return False
        self.optimizer.step(self._flat_params, self._flat_grads)
        return True

    def fit(self, data, *, window=64, batch_size=16, epochs=None, steps=None, time_budget=None,
            validation=None, progress=True, callback=None):
        """Truncated BPTT over one long token sequence or a list of them; see
        fastrnn.training.fit. Returns the history dict ("loss", "val_loss")."""
        return _training.fit(self, data, window=window, batch_size=batch_size, epochs=epochs,
                             steps=steps, time_budget=time_budget, validation=validation,
                             progress=progress, callback=callback)

    def evaluate(self, data, *, window=64, batch_size=16):
        """Mean next-token cross-entropy over `data`; see fastrnn.training.evaluate."""
        return _training.evaluate(self, data, window=window, batch_size=batch_size)

    # ------------------------------------------------------------------------ text
    @classmethod
    def from_text(cls, text, **options):
        """A next-character model whose vocabulary is the characters of `text`.

        Id 0 is reserved for characters outside the vocabulary.
        """
        vocabulary = Vocabulary.from_text(text)
        options.setdefault("output", "sequence")
        options.setdefault("loss", "cross_entropy")
        model = cls(vocab_size=vocabulary.size, output_size=vocabulary.size, **options)
        model.vocabulary = vocabulary
        return model

    @property
    def vocab(self):
        """The vocabulary's characters as a list (id k + 1 is vocab[k]), or None."""
        return None if self.vocabulary is None else list(self.vocabulary.chars)

    def encode(self, text):
        """Character ids (int64); unknown characters map to the reserved id 0."""
        return _text.vocabulary_of(self).encode(text)

    def decode(self, ids):
        """The characters of `ids`; the reserved id 0 decodes to UNKNOWN."""
        return _text.vocabulary_of(self).decode(ids)

    def generate(self, prime="", n=200, temperature=0.8, top_k=None, seed=0):
        """Sample `n` characters after `prime`; see fastrnn.text.generate."""
        return _text.generate(self, prime, n=n, temperature=temperature, top_k=top_k,
                              seed=seed)

    # ------------------------------------------------------------------ checkpoints
    def save(self, path):
        """Write weights, optimizer state, vocabulary and configuration to `path`
        (a portable .npz; atomic: a crash mid-save leaves the previous file intact)."""
        optimizer_state = self.optimizer.state_dict()
        arrays = {f"param/{k}": v for k, v in self.params.items()}
        scalars = {}
        for key, value in optimizer_state.items():
            if isinstance(value, np.ndarray):
                arrays[f"optim/{key}"] = value
            else:
                scalars[key] = list(value) if isinstance(value, tuple) else value
        config = dict(self.config)
        meta = dict(kind="SequenceModel", config=config, vocab=self.vocab,
                    optimizer=scalars, skipped_steps=self.skipped_steps,
                    dropout_rng=self.rnn.dropout_state)
        save_checkpoint(path, arrays, meta)

    @classmethod
    def load(cls, path):
        arrays, meta = load_checkpoint(path)
        if meta.get("kind") != "SequenceModel":
            raise ValueError(f"{path!r} holds a {meta.get('kind')!r}, not a SequenceModel")
        scalars = dict(meta["optimizer"])
        name = scalars.get("optimizer")
        if name not in _OPTIMIZERS:
            raise ValueError(f"{path!r}: unknown optimizer {name!r}")
        hyper = {k: (tuple(v) if isinstance(v, list) else v) for k, v in scalars.items()
                 if k not in ("optimizer", "step", "size", "dtype")}
        optimizer = _OPTIMIZERS[name](**hyper)
        config = dict(meta["config"])
        vocab = meta.get("vocab")
        model = cls(optimizer=optimizer, **config)
        if vocab is not None:
            model.vocabulary = Vocabulary(vocab)
        model.load_state_dict({k[len("param/"):]: v for k, v in arrays.items()
                               if k.startswith("param/")})
        state = {k: (tuple(v) if isinstance(v, list) else v) for k, v in scalars.items()}
        state.update({k[len("optim/"):]: v for k, v in arrays.items() if k.startswith("optim/")})
        optimizer.load_state_dict(state)
        model.skipped_steps = int(meta.get("skipped_steps", 0))
        if meta.get("dropout_rng") is not None:
            model.rnn.dropout_state = meta["dropout_rng"]
        return model

    def to_bytes(self):
        """The checkpoint `save` writes, as bytes: for pickling a model and for
        sending it to other processes."""
        with tempfile.TemporaryDirectory() as folder:
            path = os.path.join(folder, "model.fastrnn")
            self.save(path)
            with open(path, "rb") as file:
                return file.read()

    @classmethod
    def from_bytes(cls, data):
        """The model `to_bytes` gave, checked as `load` checks a file."""
        with tempfile.TemporaryDirectory() as folder:
            path = os.path.join(folder, "model.fastrnn")
            with open(path, "wb") as file:
                file.write(data)
            return cls.load(path)

    def __repr__(self):
        c = self.config
        return (f"SequenceModel(cell={c['cell']!r}, hidden_size={c['hidden_size']}, "
                f"num_layers={c['num_layers']}, output_size={c['output_size']}, "
                f"vocab_size={c['vocab_size']}, dtype={c['dtype']})")


def load(path):
    """Load a SequenceModel saved with `model.save(path)`."""
    return SequenceModel.load(path)


def _seed_for_config(seed):
    """The seed as a checkpoint's JSON config can hold it: numpy integers become ints;
    a SeedSequence is not kept (a checkpoint restores weights and dropout RNG state)."""
    if seed is None or isinstance(seed, np.random.SeedSequence):
        return None
    if isinstance(seed, numbers.Integral) and not isinstance(seed, bool):
        return int(seed)
    try:
        return [int(part) for part in seed]
    except (TypeError, ValueError):
        return seed  # not a valid seed: seed_sequence() reports it
