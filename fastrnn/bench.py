"""`fastrnn bench`: fastrnn side by side with torch, JAX and onnxruntime on the
benchmark grid and off it.

Every framework runs the same work on the same float32 N(0, 1) inputs with the same
number of threads, measured alternating in one process; the table shows medians.

- train:   zero the gradients, forward, backward of out.sum() (d_out = ones), then
           global-norm clipping of all parameter gradients to max_norm 5.
- forward: inference only (torch under no_grad).
- stream:  one call per time step (T=1, B=1, H=I=128), carrying the state between calls.

onnxruntime (inference only: forward and stream) runs one standard ONNX
RNN/LSTM/GRU node holding fastrnn's weights, on its CPU execution provider with
intra-op threads = the thread count. The peers are optional: they are imported
inside functions only, and a peer that is not installed is reported as such. The
asv suite (benchmarks/) builds its workloads and counts its FLOPs with the
functions here.
"""

import contextlib
import datetime
import functools
import os
import platform
import statistics
import sys
import time
from dataclasses import dataclass

import numpy as np

from . import _allocator
from ._validate import int_in_range, one_of
from .layers import CELL_NAMES, layer_for_cell

CELLS = ("rnn", "lstm", "gru")  # the cells timed against torch's and JAX's counterparts
MODES = ("train", "forward", "stream")
PEERS = ("torch", "jax", "onnxruntime")
INFERENCE_ONLY_PEERS = ("onnxruntime",)
PEER_LABELS = {"torch": "torch", "jax": "jax", "onnxruntime": "ort"}  # table columns
FRAMEWORKS = ("fastrnn",) + PEERS
MAX_NORM = 5.0
STREAM_HIDDEN = 128
MIN_SAMPLE_SECONDS = 0.005     # each timed sample repeats the call until it lasts this long
# Before each timed sample the workload runs untimed for this long, so that its own
# threads are awake and its data in cache.
SETTLE_SECONDS = 0.015
# Where samples alternate between frameworks, each first waits this long idle: a
# framework's workers spin after each call (torch's OpenMP workers about 10 ms,
# onnxruntime's about 50 ms, measured with 2 threads), and a sample that starts in
# that window shares the cores with them.
QUIET_SECONDS = 0.1


@dataclass(frozen=True)
class Shape:
    name: str
    T: int
    B: int
    I: int  # noqa: E741
    H: int

    def __str__(self):
        return f"{self.name} ({self.T},{self.B},{self.I},{self.H})" if self.name \
            else f"{self.T},{self.B},{self.I},{self.H}"


GRID = {shape.name: shape for shape in (
    Shape("tiny", 100, 1, 64, 64),
    Shape("small", 100, 16, 32, 32),
    Shape("mid", 50, 32, 64, 128),
    Shape("big", 35, 64, 256, 256),
    Shape("large", 100, 64, 512, 512),
    Shape("wide", 25, 16, 1024, 1024),
)}
# Off the grid: a batch of 128 and of 256, hidden sizes that are not multiples of 32,
# input sizes other than the hidden size, B = 1 with H >= 256, and T = 1000.
OFF_GRID = {shape.name: shape for shape in (
    Shape("b128", 50, 128, 300, 300),
    Shape("h200", 50, 32, 100, 200),
    Shape("b1h300", 100, 1, 128, 300),
    Shape("long", 1000, 8, 32, 64),
    Shape("b256", 25, 256, 40, 72),
)}
NAMED_SHAPES = {**GRID, **OFF_GRID}
STREAM_SHAPE = Shape("stream", 1, 1, STREAM_HIDDEN, STREAM_HIDDEN)


class PeerNotInstalled(Exception):
    """A comparison framework (torch, JAX, onnxruntime) cannot be imported."""


@functools.cache
def _cell_description(cell):
    """(gate blocks, whether it carries a cell state) of a cell, from its layer."""
    layer = layer_for_cell(cell, 1, 1)
    return layer.n_gates, layer.has_cell_state


# --------------------------------------------------------------------------- FLOPs
def flop_count(cell, shape, mode="forward"):
    """Floating-point operations of one call, counting the matrix products only.

    Forward is 2*T*B*G*H*(I+H) for a cell with G gate blocks (RNN 1, GRU 3, LSTM 4).
    A training step is counted as 3x forward: backward costs two products per forward
    product (input gradients and weight gradients). A streaming call is a forward
    with T = B = 1.
    """
    one_of(cell, CELL_NAMES, "cell")
    one_of(mode, MODES, "mode")
    n_gates, _ = _cell_description(cell)
    forward = 2 * shape.T * shape.B * n_gates * shape.H * (shape.I + shape.H)
    return 3 * forward if mode == "train" else forward


def gemm_gflops(threads=None, size=1024, repeats=20):
    """The machine's float32 GEMM throughput: numpy matmul of two size x size matrices.

    Best of `repeats`, with numpy's BLAS limited to `threads` where threadpoolctl is
    installed (otherwise BLAS uses its own default).
    """
    rng = np.random.default_rng(0)
    a = rng.standard_normal((size, size), dtype=np.float32)
    b = rng.standard_normal((size, size), dtype=np.float32)
    with _blas_thread_limit(threads):
        for _ in range(3):
            a @ b
        best = min(_seconds(lambda: a @ b) for _ in range(repeats))
    return 2 * size**3 / best / 1e9


def _blas_thread_limit(threads):
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return contextlib.nullcontext()
    return threadpool_limits(limits=threads, user_api="blas")


# --------------------------------------------------------------------------- timing
def _seconds(function, number=1):
    start = time.perf_counter()
    for _ in range(number):
        function()
    return (time.perf_counter() - start) / number


def warm_allocator():
    """Puts malloc in the state `import fastrnn` leaves it in (fastrnn._allocator),
    also where FASTRNN_MALLOC_WARMUP=0 kept the import from doing so: bench and
    the asv suite time every row in that state."""
    _allocator.warm()


def calibrate(workload):
    """(number, settle) for a workload: calls per timed sample, so that a sample lasts
    at least MIN_SAMPLE_SECONDS, and untimed calls per settling run (SETTLE_SECONDS).

    Warms the allocator (`warm_allocator`), calls the workload once (warm-up), then
    twice to time it.
    """
    warm_allocator()
    workload()
    one_call = max(_seconds(workload, 2), 1e-9)
    return max(1, int(MIN_SAMPLE_SECONDS / one_call)), max(1, int(SETTLE_SECONDS / one_call))


def sample_seconds(workload, number, settle):
    """One timed sample: `settle` untimed calls, then seconds per call over `number` calls.

    `fastrnn bench` (median_ms) and the asv suite (benchmarks/bench_layers.py) both
    take their samples with this function, with numbers from `calibrate`.
    """
    _seconds(workload, settle)
    return _seconds(workload, number)


def median_ms(workloads, repeats):
    """Median milliseconds per call of each workload {name: callable}.

    Each workload is warmed up and calibrated first (`calibrate`); then the samples
    alternate between the workloads, so slow drifts of the machine hit all of them
    alike. Each sample starts after QUIET_SECONDS idle, with an untimed settling run
    of the same workload (`sample_seconds`).
    """
    calibration = {name: calibrate(workload) for name, workload in workloads.items()}
    samples = {name: [] for name in workloads}
    for _ in range(repeats):
        for name, workload in workloads.items():
            time.sleep(QUIET_SECONDS)
            samples[name].append(sample_seconds(workload, *calibration[name]))
    return {name: 1e3 * statistics.median(values) for name, values in samples.items()}


# --------------------------------------------------------------------------- workloads
def make_inputs(shape, seed=0):
    """float32 N(0, 1) input of shape (T, B, I)."""
    rng = np.random.default_rng(seed)
    return rng.standard_normal((shape.T, shape.B, shape.I), dtype=np.float32)


def make_workload(framework, cell, mode, shape, seed=0):
    """A no-argument callable doing one `mode` call of `cell` on `shape` in `framework`.

    Raises PeerNotInstalled when the framework cannot be imported. The callable is
    not yet warmed up (for JAX it is compiled already).
    """
    builders = {"fastrnn": _fastrnn_workload, "torch": _torch_workload, "jax": _jax_workload,
                "onnxruntime": _onnxruntime_workload}
    one_of(framework, FRAMEWORKS, "framework")
    # fastrnn runs each of its cells (the classic GRU too); the peers, their counterparts.
    one_of(cell, CELL_NAMES if framework == "fastrnn" else CELLS, "cell")
    one_of(mode, MODES, "mode")
    if framework in INFERENCE_ONLY_PEERS and mode == "train":
        raise ValueError(f"{framework} runs inference only, not mode 'train'")
    if mode == "stream":
        shape = STREAM_SHAPE
    return builders[framework](cell, mode, shape, make_inputs(shape, seed), seed)


def _fastrnn_workload(cell, mode, shape, x, seed):
    import fastrnn

    layer = layer_for_cell(cell, shape.I, shape.H, dtype=np.float32, seed=seed)
    if mode == "train":
        d_out = np.ones((shape.T, shape.B, shape.H), dtype=np.float32)

        def train_step():
            layer.zero_grad()
            layer(x)
            layer.backward(d_out, max_norm=MAX_NORM)
        return train_step
    # Inference as torch's workloads run it: under no_grad, no activations kept.
    if mode == "forward":
        def forward():
            with fastrnn.no_grad():
                layer(x)
        return forward

    state = None

    def stream_step():
        nonlocal state
        with fastrnn.no_grad():
            _, state = layer(x, state)
    return stream_step


def import_torch():
    try:
        import torch
    except ImportError as error:
        raise PeerNotInstalled("torch") from error
    return torch


def torch_module_class(cell):
    """torch's recurrent module class for one of CELLS."""
    torch = import_torch()
    return {"rnn": torch.nn.RNN, "lstm": torch.nn.LSTM, "gru": torch.nn.GRU}[cell]


def _torch_workload(cell, mode, shape, x, seed):
    torch = import_torch()
    torch.manual_seed(seed)
    module = torch_module_class(cell)(shape.I, shape.H)
    x = torch.from_numpy(x)
    if mode == "train":
        def train_step():
            module.zero_grad()
            out, _ = module(x)
            out.sum().backward()
            torch.nn.utils.clip_grad_norm_(module.parameters(), MAX_NORM)
        return train_step
    if mode == "forward":
        def forward():
            with torch.no_grad():
                module(x)
        return forward

    state = None

    def stream_step():
        nonlocal state
        with torch.no_grad():
            _, state = module(x, state)
    return stream_step


def import_jax(threads=None):
    """Import JAX; with `threads` == 1, XLA is told to run single-threaded.

    XLA reads its flags once, at import, and can only be asked for one thread or
    all cores; the first import in a process decides.
    """
    if threads == 1 and "jax" not in sys.modules:
        flags = os.environ.get("XLA_FLAGS", "")
        os.environ["XLA_FLAGS"] = (flags + " --xla_cpu_multi_thread_eigen=false "
                                   "intra_op_parallelism_threads=1").strip()
    try:
        import jax
    except ImportError as error:
        raise PeerNotInstalled("jax") from error
    return jax


def _jax_cell(cell, jax):
    """step(params, state, x_t) -> (state, h_t), written as torch's equations."""
    jnp = jax.numpy

    def gates(params, h, x_t):
        return (x_t @ params["weight_ih"].T + params["bias_ih"],
                h @ params["weight_hh"].T + params["bias_hh"])

    def rnn_step(params, h, x_t):
        from_input, from_hidden = gates(params, h, x_t)
        h = jnp.tanh(from_input + from_hidden)
        return h, h

    def lstm_step(params, state, x_t):
        h, c = state
        from_input, from_hidden = gates(params, h, x_t)
        i, f, g, o = jnp.split(from_input + from_hidden, 4, axis=-1)
        c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
        h = jax.nn.sigmoid(o) * jnp.tanh(c)
        return (h, c), h

    def gru_step(params, h, x_t):
        from_input, from_hidden = gates(params, h, x_t)
        i_r, i_z, i_n = jnp.split(from_input, 3, axis=-1)
        h_r, h_z, h_n = jnp.split(from_hidden, 3, axis=-1)
        r = jax.nn.sigmoid(i_r + h_r)
        z = jax.nn.sigmoid(i_z + h_z)
        n = jnp.tanh(i_n + r * h_n)
        h = (1.0 - z) * n + z * h
        return h, h

    return {"rnn": rnn_step, "lstm": lstm_step, "gru": gru_step}[cell]


def _jax_workload(cell, mode, shape, x, seed):
    jax = import_jax()
    jnp = jax.numpy
    step = _jax_cell(cell, jax)
    rng = np.random.default_rng(seed)
    bound = 1.0 / np.sqrt(shape.H)
    n_gates, has_cell_state = _cell_description(cell)
    gate_rows = n_gates * shape.H
    params = {name: jnp.asarray(rng.uniform(-bound, bound, size).astype(np.float32))
              for name, size in (("weight_ih", (gate_rows, shape.I)),
                                 ("weight_hh", (gate_rows, shape.H)),
                                 ("bias_ih", (gate_rows,)), ("bias_hh", (gate_rows,)))}
    zeros = jnp.zeros((shape.B, shape.H), jnp.float32)
    initial_state = (zeros, zeros) if has_cell_state else zeros
    x = jnp.asarray(x)

    def sequence(params, x, state):
        return jax.lax.scan(lambda carry, x_t: step(params, carry, x_t), state, x)

    if mode == "train":
        def loss(params, x):
            _, out = sequence(params, x, initial_state)
            return out.sum()

        @jax.jit
        def train_step(params, x):
            value, grads = jax.value_and_grad(loss)(params, x)
            leaves = jax.tree_util.tree_leaves(grads)
            norm = jnp.sqrt(sum(jnp.sum(g * g) for g in leaves))
            scale = jnp.minimum(1.0, MAX_NORM / (norm + 1e-6))
            return value, jax.tree_util.tree_map(lambda g: g * scale, grads), norm

        jax.block_until_ready(train_step(params, x))
        return lambda: jax.block_until_ready(train_step(params, x))

    if mode == "forward":
        forward = jax.jit(sequence)
        jax.block_until_ready(forward(params, x, initial_state))
        return lambda: jax.block_until_ready(forward(params, x, initial_state))

    one_step = jax.jit(lambda params, x_t, state: step(params, state, x_t[0])[0])
    state = jax.block_until_ready(one_step(params, x, initial_state))

    def stream_step():
        nonlocal state
        state = jax.block_until_ready(one_step(params, x, state))
    return stream_step


def import_onnxruntime():
    """(onnxruntime, onnx): onnx builds the model that onnxruntime runs."""
    try:
        import onnx
        import onnxruntime
    except ImportError as error:
        raise PeerNotInstalled("onnxruntime") from error
    return onnxruntime, onnx


# ONNX's node for each cell, and the order of torch's gate blocks in ONNX's layout
# (LSTM: torch i, f, g, o -> ONNX i, o, f, c; GRU: torch r, z, n -> ONNX z, r, h,
# with linear_before_reset=1 for torch's variant).
_ONNX_NODES = {"rnn": ("RNN", (0,), {}), "lstm": ("LSTM", (0, 3, 1, 2), {}),
               "gru": ("GRU", (1, 0, 2), {"linear_before_reset": 1})}


def onnx_model(layer, cell, n_steps, batch):
    """An ONNX model of one node holding a 1-layer, 1-direction layer's weights:
    inputs X (T, B, I), initial_h (1, B, H) [, initial_c]; outputs Y (T, 1, B, H),
    Y_h [, Y_c]."""
    _, onnx = import_onnxruntime()
    from onnx import TensorProto, helper, numpy_helper

    op_type, order, attributes = _ONNX_NODES[cell]

    def reordered(array):
        blocks = np.split(array, len(order))
        return np.concatenate([blocks[k] for k in order])

    p = layer.params
    initializers = {
        "W": reordered(p["weight_ih_l0"])[None], "R": reordered(p["weight_hh_l0"])[None],
        "B": np.concatenate([reordered(p["bias_ih_l0"]), reordered(p["bias_hh_l0"])])[None]}
    states = ["h", "c"] if layer.has_cell_state else ["h"]
    hidden, features = layer.hidden_size, layer.input_size
    node = helper.make_node(op_type, ["X", "W", "R", "B", ""] + [f"initial_{s}" for s in states],
                            ["Y"] + [f"Y_{s}" for s in states], hidden_size=hidden,
                            **attributes)
    element = TensorProto.FLOAT
    graph = helper.make_graph(
        [node], op_type.lower(),
        [helper.make_tensor_value_info("X", element, [n_steps, batch, features])]
        + [helper.make_tensor_value_info(f"initial_{s}", element, [1, batch, hidden])
           for s in states],
        [helper.make_tensor_value_info("Y", element, [n_steps, 1, batch, hidden])]
        + [helper.make_tensor_value_info(f"Y_{s}", element, [1, batch, hidden])
           for s in states],
        initializer=[numpy_helper.from_array(np.ascontiguousarray(value, np.float32), name)
                     for name, value in initializers.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)])


def onnxruntime_session(layer, cell, n_steps, batch, threads):
    """An onnxruntime session (CPU execution provider) running onnx_model."""
    ort, _ = import_onnxruntime()
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return ort.InferenceSession(onnx_model(layer, cell, n_steps, batch).SerializeToString(),
                                options, providers=["CPUExecutionProvider"])


def _onnxruntime_workload(cell, mode, shape, x, seed):
    import fastrnn

    # The weights of the fastrnn workload of the same seed.
    layer = layer_for_cell(cell, shape.I, shape.H, dtype=np.float32, seed=seed)
    session = onnxruntime_session(layer, cell, shape.T, shape.B, fastrnn.get_num_threads())
    states = ["h", "c"] if layer.has_cell_state else ["h"]
    zeros = np.zeros((1, shape.B, shape.H), dtype=np.float32)
    feeds = {"X": x, **{f"initial_{s}": zeros for s in states}}
    outputs = ["Y"] + [f"Y_{s}" for s in states]
    if mode == "forward":
        return lambda: session.run(outputs, feeds)

    def stream_step():
        _, *carried = session.run(outputs, feeds)
        feeds.update({f"initial_{s}": value for s, value in zip(states, carried)})
    return stream_step


_IMPORTERS = {"torch": import_torch, "jax": import_jax, "onnxruntime": import_onnxruntime}


def peer_installed(peer):
    """Whether a comparison framework can be imported."""
    try:
        _IMPORTERS[one_of(peer, PEERS, "peer")]()
    except PeerNotInstalled:
        return False
    return True


# --------------------------------------------------------------------------- threads
def set_threads(threads):
    """Give fastrnn and every installed peer `threads`; returns a function undoing it."""
    import fastrnn

    previous_fastrnn = fastrnn.get_num_threads()
    fastrnn.set_num_threads(threads)
    undo = [lambda: fastrnn.set_num_threads(previous_fastrnn)]
    try:
        torch = import_torch()
    except PeerNotInstalled:
        pass
    else:
        previous_torch = torch.get_num_threads()
        torch.set_num_threads(threads)
        undo.append(lambda: torch.set_num_threads(previous_torch))

    def restore():
        for action in undo:
            action()
    return restore


# --------------------------------------------------------------------------- command
def parse_shape(text):
    """A shape name (the grid's tiny .. wide, or off the grid's) or T,B,I,H."""
    if text in NAMED_SHAPES:
        return NAMED_SHAPES[text]
    try:
        sizes = [int(part) for part in text.split(",")]
    except ValueError:
        sizes = []
    if len(sizes) != 4 or min(sizes) < 1:
        raise ValueError(f"--shape must be a shape name ({', '.join(NAMED_SHAPES)}) or "
                         f"four positive integers T,B,I,H, got {text!r}")
    return Shape("", *sizes)


def parse_cells(text):
    cells = [cell.strip() for cell in text.split(",") if cell.strip()]
    unknown = [cell for cell in cells if cell not in CELLS]
    if unknown or not cells:
        raise ValueError(f"--cells must be a comma-separated subset of {','.join(CELLS)}, "
                         f"got {text!r}")
    return cells


def add_arguments(parser):
    """Options of `fastrnn bench` (added to an argparse parser)."""
    parser.add_argument(
        "--shape", action="append", metavar="T,B,I,H",
        help="a shape to measure: T,B,I,H or a name (repeatable; default: the whole "
             f"grid {', '.join(GRID)}); off the grid: {', '.join(OFF_GRID)}")
    parser.add_argument("--off-grid", action="store_true",
                        help="measure the off-grid shapes after the grid (or the --shape's)")
    parser.add_argument("--cells", default=",".join(CELLS),
                        help="comma-separated cells (default: %(default)s)")
    parser.add_argument("--mode", choices=MODES + ("all",), default="all",
                        help="train step, forward only, streaming (T=1, B=1, H=128, state "
                             "carried between calls), or all (default: %(default)s)")
    parser.add_argument("--repeats", type=int, default=15,
                        help="timed samples per framework; the table shows the median "
                             "(default: %(default)s)")
    parser.add_argument("--threads", type=int, default=None,
                        help="threads for fastrnn and every peer (default: all cores)")
    return parser


def run(args):
    """Measure and print the table; returns the exit status."""
    import fastrnn

    cells = parse_cells(args.cells)
    shapes = [parse_shape(text) for text in args.shape] if args.shape else list(GRID.values())
    if args.off_grid:
        shapes += [shape for shape in OFF_GRID.values() if shape not in shapes]
    modes = MODES if args.mode == "all" else (args.mode,)
    int_in_range(args.repeats, "--repeats", 1)
    threads = fastrnn.get_num_threads() if args.threads is None else args.threads
    restore_threads = set_threads(threads)   # validates the count
    try:
        installed = _installed_peers(threads)
        print(_header(threads, installed), flush=True)
        if os.environ.get("OPENBLAS_CORETYPE") or os.environ.get("OPENBLAS_L2_SIZE"):
            print("warning: OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE are set; numpy's BLAS may "
                  "run an older kernel (unset both for benchmarks)")
        peak = gemm_gflops(threads)
        print(f"fp32 GEMM peak (numpy 1024x1024 matmul, {threads} threads): "
              f"{peak:.1f} GFLOP/s\n", flush=True)
        print(_format_row({column: column for column in COLUMN_WIDTHS}))
        print(_format_row({column: "-" * width for column, width in COLUMN_WIDTHS.items()}))
        for mode in modes:
            for cell in cells:
                for shape in ([STREAM_SHAPE] if mode == "stream" else shapes):
                    row = _measure_row(cell, mode, shape, installed, args.repeats, peak)
                    print(_format_row(row), flush=True)
        print("\nms: median per call; vs PEER: PEER ms / fastrnn ms (above 1: fastrnn is "
              "faster); ort: onnxruntime (inference only); %peak: fastrnn GFLOP/s as a "
              "share of the GEMM peak.")
    finally:
        restore_threads()
    return 0


def _installed_peers(threads):
    installed = {}
    for peer in PEERS:
        try:
            module = import_jax(threads) if peer == "jax" else _IMPORTERS[peer]()
        except PeerNotInstalled:
            installed[peer] = None
        else:
            installed[peer] = (module[0] if isinstance(module, tuple) else module).__version__
    return installed


def _header(threads, installed):
    import fastrnn

    peers = ", ".join(f"{peer} {version or 'not installed'}" for peer, version in installed.items())
    text = (f"fastrnn {fastrnn.__version__} bench, {datetime.date.today()}, "
            f"{platform.machine()} {os.cpu_count()} cores, {threads} threads, float32\n"
            f"numpy {np.__version__}; peers: {peers}")
    if installed.get("jax") and threads not in (1, os.cpu_count()):
        text += "\nnote: XLA runs on one thread or all cores; JAX uses all cores here"
    return text


def _measure_row(cell, mode, shape, installed, repeats, peak):
    workloads = {"fastrnn": make_workload("fastrnn", cell, mode, shape)}
    for peer, version in installed.items():
        if version is not None and not (peer in INFERENCE_ONLY_PEERS and mode == "train"):
            workloads[peer] = make_workload(peer, cell, mode, shape)
    ms = median_ms(workloads, repeats)
    gflops = flop_count(cell, shape, mode) / (ms["fastrnn"] * 1e-3) / 1e9
    row = {"cell": cell, "mode": mode, "shape": str(shape), "fastrnn ms": f"{ms['fastrnn']:.3f}"}
    for peer, label in PEER_LABELS.items():
        if peer in ms:
            row[f"{label} ms"] = f"{ms[peer]:.3f}"
            row[f"vs {label}"] = f"{ms[peer] / ms['fastrnn']:.2f}x"
        else:
            row[f"{label} ms"] = "-" if installed.get(peer) else "not installed"
            row[f"vs {label}"] = "-"
    row["GFLOP/s"] = f"{gflops:.1f}"
    row["%peak"] = f"{100 * gflops / peak:.0f}%"
    return row


# Column name -> width; the first three are left-aligned, the numbers right-aligned.
COLUMN_WIDTHS = {"cell": 4, "mode": 7, "shape": 23, "fastrnn ms": 10,
                 "torch ms": 13, "vs torch": 8, "jax ms": 13, "vs jax": 8,
                 "ort ms": 13, "vs ort": 8, "GFLOP/s": 7, "%peak": 5}
LEFT_ALIGNED = ("cell", "mode", "shape")


def _format_row(values):
    return "  ".join(values[column].ljust(width) if column in LEFT_ALIGNED
                     else values[column].rjust(width)
                     for column, width in COLUMN_WIDTHS.items()).rstrip()
