"""asv benchmarks of fastrnn: its layers on the DESIGN benchmark grid and off it, the
single-step cells, the SequenceModel training step and the cold start (float32,
all cores).

One workload, one number: the layer workloads are the ones `fastrnn bench` prints,
built by `fastrnn.bench.make_workload` with the same arguments (a training step:
zero_grad, forward, backward of out.sum(), global-norm clip to 5; forward only,
under no_grad; one streaming step, T=1, B=1, H=I=128, the state carried between
calls), and every time_ benchmark takes its samples the way `fastrnn bench` does:
each asv sample is one sample of `fastrnn.bench.sample_seconds` (an untimed
settling run of about 15 ms, then enough calls to last 5 ms, with the garbage
collector on), calibrated once per process by `fastrnn.bench.calibrate` (which
first puts malloc in the state bench times in, `bench.warm_allocator`). asv
reads the result through `timer = sample_clock`, a clock that only those samples
advance (by the seconds per call they measured), so asv's own sampling (one call
per sample right after setup, one call in all under --quick) cannot time a cold
call. asv's statistics (median, IQR, `asv continuous`'s regression test) then
work on bench's samples.

JIT compilation and the first call happen in `setup` (bench.calibrate's warm-up
call), never inside a timer; each workload is built, warmed and calibrated once per
process, so asv re-running setup between samples costs nothing.

Run with OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE unset:
    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE asv run --environment existing:python --quick
"""

import functools
import gc
import os
import statistics

import numpy as np

import fastrnn
from fastrnn import bench

CELLS = ["rnn", "lstm", "gru"]
# The shapes are written out here, not read from fastrnn.bench, because asv runs this
# file against every commit it measures, and a parameter list must not depend on the
# commit (older ones lack the off-grid shapes; each commit still runs them through
# its own bench.make_workload). tests/test_asv_suite.py checks that they are
# bench.NAMED_SHAPES, in order. A shape parameter reads as in `fastrnn bench`'s table,
# "tiny (100,1,64,64)" = name (T,B,I,H); the benchmarks also accept the bare name.
SHAPE_SIZES = {
    "tiny": (100, 1, 64, 64), "small": (100, 16, 32, 32), "mid": (50, 32, 64, 128),
    "big": (35, 64, 256, 256), "large": (100, 64, 512, 512), "wide": (25, 16, 1024, 1024),
    # off the grid
    "b128": (50, 128, 300, 300), "h200": (50, 32, 100, 200), "b1h300": (100, 1, 128, 300),
    "long": (1000, 8, 32, 64), "b256": (25, 256, 40, 72),
}
SHAPE_NAMES = {"{} ({},{},{},{})".format(name, *sizes): name for name, sizes in SHAPE_SIZES.items()}
SHAPES = list(SHAPE_NAMES)
SEQUENCE_MODES = ["train", "forward"]
GRID_SHAPES = SHAPES[:6]   # tiny .. wide
# Samples of bench.median_ms in the track_ benchmarks (GFLOP/s, speed-ups). With 5 the
# speed-ups took 15 of a full --quick run's 21 minutes on the 2-core machine.
SPEEDUP_REPEATS = 3


def shape_name(shape):
    """The name of a shape parameter ("tiny (100,1,64,64)" or "tiny")."""
    return shape if shape in SHAPE_SIZES else SHAPE_NAMES[shape]


def bench_shape(mode, shape="stream"):
    """The bench.Shape of a mode and shape parameter (bench.STREAM_SHAPE for "stream")."""
    if mode == "stream":
        return bench.STREAM_SHAPE
    name = shape_name(shape)
    return bench.Shape(name, *SHAPE_SIZES[name])


# ----------------------------------------------------------------- bench's sampling
def calibrate(workload):
    """bench.calibrate(workload): (calls per sample, calls per settling run)."""
    if hasattr(bench, "calibrate"):
        return bench.calibrate(workload)
    # Commits before bench.calibrate: what their bench.median_ms did inline, after
    # bench.warm_allocator's allocation (see fastrnn/bench.py).
    np.empty(32 * 2**20 - 2**16, dtype=np.uint8)
    workload()
    one_call = max(bench._seconds(workload, 2), 1e-9)
    return (max(1, int(bench.MIN_SAMPLE_SECONDS / one_call)),
            max(1, int(bench.SETTLE_SECONDS / one_call)))


def sample_seconds(workload, number, settle):
    """bench.sample_seconds: settle untimed, then seconds per call over `number` calls."""
    if hasattr(bench, "sample_seconds"):
        return bench.sample_seconds(workload, number, settle)
    bench._seconds(workload, settle)   # commits before bench.sample_seconds
    return bench._seconds(workload, number)


class _SampleClock:
    """Seconds per call measured by bench's samples, added up; asv's `timer`."""

    def __init__(self):
        self.now = 0.0

    def read(self):
        return self.now

    def sample(self, calibrated):
        """Take one bench sample of a (workload, number, settle) and advance by it.

        asv's timeit turns the garbage collector off around the timed call;
        `fastrnn bench` (like a user's loop) runs with it on, and so does this."""
        gc_was_enabled = gc.isenabled()
        gc.enable()
        try:
            self.now += sample_seconds(*calibrated)
        finally:
            if not gc_was_enabled:
                gc.disable()


CLOCK = _SampleClock()
sample_clock = CLOCK.read


@functools.cache
def bench_workload(framework, cell, mode, shape="stream"):
    """The workload of `fastrnn bench` (bench.make_workload, bench's shape)."""
    return bench.make_workload(framework, cell, mode, bench_shape(mode, shape))


def calibrated_workload(build, *args):
    """(workload, number, settle) for build(*args), called once and calibrated."""
    return _calibrated(build, args)


@functools.cache
def _calibrated(build, args):
    workload = build(*args)
    return (workload, *calibrate(workload))   # calibrate's first call warms it up


def gflops(cell, mode, shape="stream"):
    """fastrnn's GFLOP/s for one workload: the median of SPEEDUP_REPEATS bench samples
    (bench.median_ms of the one workload, with the calibration setup made)."""
    calibrated = calibrated_workload(bench_workload, "fastrnn", cell, mode, shape)
    seconds = statistics.median(sample_seconds(*calibrated) for _ in range(SPEEDUP_REPEATS))
    return bench.flop_count(cell, bench_shape(mode, shape), mode) / seconds / 1e9


class _Timed:
    """bench's samples through asv (see the module docstring), and limits that keep
    the large shapes from making the suite take forever."""

    timer = staticmethod(sample_clock)
    timeout = 300           # seconds per benchmark and parameter set (compiling included)
    repeat = (1, 10, 5.0)   # at least 1 sample, at most 10, stop adding after 5 s
    warmup_time = 0         # setup warmed and calibrated; each sample settles first

    def sample(self):
        CLOCK.sample(self.calibrated)


class TrainStep(_Timed):
    """Training step: zero_grad + forward + backward(ones) + global-norm clip 5."""

    params = (CELLS, SHAPES)
    param_names = ["cell", "shape"]

    def setup(self, cell, shape):
        self.calibrated = calibrated_workload(bench_workload, "fastrnn", cell, "train", shape)
        self.step = self.calibrated[0]

    def time_train_step(self, cell, shape):
        self.sample()

    def peakmem_train_step(self, cell, shape):
        self.step()

    def track_gflops(self, cell, shape):
        return gflops(cell, "train", shape)

    track_gflops.unit = "GFLOP/s"


class Forward(_Timed):
    """Inference: forward over the whole sequence, under fastrnn.no_grad()."""

    params = (CELLS, SHAPES)
    param_names = ["cell", "shape"]

    def setup(self, cell, shape):
        self.calibrated = calibrated_workload(bench_workload, "fastrnn", cell, "forward", shape)
        self.forward = self.calibrated[0]

    def time_forward(self, cell, shape):
        self.sample()

    def track_gflops(self, cell, shape):
        return gflops(cell, "forward", shape)

    track_gflops.unit = "GFLOP/s"


class StreamStep(_Timed):
    """Streaming inference: one T=1, B=1, H=128 layer call, the state carried to the next."""

    params = (CELLS,)
    param_names = ["cell"]

    def setup(self, cell):
        self.calibrated = calibrated_workload(bench_workload, "fastrnn", cell, "stream")
        self.step = self.calibrated[0]

    def time_stream_step(self, cell):
        self.sample()


# ---------------------------------------------------------------- cell options
# A cell option that makes a cell of its own (fastrnn.layers.CELL_NAMES): the classic
# GRU, GRU(reset_after=False). On the grid up to big: it has no torch or JAX peer.
CLASSIC_GRU = "gru_reset_before"
CELL_OPTION_SHAPES = GRID_SHAPES[:4]


class ClassicGRU(_Timed):
    """GRU(reset_after=False)'s training step and forward, as TrainStep and Forward
    time the other cells (bench.make_workload); skipped on commits without it."""

    params = (SEQUENCE_MODES, CELL_OPTION_SHAPES)
    param_names = ["mode", "shape"]

    def setup(self, mode, shape):
        if CLASSIC_GRU not in fastrnn.layers.CELL_NAMES:
            raise NotImplementedError(f"this commit has no cell {CLASSIC_GRU!r}")
        self.calibrated = calibrated_workload(bench_workload, "fastrnn", CLASSIC_GRU, mode, shape)

    def time_classic_gru(self, mode, shape):
        self.sample()


# ------------------------------------------------------------ single-step cells
CELL_STEP_SIZE = 128   # I = H = 128, B = 1, as bench's streaming step
CELL_STEP_MODES = ["inference", "train"]


def cell_step_workload(cell, mode, size=CELL_STEP_SIZE, seed=0):
    """One call of fastrnn.RNNCell / LSTMCell / GRUCell on a (1, size) input, B = 1.

    "inference": under no_grad, the state carried from call to call (an online
    pipeline's step). "train": the call and its backward (d_h1 = ones, global-norm
    clip to bench.MAX_NORM) from a fixed state."""
    if mode not in CELL_STEP_MODES:
        raise ValueError(f"mode must be one of {CELL_STEP_MODES}, got {mode!r}")
    cell_class = {"rnn": fastrnn.RNNCell, "lstm": fastrnn.LSTMCell, "gru": fastrnn.GRUCell}[cell]
    step_cell = cell_class(size, size, dtype=np.float32, seed=seed)
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((1, size), dtype=np.float32)
    ones = np.ones((1, size), dtype=np.float32)
    lstm = cell == "lstm"
    if mode == "inference":
        state = None

        def step():
            nonlocal state
            with fastrnn.no_grad():
                state = step_cell(x, state)
        return step
    h = np.zeros((1, size), np.float32)
    state = (h, np.zeros_like(h)) if lstm else h
    d_state = (ones, None) if lstm else ones

    def train_step():
        step_cell.zero_grad()
        step_cell(x, state)
        step_cell.backward(d_state, max_norm=bench.MAX_NORM)
    return train_step


class CellStep(_Timed):
    """Single-step cells (fastrnn.RNNCell, LSTMCell, GRUCell): one call, B = 1,
    I = H = 128; "inference" under no_grad carrying the state, "train" the call
    and its backward with a global-norm clip to 5."""

    params = (CELLS, CELL_STEP_MODES)
    param_names = ["cell", "mode"]

    def setup(self, cell, mode):
        self.calibrated = calibrated_workload(cell_step_workload, cell, mode)

    def time_cell_step(self, cell, mode):
        self.sample()


# ------------------------------------------------------- SequenceModel training
# examples/adding_problem.py's model and batch: LSTM, H = 64, B = 64, T = 100, I = 2,
# MSE on the last step's output, Adam, global-norm clip.
ADDING = {"n_steps": 100, "batch": 64, "hidden": 64, "lr": 1e-2, "max_norm": 1.0}


def adding_problem_workload(cell="lstm", seed=0):
    """One SequenceModel.train_step (forward, loss, BPTT, clipping, Adam update) on a
    fixed batch of the adding problem."""
    model = fastrnn.SequenceModel(
        cell=cell, input_size=2, hidden_size=ADDING["hidden"], output_size=1, output="last",
        loss="mse", optimizer=fastrnn.optim.Adam(lr=ADDING["lr"]),
        max_norm=ADDING["max_norm"], seed=seed)
    rng = np.random.default_rng(seed)
    n_steps, batch = ADDING["n_steps"], ADDING["batch"]
    x = np.zeros((n_steps, batch, 2), dtype=np.float32)
    x[:, :, 0] = rng.random((n_steps, batch))
    rows = np.arange(batch)
    first = rng.integers(0, n_steps // 2, size=batch)
    second = rng.integers(n_steps // 2, n_steps, size=batch)
    x[first, rows, 1] = x[second, rows, 1] = 1.0
    y = (x[first, rows, 0] + x[second, rows, 0])[:, None].astype(np.float32)

    def train_step():
        return model.train_step(x, y)
    train_step.model, train_step.batch = model, (x, y)
    return train_step


class SequenceModelTrainStep(_Timed):
    """SequenceModel.train_step of examples/adding_problem.py: LSTM H=64, B=64, T=100,
    I=2, MSE on the last step, Adam (lr 1e-2), global-norm clip to 1."""

    def setup(self):
        self.calibrated = calibrated_workload(adding_problem_workload)

    def time_train_step(self):
        self.sample()


# --------------------------------------------------------------------- vs peers
class _Speedup:
    """Peer ms / fastrnn ms, measured alternating in this process by bench.median_ms
    (above 1: faster), with bench's thread settings (bench.set_threads).

    setup raises NotImplementedError when the peer is not installed, which asv
    reports as a skipped benchmark.
    """

    peer = None
    timeout = 300   # a peer's compile and the first call of fastrnn's kernels included

    def setup(self, cell, *case):
        self.restore_threads = None
        if not bench.peer_installed(self.peer):
            raise NotImplementedError(f"{self.peer} is not installed")
        self.restore_threads = bench.set_threads(fastrnn.get_num_threads())
        mode, *shape = case or ("stream",)
        # bench.median_ms warms each workload up itself (JAX's is compiled already)
        self.workloads = {framework: bench.make_workload(framework, cell, mode,
                                                         bench_shape(mode, *shape))
                          for framework in ("fastrnn", self.peer)}

    def teardown(self, cell, *case):
        if self.restore_threads is not None:   # asv tears down skipped benchmarks too
            self.restore_threads()

    def speedup(self):
        ms = bench.median_ms(self.workloads, repeats=SPEEDUP_REPEATS)
        return ms[self.peer] / ms["fastrnn"]


class SpeedupVsTorch(_Speedup):
    """On the grid only (as SpeedupVsJax): with the off-grid shapes the speed-ups took
    14 of a full --quick run's 16 minutes on the 2-core machine. The off-grid shapes
    keep fastrnn's own times (TrainStep, Forward) and the onnxruntime speed-up."""

    peer = "torch"
    params = (CELLS, SEQUENCE_MODES, GRID_SHAPES)
    param_names = ["cell", "mode", "shape"]

    def track_speedup_vs_torch(self, cell, mode, shape):
        return self.speedup()

    track_speedup_vs_torch.unit = "speed-up"


class SpeedupVsJax(_Speedup):
    """On the grid only: XLA compiles each shape anew, which made this the slowest
    benchmark of the suite (`fastrnn bench --off-grid` has the rest)."""

    peer = "jax"
    params = (CELLS, SEQUENCE_MODES, GRID_SHAPES)
    param_names = ["cell", "mode", "shape"]

    def track_speedup_vs_jax(self, cell, mode, shape):
        return self.speedup()

    track_speedup_vs_jax.unit = "speed-up"


class SpeedupVsOnnxruntime(_Speedup):
    """Inference only: onnxruntime runs one standard ONNX node of the same weights."""

    peer = "onnxruntime"
    params = (CELLS, ["forward"], SHAPES)
    param_names = ["cell", "mode", "shape"]

    def track_speedup_vs_onnxruntime(self, cell, mode, shape):
        return self.speedup()

    track_speedup_vs_onnxruntime.unit = "speed-up"


class StreamSpeedupVsTorch(_Speedup):
    """Streaming step (T=1, B=1, H=128, state carried)."""

    peer = "torch"
    params = (CELLS,)
    param_names = ["cell"]

    def track_speedup_vs_torch(self, cell):
        return self.speedup()

    track_speedup_vs_torch.unit = "speed-up"


class StreamSpeedupVsJax(_Speedup):
    """Streaming step (T=1, B=1, H=128, state carried)."""

    peer = "jax"
    params = (CELLS,)
    param_names = ["cell"]

    def track_speedup_vs_jax(self, cell):
        return self.speedup()

    track_speedup_vs_jax.unit = "speed-up"


class StreamSpeedupVsOnnxruntime(_Speedup):
    """Streaming step (T=1, B=1, H=128, state carried)."""

    peer = "onnxruntime"
    params = (CELLS,)
    param_names = ["cell"]

    def track_speedup_vs_onnxruntime(self, cell):
        return self.speedup()

    track_speedup_vs_onnxruntime.unit = "speed-up"


# ------------------------------------------------------------------ cold start
FIRST_STEP_CODE = """
import numpy as np
import fastrnn
layer = fastrnn.layers.layer_for_cell({cell!r}, {I}, {H}, seed=0)
x = np.random.default_rng(0).standard_normal(({T}, {B}, {I}), dtype=np.float32)
out, _ = layer(x)
layer.backward(np.ones_like(out), max_norm=5.0)
"""


@functools.cache
def first_step_code(cell):
    """Source of `import fastrnn` plus one training step of `cell` on the tiny shape."""
    shape = bench.GRID["tiny"]
    code = FIRST_STEP_CODE.format(cell=cell, T=shape.T, B=shape.B, I=shape.I, H=shape.H)
    exec(code, {})   # compiles (or loads) the kernels, so the disk cache is warm
    return code


class ImportAndFirstStep:
    """`import fastrnn` + the first training step (tiny shape) in a fresh interpreter,
    disk cache warm."""

    params = (CELLS,)
    param_names = ["cell"]
    repeat = (1, 5, 20.0)
    warmup_time = 0
    timeout = 300
    # The fresh interpreter imports the fastrnn this process imported (asv puts
    # ASV_PYTHONPATH on sys.path here, but not into the environment it inherits).
    env = {"PYTHONPATH": os.pathsep.join(filter(None, [
        os.path.dirname(os.path.dirname(os.path.abspath(fastrnn.__file__))),
        os.environ.get("PYTHONPATH")]))}

    def setup(self, cell):
        first_step_code(cell)

    def timeraw_import_and_first_step(self, cell):
        return first_step_code(cell)
