"""Training a next-token SequenceModel on long sequences: truncated BPTT over
parallel streams (`fit`), validation (`evaluate`), a time budget and a progress line."""

import sys
import time

import numpy as np

from . import losses
from ._compile import announce_compilation
from ._validate import non_negative_float, positive_int


def fit(model, data, *, window=64, batch_size=16, epochs=None, steps=None, time_budget=None,
        validation=None, progress=True, callback=None):
    """Truncated BPTT over a long token sequence (a str for text models, or ids),
    or over a set of them (a list or tuple of such sequences).

    Each sequence is cut into `batch_size` parallel streams; each training step
    takes the next `window` steps of every stream and carries the hidden state
    over from the previous window (reset at the start of each sequence and each
    epoch). Stops after `epochs`, or `steps` steps, or `time_budget` seconds,
    whichever comes first; with none of them given, after one epoch. Returns a
    history dict with the loss of every step ("loss") and, when `validation`
    (same kind as data) is given, the validation loss after each epoch and when
    training stops ("val_loss"). `callback(step, loss)` is called after each step.
    `progress` writes a progress line to stderr, after a one-line notice when
    the first steps compile kernels (a process that finds them in numba's
    cache prints none).
    """
    if model.config["vocab_size"] is None or model.config["output"] != "sequence":
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
    stream_sets = _stream_sets(model, data, batch_size, window, "data")
    if validation is not None:  # fail now, not after a whole epoch of training
        _stream_sets(model, validation, batch_size, window, "validation")
    history = {"loss": [], "val_loss": []}
    start = time.perf_counter()
    n_windows = sum((streams.shape[0] - 1) // window for streams in stream_sets)
    total = n_windows * epochs if steps is None else min(steps, n_windows * epochs)
    if steps is None and time_budget is not None:
        total = None  # the time budget decides: the progress line shows no total

    def validate():
        history["val_loss"].append(
            evaluate(model, validation, window=window, batch_size=batch_size))

    with announce_compilation(sys.stderr if progress else None):
        for _ in range(epochs):
            for first, x, y in _windows(stream_sets, window):
                state = None if first else model.last_state
                loss = model.train_step(x, y, state=state)
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
                    validate()
                continue
            if validation is not None:  # stopped mid-epoch: score where training ended
                validate()
            break
    if progress:
        sys.stderr.write("\n")
    return history


def evaluate(model, data, *, window=64, batch_size=16):
    """Mean next-token cross-entropy over `data` (one sequence or a list of them),
    carrying the state across windows as `fit` does."""
    stream_sets = _stream_sets(model, data, batch_size, window, "data")
    n_classes = model.config["output_size"]
    total, count, state = 0.0, 0, None
    for first, x, y in _windows(stream_sets, window):
        logits, state = model.predict(x, state=None if first else state, return_state=True)
        loss, _ = losses.cross_entropy(logits.reshape(-1, n_classes),
                                       y.reshape(-1).astype(np.int64))
        total += loss * y.size
        count += y.size
    return total / max(count, 1)


def _token_ids(model, data, name):
    if isinstance(data, str):
        return model.encode(data)
    ids = np.asarray(data)
    if ids.ndim != 1 or ids.dtype.kind not in "iu":
        raise TypeError(f"{name} must be a str or a 1-D integer array of token ids")
    return ids.astype(np.int64)


def _stream_sets(model, data, batch_size, window, name):
    """(length, batch_size) stream arrays for one sequence or each of a list."""
    if isinstance(data, (list, tuple)):
        if not data:
            raise ValueError(f"{name} must hold at least one sequence, got an empty list")
        return [_streams(_token_ids(model, item, f"{name}[{k}]"), batch_size, window,
                         f"{name}[{k}]") for k, item in enumerate(data)]
    return [_streams(_token_ids(model, data, name), batch_size, window, name)]


def _streams(ids, batch_size, window, name):
    length = (ids.size - 1) // batch_size
    if length < window + 1:
        raise ValueError(f"{name} is too short: {ids.size} tokens give {batch_size} streams "
                         f"of {length}, need at least window + 1 = {window + 1}")
    return np.ascontiguousarray(ids[:length * batch_size].reshape(batch_size, length).T)


def _windows(stream_sets, window):
    """(first window of its sequence?, x, y) for every training window, in order."""
    for streams in stream_sets:
        for k in range((streams.shape[0] - 1) // window):
            yield (k == 0, streams[k * window:(k + 1) * window],
                   streams[k * window + 1:(k + 1) * window + 1])


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
