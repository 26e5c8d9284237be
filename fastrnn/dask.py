"""Batch inference with a SequenceModel over dask arrays, on any dask scheduler: a
dask.distributed cluster (a LocalCluster or a real one) or dask's local threads.

    from dask.distributed import Client
    import dask.array as da
    import fastrnn.dask

    client = Client("scheduler:8786")                  # or Client(LocalCluster(...))
    x = da.from_zarr("sequences.zarr")                 # (T, B, I), chunked along B
    y_hat = fastrnn.dask.predict("model.fastrnn", x)   # lazy: (T, B, O), B chunked as x
    y_hat.to_zarr("predictions.zarr")

The model travels as its checkpoint: bytes scattered to a dask.distributed cluster,
or one task of a local graph, so each worker receives it once. Each worker process
builds the model once, on the first chunk it scores, into a small per-process cache
keyed by a hash of the model's configuration and weights; the chunks it scores
later reuse it. `model_loads()` counts those builds.

Each worker's chunks run fastrnn's kernels on FASTRNN_NUM_THREADS threads (default:
all the cores the worker may use): on a machine shared by several worker processes,
give each its share in the workers' environment: `FASTRNN_NUM_THREADS=1 dask worker
...`, or LocalCluster(..., env={"FASTRNN_NUM_THREADS": "1"}). The latter is set after
a spawned worker has re-imported the script that started the cluster, so that script
must import fastrnn inside `if __name__ == "__main__":` (fastrnn reads the variable
when imported).

Hyperparameter sweeps need nothing from this module: fastrnn.sklearn's estimators
pickle (as their checkpoints), so scikit-learn's searches run on a cluster through
joblib's Dask backend::

    with joblib.parallel_config(backend="dask"):
        GridSearchCV(SequenceClassifier(), grid, n_jobs=-1).fit(X, y)

dask is an optional dependency: `pip install fastrnn[dask]`.
"""

import collections
import hashlib
import json
import os
import threading

import numpy as np

try:
    import dask
    import dask.array as da
    from dask.base import get_scheduler
except ImportError as error:  # optional: fastrnn itself never imports this module
    raise ImportError("fastrnn.dask needs dask: pip install fastrnn[dask]") from error

from ._validate import lengths_array
from .model import SequenceModel

__all__ = ["predict", "model_loads"]

# Models kept per worker process: a worker serving a few models at once keeps each
# loaded, and one serving many over its life does not grow without bound.
CACHED_MODELS = 4


def predict(model, x, lengths=None):
    """SequenceModel.predict over a dask array, chunk by chunk along the batch axis.

    model: a SequenceModel, or the path of a checkpoint it saved.
    x: a dask array (T, B, I), or token ids (T, B) for a vocabulary model, time first
    as SequenceModel takes it; its chunks along B are the units of work (T and I
    are gathered into one chunk each). lengths: None, or (B,) sequence lengths, a
    numpy or dask array. Returns a lazy dask array in the model's dtype, (T, B, O)
    for output="sequence" or (B, O) for "last", chunked along B as x.
    """
    checkpoint = None
    if isinstance(model, (str, os.PathLike)):
        with open(model, "rb") as file:
            checkpoint = file.read()
        # Built here for its configuration; the workers build their own.
        model = SequenceModel.from_bytes(checkpoint)
    elif not isinstance(model, SequenceModel):
        raise TypeError(f"model must be a fastrnn.SequenceModel or a checkpoint path, got "
                        f"{type(model).__name__}")
    config = model.config
    if not isinstance(x, da.Array):
        raise TypeError(f"x must be a dask array chunked along the batch axis (e.g. "
                        f"dask.array.from_array(x, chunks=(-1, 256, -1))), got "
                        f"{type(x).__name__}")
    token_ids = config["vocab_size"] is not None
    if token_ids and x.ndim != 2:
        raise ValueError(f"x must be token ids of shape (T, B) for a vocabulary model, got "
                         f"shape {x.shape}")
    if not token_ids and (x.ndim != 3 or x.shape[2] != config["input_size"]):
        raise ValueError(f"x must have shape (T, B, {config['input_size']}), got {x.shape}")
    x = x.rechunk({0: -1, 2: -1} if x.ndim == 3 else {0: -1})
    n_steps, batch = x.shape[:2]
    if lengths is not None:
        if isinstance(lengths, da.Array):
            if lengths.shape != (batch,):
                raise ValueError(f"lengths must have shape ({batch},) (one length per "
                                 f"sequence), got {lengths.shape}")
            lengths = lengths.rechunk((x.chunks[1],))
        else:
            lengths = da.from_array(lengths_array(lengths, batch, n_steps), chunks=(x.chunks[1],))
    if checkpoint is None:
        checkpoint = model.to_bytes()
    model_id = _identity(model)
    x_index = "tb" if token_ids else "tbi"
    out_index = "tbo" if config["output"] == "sequence" else "bo"
    return da.blockwise(
        _predict_chunk, out_index, x, x_index, lengths, None if lengths is None else "b",
        _shipped(checkpoint, model_id), None, model_id, None, new_axes={"o": config["output_size"]},
        concatenate=True, dtype=model.dtype, meta=np.empty((0,) * len(out_index), model.dtype))


def _shipped(checkpoint, model_id):
    """The checkpoint as one piece of data the chunks' tasks share, so that a worker
    receives it once whatever its chunks: scattered to the cluster when dask's
    scheduler now is a dask.distributed client (in the graph, dask warns above
    10 MB), else one task of the graph."""
    scheduler = get_scheduler()
    client = getattr(scheduler, "__self__", None)
    if client is not None and hasattr(client, "scatter"):  # a bound Client.get
        # A fresh key each time: with hash=True, scattering the same bytes again while
        # an earlier call's futures are being released can lose the data.
        return client.scatter(checkpoint, hash=False)
    return dask.delayed(checkpoint, name=f"fastrnn-checkpoint-{model_id}")


def model_loads():
    """{model id: times this process built that model}: on a worker
    (`client.run(fastrnn.dask.model_loads)`), 1 per model however many chunks it
    scored, unless the model left the cache (more than CACHED_MODELS in use)."""
    with _cache_lock:
        return dict(_loads)


# ------------------------------------------------------------- on the workers
_cache = collections.OrderedDict()  # model id -> (model, lock), least recently used first
_cache_lock = threading.Lock()
_loads = collections.Counter()


def _predict_chunk(x, lengths, checkpoint, model_id):
    model, model_lock = _cached_model(model_id, checkpoint)
    # One chunk at a time per model: predict switches the model to eval mode for
    # the call, which a second thread's call would switch back under it.
    with model_lock:
        return model.predict(x, lengths)


def _cached_model(model_id, checkpoint):
    with _cache_lock:  # held while loading: the worker's other threads wait, not load too
        entry = _cache.get(model_id)
        if entry is None:
            entry = _cache[model_id] = (SequenceModel.from_bytes(checkpoint),
                                        threading.Lock())
            _loads[model_id] += 1
            if len(_cache) > CACHED_MODELS:
                _cache.popitem(last=False)
        _cache.move_to_end(model_id)
        return entry


def _identity(model):
    """A key for what the model's predictions depend on (its configuration,
    vocabulary and weights); the checkpoint's own bytes would not do, as each save
    stamps the time into the archive."""
    digest = hashlib.sha256(json.dumps([model.config, model.vocab]).encode())
    digest.update(model.flat_params.tobytes())
    return digest.hexdigest()


