"""Data-parallel training of a SequenceModel on MPI (mpi4py).

Every rank holds the same model and trains on its share of each global batch: the
sequences (batch columns) [rank * B // N, (rank + 1) * B // N) of a batch of B on N
ranks. Each step computes the rank's gradients, sums them with ONE Allreduce of the
flat gradient buffer, and then clips and applies them identically on every rank, so
the weights stay the same everywhere::

    # mpiexec -n 4 python train.py
    model = fastrnn.SequenceModel(cell="lstm", input_size=8, ..., seed=0)
    trainer = fastrnn.distributed.DataParallel(model)   # MPI.COMM_WORLD
    for x, y, lengths in batches:                       # the same global batches on every rank
        loss = trainer.train_step(x, y, lengths)        # the global batch's loss
    trainer.save("model.fastrnn")                       # rank 0 writes

A step gives what one process training on the whole global batch gives, up to float
rounding: SequenceModel's loss is the mean over the batch's valid elements, so each
rank's gradient is weighted by its share of them (a shard with more or longer
sequences counts more) before the sum is divided by the global count. Text models
train with `fit` (truncated BPTT, as SequenceModel.fit; the command line's
`mpiexec -n N python -m fastrnn train ... --mpi`).

Failure: mpi4py's collectives have no timeout, so a rank whose peer died would wait
forever. Here every collective is non-blocking and polled until `timeout` seconds
pass; then the rank writes which collective timed out to stderr and calls
comm.Abort(1), which ends every rank of the job (a collective left pending cannot be
cancelled). An error raised in one rank's part of a step (bad input in its shard) is
announced to all ranks through the same Allreduce, so all of them raise at once.

Dropout draws its masks from a per-rank stream (rank r's is rank 0's jumped r
times), so shards never share masks; with dropout a run is statistically, not
numerically, that of one process.

mpi4py and an MPI are optional: `pip install fastrnn[mpi]`.
"""

import os
import sys
import time
import zlib

import numpy as np

try:
    from mpi4py import MPI
except ImportError as error:  # optional: fastrnn itself never imports this module
    raise ImportError("fastrnn.distributed needs mpi4py and an MPI library: "
                      "pip install fastrnn[mpi]") from error

from . import _threads
from . import training as _training
from ._validate import lengths_array, non_negative_float, positive_float, positive_int
from .model import SequenceModel

__all__ = ["DataParallel", "DEFAULT_TIMEOUT"]

# Long enough for the first step, which may compile kernels (10 s or more per cell and
# dtype on a 2-core machine; `fastrnn compile` fills the cache ahead of time).
DEFAULT_TIMEOUT = 120.0

# How long a collective's wait spins before it sleeps between polls.
_SPIN_SECONDS = 0.01

# How long a rank that gives up waits between writing why and aborting the job.
_ABORT_GRACE = 0.5

# Slots after the gradients in the Allreduce buffer: one reduction carries them all.
_LOSS_SUM, _COUNT, _FAILED, _STOP = range(4)
_EXTRA_SLOTS = 4


class DataParallel:
    """Trains `model` data-parallel over the ranks of `comm` (default MPI.COMM_WORLD).

    Every rank must build the same model (same configuration, and the same optimizer
    state, e.g. fresh or loaded from the same checkpoint); rank 0's weights are
    broadcast at construction, so an unseeded model starts the same everywhere.
    `timeout` (seconds, default DEFAULT_TIMEOUT) bounds each collective: it must
    exceed the longest time one rank may wait for another (the slowest rank's step;
    on the first step, kernel compilation).

    When FASTRNN_NUM_THREADS is not set, each rank's kernels get the cores of its
    node shared among the node's ranks, so the ranks never oversubscribe the CPUs.
    """

    def __init__(self, model, comm=None, *, timeout=DEFAULT_TIMEOUT):
        if not isinstance(model, SequenceModel):
            raise TypeError(f"model must be a fastrnn.SequenceModel, got {type(model).__name__}")
        comm = MPI.COMM_WORLD if comm is None else comm
        if not isinstance(comm, MPI.Intracomm):
            raise TypeError(f"comm must be an mpi4py intracommunicator (MPI.COMM_WORLD or "
                            f"one split from it), got {type(comm).__name__}")
        self.model = model
        self.comm = comm
        self.timeout = positive_float(timeout, "timeout")
        self.rank = comm.Get_rank()
        self.size = comm.Get_size()
        self._buffer = np.empty(model.num_parameters + _EXTRA_SLOTS, dtype=model.dtype)
        self._check_same_model()
        self._broadcast(model.flat_params)
        self._separate_dropout_streams()
        self._share_cores()

    # ------------------------------------------------------------------ set-up
    def _check_same_model(self):
        """Every rank must hold the same kind of model, or the Allreduce would mix
        unrelated numbers (or buffers of different sizes)."""
        model = self.model
        config = {key: value for key, value in model.config.items() if key != "seed"}
        described = repr((sorted(config.items()), model.vocab, repr(model.optimizer),
                          model.optimizer.step_count, model.num_parameters))
        fingerprint = zlib.crc32(described.encode())
        # max(f) and max(-f) in one reduction: all ranks agree iff max(f) == min(f).
        extremes = np.array([fingerprint, -fingerprint], dtype=np.int64)
        self._wait(self.comm.Iallreduce(MPI.IN_PLACE, extremes, op=MPI.MAX),
                   "the check that every rank holds the same model")
        if extremes[0] != -extremes[1]:
            raise ValueError("model must be the same on every rank (configuration, "
                             "vocabulary, optimizer and its step count): build it from the "
                             "same arguments or load the same checkpoint on every rank")

    def _separate_dropout_streams(self):
        state = self.model.rnn.dropout_state
        generator = getattr(np.random, state["bit_generator"])()
        generator.state = state
        self.model.rnn.dropout_state = generator.jumped(self.rank).state

    def _share_cores(self):
        if os.environ.get("FASTRNN_NUM_THREADS", "").strip():
            return  # the user's choice
        # All ranks are alive here (the model check completed), so this blocking
        # split cannot hang on a dead peer.
        node = self.comm.Split_type(MPI.COMM_TYPE_SHARED)
        ranks_here = node.Get_size()
        node.Free()
        _threads.set_num_threads(max(1, _threads.get_num_threads() // ranks_here))

    # ------------------------------------------------------------- collectives
    def _wait(self, request, what):
        """Poll `request` until it completes; past the timeout, abort the job."""
        started = time.monotonic()
        deadline = started + self.timeout
        while not request.Test():
            now = time.monotonic()
            if now > deadline:
                sys.stderr.write(
                    f"fastrnn.distributed: rank {self.rank} of {self.size}: {what} did not "
                    f"complete within timeout={self.timeout:g} s: another rank died, hung "
                    "or left the training loop early (or is slower than the timeout "
                    "allows); aborting the MPI job\n")
                sys.stderr.flush()
                # MPI_Abort kills the job at once; the launcher forwards what a rank
                # wrote only if it is given a moment.
                time.sleep(_ABORT_GRACE)
                self.comm.Abort(1)
            # A collective progresses only while its ranks call Test: spin at first (as
            # MPI's blocking calls do, but yielding the core to any other runnable
            # thread), so ranks a step apart meet within microseconds; a long wait
            # (a slower peer, compilation) polls every millisecond without a core.
            if now - started < _SPIN_SECONDS:
                os.sched_yield()
            else:
                time.sleep(1e-3)

    def _broadcast(self, array):
        self._wait(self.comm.Ibcast(array, root=0), "the broadcast of rank 0's weights")

    def _allreduce_buffer(self, what):
        self._wait(self.comm.Iallreduce(MPI.IN_PLACE, self._buffer, op=MPI.SUM), what)

    # ---------------------------------------------------------------- training
    def shard(self, batch_size):
        """The slice of a global batch of `batch_size` sequences this rank trains on."""
        batch_size = positive_int(batch_size, "batch_size")
        if batch_size < self.size:
            raise ValueError(f"batch_size must be at least the number of ranks ({self.size}) "
                             f"so that every rank trains on part of each batch, got "
                             f"{batch_size}")
        return slice(self.rank * batch_size // self.size,
                     (self.rank + 1) * batch_size // self.size)

    def train_step(self, x, y, lengths=None):
        """One data-parallel training step on a global batch; returns its loss.

        x, y and lengths are the whole batch, as SequenceModel.train_step takes them
        (x (T, B, I), or token ids (T, B)), the same on every rank; this rank trains
        on the sequences `shard(B)`. Collective: every rank must call it.
        """
        x = np.asarray(x)
        token_ids = self.model.config["vocab_size"] is not None
        if x.ndim != (2 if token_ids else 3):
            expected = "token ids (T, B)" if token_ids else "(T, B, I)"
            raise ValueError(f"x must be a batch, time first: {expected} (DataParallel "
                             f"splits it along B), got shape {x.shape}")
        n_steps, batch = x.shape[:2]
        rows = self.shard(batch)
        y = np.asarray(y)
        y_axis = 0 if self.model.config["output"] == "last" else 1
        if y.ndim <= y_axis or y.shape[y_axis] != batch:
            raise ValueError(f"y must hold the batch's {batch} sequences along axis {y_axis} "
                             f"(as SequenceModel.train_step takes it), got shape {y.shape}")
        y_rows = (rows,) if y_axis == 0 else (slice(None), rows)
        if lengths is not None:
            lengths = lengths_array(lengths, batch, n_steps)[rows]
        loss, _ = self._step(x[:, rows], y[y_rows], lengths, state=None)
        return loss

    def _step(self, x, y, lengths, state, stop=False):
        """This rank's shard through compute_gradients, the Allreduce, then the
        update. `stop` (rank 0's "the time budget is spent") is summed with the
        gradients, so every rank learns it in the same step. Returns (the global
        loss, whether any rank asked to stop)."""
        model, buffer = self.model, self._buffer
        n = model.num_parameters
        failure = None
        try:
            loss = model.compute_gradients(x, y, lengths=lengths, state=state)
            # The number of loss terms (valid rows) this shard adds to the global mean.
            if model.config["output"] == "last":
                count = x.shape[1]
            else:
                count = x.shape[0] * x.shape[1] if lengths is None else int(lengths.sum())
            np.multiply(model.flat_grads, count, out=buffer[:n])
            buffer[n + _LOSS_SUM] = loss * count
            buffer[n + _COUNT] = count
            buffer[n + _FAILED] = 0.0
        except Exception as error:  # the other ranks must learn of it, or they would wait
            failure = error
            buffer[:] = 0.0
            buffer[n + _FAILED] = 1.0
        buffer[n + _STOP] = 1.0 if stop else 0.0
        self._allreduce_buffer("the Allreduce of a training step's gradients")
        if buffer[n + _FAILED] > 0:
            if failure is not None:
                raise failure
            raise RuntimeError(f"{int(buffer[n + _FAILED])} other rank(s) failed in this "
                               "training step (their error is on their stderr)")
        total = buffer[n + _COUNT]
        np.divide(buffer[:n], total, out=model.flat_grads)
        global_loss = float(buffer[n + _LOSS_SUM] / total)
        model.apply_gradients(global_loss)
        return global_loss, bool(buffer[n + _STOP] > 0)

    def fit(self, data, *, window=64, batch_size=16, epochs=None, steps=None, time_budget=None,
            progress=False, callback=None):
        """Truncated BPTT over a long text or token sequence (or a list of them), as
        SequenceModel.fit: `batch_size` parallel streams, of which this rank trains
        `shard(batch_size)`, carrying their state across windows. Stops after
        `epochs`, `steps` or `time_budget` seconds (rank 0's clock decides, for all
        ranks at the same step); none given: one epoch. Returns {"loss": [...]}, the
        global loss of every step; `callback(step, loss)` runs on every rank,
        `progress` writes a progress line on rank 0. Collective. (No `validation`:
        every rank holds the whole model, so `trainer.model.evaluate` scores it.)"""
        model = self.model
        if model.config["vocab_size"] is None or model.config["output"] != "sequence":
            raise ValueError("fit trains next-token models: it needs vocab_size and "
                             "output='sequence'")
        window = positive_int(window, "window")
        rows = self.shard(batch_size)
        if epochs is None:
            epochs = 1 if steps is None and time_budget is None else sys.maxsize
        epochs = positive_int(epochs, "epochs")
        steps = None if steps is None else positive_int(steps, "steps")
        time_budget = non_negative_float(time_budget, "time_budget")
        stream_sets = _training._stream_sets(model, data, batch_size, window, "data")
        n_windows = sum((streams.shape[0] - 1) // window for streams in stream_sets)
        total = n_windows * epochs if steps is None else min(steps, n_windows * epochs)
        if steps is None and time_budget is not None:
            total = None  # the time budget decides: the progress line shows no total
        show_progress = progress and self.rank == 0
        history = {"loss": []}
        start = time.perf_counter()
        for _ in range(epochs):
            for first, x, y in _training._windows(stream_sets, window):
                out_of_time = (time_budget is not None and self.rank == 0
                               and time.perf_counter() - start >= time_budget)
                loss, stop = self._step(x[:, rows], y[:, rows], None,
                                        state=None if first else model.last_state,
                                        stop=out_of_time)
                history["loss"].append(loss)
                done = len(history["loss"])
                if show_progress:
                    _training._progress(done, total, loss, time.perf_counter() - start)
                if callback is not None:
                    callback(done, loss)
                if stop or (steps is not None and done >= steps):
                    break
            else:
                continue
            break
        if show_progress:
            sys.stderr.write("\n")
        return history

    # ------------------------------------------------------------- checkpoints
    def save(self, path):
        """Rank 0 writes the model's checkpoint (SequenceModel.save: atomic); every
        rank returns once it is written, or raises if it could not be. Collective.
        A checkpoint resumes on any number of ranks (or in one process)."""
        failure = None
        if self.rank == 0:
            try:
                self.model.save(path)
            except Exception as error:
                failure = error
        failed = np.array([failure is not None], dtype=np.int64)
        self._wait(self.comm.Iallreduce(MPI.IN_PLACE, failed, op=MPI.SUM),
                   f"the wait for rank 0 to write {os.fspath(path)!r}")
        if failure is not None:
            raise failure
        if failed[0]:
            raise RuntimeError(f"rank 0 could not write the checkpoint {os.fspath(path)!r} "
                               "(its error is on its stderr)")
