"""asv benchmarks of fastrnn's layers on the DESIGN benchmark grid and the shapes off
it (float32, all cores).

The workloads are the ones `fastrnn bench` prints (fastrnn/bench.py): a training step
(zero_grad, forward, backward of out.sum(), global-norm clip to 5), forward only, and
one streaming step (T=1, B=1, H=I=128, state carried between calls).

JIT compilation and the first call happen in `setup`, never inside a timer. Each
workload is built and warmed once per process (`warm_workload`), so asv re-running
setup between samples costs nothing.

Run with OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE unset:
    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE asv run --environment existing:python --quick
"""

import functools
import os

import fastrnn
from fastrnn import bench

CELLS = list(bench.CELLS)
SHAPES = list(bench.NAMED_SHAPES)  # the grid, then the off-grid shapes
SEQUENCE_MODES = ["train", "forward"]
SPEEDUP_REPEATS = 5


@functools.cache
def warm_workload(framework, cell, mode, shape_name="stream"):
    """The workload of `fastrnn bench`, called once (compiled, caches filled)."""
    shape = bench.STREAM_SHAPE if mode == "stream" else bench.NAMED_SHAPES[shape_name]
    workload = bench.make_workload(framework, cell, mode, shape)
    workload()
    return workload


def gflops(cell, mode, shape_name="stream"):
    """fastrnn's GFLOP/s for one workload (median of a few alternating samples)."""
    shape = bench.STREAM_SHAPE if mode == "stream" else bench.NAMED_SHAPES[shape_name]
    ms = bench.median_ms({"fastrnn": warm_workload("fastrnn", cell, mode, shape_name)},
                         repeats=SPEEDUP_REPEATS)["fastrnn"]
    return bench.flop_count(cell, shape, mode) / (ms * 1e-3) / 1e9


class _Timed:
    """Limits that keep the large shapes from making the suite take forever."""

    timeout = 300           # seconds per benchmark and parameter set
    repeat = (1, 10, 5.0)   # at least 1 sample, at most 10, stop adding after 5 s
    warmup_time = 0.1       # setup has compiled and run the workload already


class TrainStep(_Timed):
    """Training step: zero_grad + forward + backward(ones) + global-norm clip 5."""

    params = (CELLS, SHAPES)
    param_names = ["cell", "shape"]

    def setup(self, cell, shape):
        self.step = warm_workload("fastrnn", cell, "train", shape)

    def time_train_step(self, cell, shape):
        self.step()

    def peakmem_train_step(self, cell, shape):
        self.step()

    def track_gflops(self, cell, shape):
        return gflops(cell, "train", shape)

    track_gflops.unit = "GFLOP/s"


class Forward(_Timed):
    """Inference: forward over the whole sequence."""

    params = (CELLS, SHAPES)
    param_names = ["cell", "shape"]

    def setup(self, cell, shape):
        self.forward = warm_workload("fastrnn", cell, "forward", shape)

    def time_forward(self, cell, shape):
        self.forward()

    def track_gflops(self, cell, shape):
        return gflops(cell, "forward", shape)

    track_gflops.unit = "GFLOP/s"


class StreamStep(_Timed):
    """Streaming inference: one T=1, B=1, H=128 call, the state carried to the next."""

    params = (CELLS,)
    param_names = ["cell"]

    def setup(self, cell):
        self.step = warm_workload("fastrnn", cell, "stream")

    def time_stream_step(self, cell):
        self.step()


class _Speedup:
    """Peer ms / fastrnn ms, measured alternating in this process (above 1: faster).

    setup raises NotImplementedError when the peer is not installed, which asv
    reports as a skipped benchmark.
    """

    peer = None
    timeout = 600

    def setup(self, cell, *case):
        self.restore_threads = None
        if not bench.peer_installed(self.peer):
            raise NotImplementedError(f"{self.peer} is not installed")
        self.restore_threads = bench.set_threads(fastrnn.get_num_threads())
        self.workloads = {framework: warm_workload(framework, cell, *case)
                          for framework in ("fastrnn", self.peer)}

    def teardown(self, cell, *case):
        if self.restore_threads is not None:   # asv tears down skipped benchmarks too
            self.restore_threads()

    def speedup(self):
        ms = bench.median_ms(self.workloads, repeats=SPEEDUP_REPEATS)
        return ms[self.peer] / ms["fastrnn"]


class SpeedupVsTorch(_Speedup):
    peer = "torch"
    params = (CELLS, SEQUENCE_MODES, SHAPES)
    param_names = ["cell", "mode", "shape"]

    def track_speedup_vs_torch(self, cell, mode, shape):
        return self.speedup()

    track_speedup_vs_torch.unit = "speed-up"


class SpeedupVsJax(_Speedup):
    peer = "jax"
    params = (CELLS, SEQUENCE_MODES, SHAPES)
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
    peer = "torch"
    params = (CELLS, ["stream"])
    param_names = ["cell", "mode"]

    def track_speedup_vs_torch(self, cell, mode):
        return self.speedup()

    track_speedup_vs_torch.unit = "speed-up"


class StreamSpeedupVsJax(_Speedup):
    peer = "jax"
    params = (CELLS, ["stream"])
    param_names = ["cell", "mode"]

    def track_speedup_vs_jax(self, cell, mode):
        return self.speedup()

    track_speedup_vs_jax.unit = "speed-up"


class StreamSpeedupVsOnnxruntime(_Speedup):
    peer = "onnxruntime"
    params = (CELLS, ["stream"])
    param_names = ["cell", "mode"]

    def track_speedup_vs_onnxruntime(self, cell, mode):
        return self.speedup()

    track_speedup_vs_onnxruntime.unit = "speed-up"


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
    """`import fastrnn` + the first training step in a fresh interpreter, disk cache warm."""

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
