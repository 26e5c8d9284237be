"""SequenceModel: a recurrent layer, a linear head, a loss and an optimizer, trained
by one call per batch (forward, loss, BPTT, clipping and update)."""

import contextlib
import math
import numbers
import sys
import time

import numpy as np

from . import _threads
from . import losses as _losses
from . import optim as _optim
from ._grad_mode import no_grad
from ._kernels.clipping import clip_by_norm, clip_by_value, global_norm
from ._kernels.linear import linear_backward, linear_forward
from ._validate import (
    as_dtype,
    float_array,
    lengths_array,
    non_negative_float,
    positive_int,
    seed_sequence,
)
from .io import load_checkpoint, save_checkpoint
from .layers import CELL_NAMES, LSTM, layer_for_cell

CELLS = CELL_NAMES
OUTPUTS = ("sequence", "last")
LOSSES = ("cross_entropy", "mse", "bce")
UNKNOWN = "\ufffd"  # decoded form of the reserved unknown-character id 0
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
        if cell not in CELLS:
            raise ValueError(f"cell must be one of {CELLS}, got {cell!r}")
        if output not in OUTPUTS:
            raise ValueError(f"output must be one of {OUTPUTS}, got {output!r}")
        if loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}")
        if vocab_size is not None:
            vocab_size = positive_int(vocab_size, "vocab_size", minimum=2)
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
                           dropout=non_negative_float(dropout, "dropout", allow_none=False),
                           dtype=as_dtype(dtype).name,
                           seed=_seed_for_config(seed))
        if loss == "cross_entropy" and self.config["output_size"] < 2:
            raise ValueError("output_size must be >= 2 (the number of classes) for "
                             f"cross_entropy, got {output_size}")
        self.dtype = as_dtype(dtype)
        self.optimizer = optimizer
        self.vocab = None
        self.skipped_steps = 0
        self.grad_norm = None
        init_seed, layer_seed = seed_sequence(seed).spawn(2)
        self.rnn = layer_for_cell(cell, self.config["input_size"], hidden_size,
                                  num_layers=num_layers, bidirectional=bidirectional,
                                  dropout=dropout, dtype=self.dtype, seed=layer_seed)
        features = self.rnn.num_directions * self.config["hidden_size"]
        n_rnn = self.rnn._flat_params.size
        n_out = self.config["output_size"]
        self._flat_params = np.empty(n_rnn + n_out * features + n_out, dtype=self.dtype)
        self._flat_grads = np.zeros_like(self._flat_params)
        self._flat_params[:n_rnn] = self.rnn._flat_params
        self.rnn._bind_buffers(self._flat_params[:n_rnn], self._flat_grads[:n_rnn])
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
                raise ValueError(f"state_dict[{name!r}] must have shape {target.shape}, "
                                 f"got {value.shape}")
            staged[name] = value
        self.rnn.load_state_dict(rnn)  # validates fully before writing
        self.head_weight[...] = staged["head.weight"]
        self.head_bias[...] = staged["head.bias"]

    def zero_grad(self):
        self._flat_grads[:] = 0.0

    # ---------------------------------------------------------------------- inputs
    def _inputs(self, x, lengths):
        """Validated (T, B, I) float input, int lengths, and whether x was unbatched."""
        vocab_size = self.config["vocab_size"]
        if vocab_size is not None:
            ids = np.asarray(x)
            if ids.dtype.kind not in "iu":
                raise TypeError(f"x must hold integer token ids for a vocabulary model, got "
                                f"dtype {ids.dtype}")
            if ids.ndim not in (1, 2):
                raise ValueError(f"x must be token ids of shape (T, B) or (T,), got shape "
                                 f"{ids.shape}")
            if ids.size and (ids.min() < 0 or ids.max() >= vocab_size):
                raise ValueError(f"x must hold token ids in [0, {vocab_size}), got values "
                                 f"from {ids.min()} to {ids.max()}")
            unbatched = ids.ndim == 1
            ids = ids[:, None] if unbatched else ids
            if ids.shape[0] == 0 or ids.shape[1] == 0:
                raise ValueError(f"x must have at least one step and one sequence, got shape "
                                 f"{ids.shape}")
            x = np.zeros(ids.shape + (vocab_size,), dtype=self.dtype)
            np.put_along_axis(x, ids[..., None].astype(np.intp), 1.0, axis=2)
        else:
            x = float_array(x, "x", self.dtype)
            if x.ndim not in (2, 3):
                raise ValueError(f"x must be (T, B, {self.config['input_size']}) or "
                                 f"(T, {self.config['input_size']}), got shape {x.shape}")
            unbatched = x.ndim == 2
            x = x[:, None, :] if unbatched else x
            if x.shape[0] == 0 or x.shape[1] == 0:
                raise ValueError(f"x must have at least one step and one sequence, got shape "
                                 f"{x.shape}")
        n_steps, batch = x.shape[:2]
        if lengths is not None:
            if unbatched:
                raise ValueError("lengths must be None for unbatched input")
            lengths = lengths_array(lengths, batch, n_steps)
        return x, lengths, unbatched

    def _targets(self, y, n_steps, batch, unbatched):
        """Targets flattened to rows matching the head's output rows."""
        last = self.config["output"] == "last"
        n_out = self.config["output_size"]
        if self.config["loss"] == "cross_entropy":
            expected = ((batch,) if last else (n_steps, batch))
            if unbatched:
                expected = () if last else (n_steps,)
            y = np.asarray(y)
            if y.dtype.kind not in "iu":
                raise TypeError(f"y must hold integer class ids for cross_entropy, got dtype "
                                f"{y.dtype}")
            if y.shape != expected:
                raise ValueError(f"y must have shape {expected}, got {y.shape}")
            if y.size and (y.min() < 0 or y.max() >= n_out):
                raise ValueError(f"y must hold class ids in [0, {n_out}), got values from "
                                 f"{y.min()} to {y.max()}")
            return np.ascontiguousarray(y.reshape(-1), dtype=np.int64)
        expected = (batch, n_out) if last else (n_steps, batch, n_out)
        if unbatched:
            expected = (n_out,) if last else (n_steps, n_out)
        y = float_array(y, "y", self.dtype)
        if y.shape != expected:
            raise ValueError(f"y must have shape {expected}, got {y.shape}")
        return y.reshape(-1, n_out)

    # --------------------------------------------------------------------- forward
    def _forward(self, x, lengths, state):
        """Returns (logits rows, features rows, row mask, final state)."""
        n_steps, batch = x.shape[:2]
        if isinstance(self.rnn, LSTM):
            out, final = self.rnn(x, state, lengths=lengths)
            h_n = final[0]
        else:
            out, final = self.rnn(x, state, lengths=lengths)
            h_n = final
        if self.config["output"] == "last":
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
        return logits, features, mask, final

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

    def predict(self, x, lengths=None, state=None):
        """Logits/outputs: (T, B, O) for output="sequence", (B, O) for "last"."""
        x, lengths, unbatched = self._inputs(x, lengths)
        n_steps, batch = x.shape[:2]
        with self._inference():
            logits, _, _, _ = self._forward(x, lengths, state)
        n_out = self.config["output_size"]
        if self.config["output"] == "last":
            return logits[0] if unbatched else logits
        logits = logits.reshape(n_steps, batch, n_out)
        if lengths is not None:
            logits[np.arange(n_steps)[:, None] >= lengths[None, :]] = 0.0
        return logits[:, 0] if unbatched else logits

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
        x, lengths, unbatched = self._inputs(x, lengths)
        n_steps, batch = x.shape[:2]
        targets = self._targets(y, n_steps, batch, unbatched)
        self.rnn.train(True)
        logits, features, mask, final = self._forward(x, lengths, state)
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
            d_state = (d_hn, None) if isinstance(self.rnn, LSTM) else d_hn
            self.rnn.backward(None, d_state)
        else:
            self.rnn.backward(d_features.reshape(n_steps, batch, -1))
        self.last_state = final
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
            return float(loss)
        self.optimizer.step(self._flat_params, self._flat_grads)
        return float(loss)

    def fit(self, data, *, window=64, batch_size=16, epochs=None, steps=None, time_budget=None,
            validation=None, progress=True, callback=None):
        """Truncated BPTT over a long token sequence (a str for text models, or ids),
        or over a set of them (a list or tuple of such sequences).

        Each sequence is cut into `batch_size` parallel streams; each training step
        takes the next `window` steps of every stream and carries the hidden state
        over from the previous window (reset at the start of each sequence and each
        epoch). Stops after `epochs`,
        or `steps` steps, or `time_budget` seconds, whichever comes first; with none
        of them given, after one epoch. Returns a history dict with the loss of
        every step ("loss") and, when `validation` (same kind as data) is given, the
        validation loss after each epoch and when training stops ("val_loss").
        """
        if self.config["vocab_size"] is None or self.config["output"] != "sequence":
            raise ValueError("fit trains next-token models: it needs vocab_size and "
                             "output='sequence'")
        window = positive_int(window, "window")
        batch_size = positive_int(batch_size, "batch_size")
        if epochs is None:
            epochs = 1 if steps is None and time_budget is None else sys.maxsize
        epochs = positive_int(epochs, "epochs")
        if steps is not None:
            steps = positive_int(steps, "steps")
        time_budget = non_negative_float(time_budget, "time_budget")
        stream_sets = self._stream_sets(data, batch_size, window, "data")
        if validation is not None:  # fail now, not after a whole epoch of training
            self._stream_sets(validation, batch_size, window, "validation")
        history = {"loss": [], "val_loss": []}
        start = time.perf_counter()
        n_windows = sum((streams.shape[0] - 1) // window for streams in stream_sets)
        total = n_windows * epochs if steps is None else min(steps, n_windows * epochs)
        if steps is None and time_budget is not None:
            total = None  # the time budget decides: the progress line shows no total
        for _ in range(epochs):
            for first, x, y in _windows(stream_sets, window):
                state = None if first else self.last_state
                loss = self.train_step(x, y, state=state)
                history["loss"].append(loss)
                done = len(history["loss"])
                if progress:
                    _progress(done, total, loss, time.perf_counter() - start)
                if callback is not None:
                    callback(done, loss)
                if (steps is not None and done >= steps) or \
                        (time_budget is not None and time.perf_counter() - start >= time_budget):
                    break
            else:
                if validation is not None:
                    history["val_loss"].append(
                        self.evaluate(validation, window=window, batch_size=batch_size))
                continue
            if validation is not None:  # stopped mid-epoch: score where training ended
                history["val_loss"].append(
                    self.evaluate(validation, window=window, batch_size=batch_size))
            break
        if progress:
            sys.stderr.write("\n")
        return history

    def evaluate(self, data, *, window=64, batch_size=16):
        """Mean next-token cross-entropy over `data` (one sequence or a list of them),
        carrying state across windows as `fit` does."""
        stream_sets = self._stream_sets(data, batch_size, window, "data")
        total, count, state = 0.0, 0, None
        with self._inference():
            for first, x, y in _windows(stream_sets, window):
                x_in, _, _ = self._inputs(x, None)
                logits, _, _, state = self._forward(x_in, None, None if first else state)
                loss, _ = _losses.cross_entropy(logits, y.reshape(-1).astype(np.int64))
                total += loss * y.size
                count += y.size
        return total / max(count, 1)

    def _token_ids(self, data, name):
        if isinstance(data, str):
            return self.encode(data)
        ids = np.asarray(data)
        if ids.ndim != 1 or ids.dtype.kind not in "iu":
            raise TypeError(f"{name} must be a str or a 1-D integer array of token ids")
        return ids.astype(np.int64)

    def _stream_sets(self, data, batch_size, window, name):
        """(length, batch_size) stream arrays for one sequence or each of a list."""
        if isinstance(data, (list, tuple)):
            if not data:
                raise ValueError(f"{name} must hold at least one sequence, got an empty list")
            return [self._streams(self._token_ids(item, f"{name}[{k}]"), batch_size, window,
                                  f"{name}[{k}]") for k, item in enumerate(data)]
        return [self._streams(self._token_ids(data, name), batch_size, window, name)]

    @staticmethod
    def _streams(ids, batch_size, window, name):
        length = (ids.size - 1) // batch_size
        if length < window + 1:
            raise ValueError(f"{name} is too short: {ids.size} tokens give {batch_size} streams "
                             f"of {length}, need at least window + 1 = {window + 1}")
        return np.ascontiguousarray(ids[:length * batch_size].reshape(batch_size, length).T)

    # ------------------------------------------------------------------------ text
    @classmethod
    def from_text(cls, text, **options):
        """A next-character model whose vocabulary is the characters of `text`.

        Id 0 is reserved for characters outside the vocabulary.
        """
        if not isinstance(text, str) or not text:
            raise ValueError("text must be a non-empty str")
        chars = sorted(set(text))
        options.setdefault("output", "sequence")
        options.setdefault("loss", "cross_entropy")
        model = cls(vocab_size=len(chars) + 1, output_size=len(chars) + 1, **options)
        model._set_vocab(chars)
        return model

    def _set_vocab(self, chars):
        self.vocab = list(chars)
        self._char_to_id = {c: k + 1 for k, c in enumerate(self.vocab)}

    def _require_vocab(self):
        if self.vocab is None:
            raise ValueError("this model has no character vocabulary: build it with "
                             "SequenceModel.from_text")

    def encode(self, text):
        """Character ids (int64); unknown characters map to the reserved id 0."""
        self._require_vocab()
        lookup = self._char_to_id
        return np.fromiter((lookup.get(c, 0) for c in text), dtype=np.int64, count=len(text))

    def decode(self, ids):
        self._require_vocab()
        ids = np.asarray(ids)
        if ids.size and ids.dtype.kind not in "iu":
            raise TypeError(f"ids must be integers, got dtype {ids.dtype}")
        if ids.size and (ids.min() < 0 or ids.max() > len(self.vocab)):
            raise ValueError(f"ids must lie in [0, {len(self.vocab)}], got values from "
                             f"{ids.min()} to {ids.max()}")
        table = [UNKNOWN] + self.vocab
        return "".join(table[int(k)] for k in ids.reshape(-1))

    def generate(self, prime="", n=200, temperature=0.8, top_k=None, seed=0):
        """Sample `n` characters after `prime`, one step at a time, carrying the state."""
        self._require_vocab()
        n = positive_int(n, "n", minimum=0)
        temperature = non_negative_float(temperature, "temperature", allow_none=False)
        if temperature == 0.0:
            raise ValueError("temperature must be > 0")
        if top_k is not None:
            top_k = positive_int(top_k, "top_k")
        rng = np.random.default_rng(seed)
        ids = self.encode(prime) if prime else np.zeros(1, dtype=np.int64)
        state = None
        out = []
        with self._inference():
            x, _, _ = self._inputs(ids[:, None], None)
            logits, _, _, state = self._forward(x, None, state)
            for _ in range(n):
                token = _sample(logits[-1], temperature, top_k, rng)
                out.append(token)
                x, _, _ = self._inputs(np.array([[token]]), None)
                logits, _, _, state = self._forward(x, None, state)
        return self.decode(np.array(out, dtype=np.int64))

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
                    dropout_rng=self.rnn._dropout_rng.bit_generator.state)
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
            model._set_vocab(vocab)
        model.load_state_dict({k[len("param/"):]: v for k, v in arrays.items()
                               if k.startswith("param/")})
        state = {k: (tuple(v) if isinstance(v, list) else v) for k, v in scalars.items()}
        state.update({k[len("optim/"):]: v for k, v in arrays.items() if k.startswith("optim/")})
        optimizer.load_state_dict(state)
        model.skipped_steps = int(meta.get("skipped_steps", 0))
        if meta.get("dropout_rng") is not None:
            model.rnn._dropout_rng.bit_generator.state = meta["dropout_rng"]
        return model

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


def _windows(stream_sets, window):
    """(first window of its sequence?, x, y) for every training window, in order."""
    for streams in stream_sets:
        for k in range((streams.shape[0] - 1) // window):
            yield (k == 0, streams[k * window:(k + 1) * window],
                   streams[k * window + 1:(k + 1) * window + 1])


def _sample(logits, temperature, top_k, rng):
    scores = logits.astype(np.float64) / temperature
    scores[0] = -np.inf  # never emit the unknown-character id
    if top_k is not None and top_k < scores.size - 1:
        cutoff = np.partition(scores, -top_k)[-top_k]
        scores[scores < cutoff] = -np.inf
    scores -= scores.max()
    probabilities = np.exp(scores)
    probabilities /= probabilities.sum()
    return int(rng.choice(scores.size, p=probabilities))


def _progress(done, total, loss, elapsed):
    if total is None:
        sys.stderr.write(f"\rstep {done} loss {loss:.4f} {elapsed:.0f}s")
        sys.stderr.flush()
        return
    width = 24
    filled = int(width * done / max(total, 1))
    sys.stderr.write(f"\r[{'#' * filled}{'.' * (width - filled)}] step {done}/{total} "
                     f"loss {loss:.4f} {elapsed:.0f}s")
    sys.stderr.flush()
