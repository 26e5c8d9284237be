"""The single-step cells against torch's, one call at a time, side by side in one process.

    python benchmarks/cells.py [--sizes 64,128,256] [--repeats 15] [--threads N]
                               [--cells rnn,lstm,gru] [--modes inference,train]

B = 1, I = H, float32, from the same weights: "inference" is a call under
no_grad carrying the state (the asv suite's CellStep workload), "train" the call
and its backward with a global-norm clip to bench.MAX_NORM (torch: the call,
backward through h1, clip_grad_norm_). The samples alternate
(`fastrnn.bench.median_ms`); the table gives microseconds per call (medians) and
torch us / fastrnn us. Run it with OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE unset.
"""

import argparse
import os
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
import fastrnn  # noqa: E402
from fastrnn import bench  # noqa: E402

sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
from bench_layers import CELL_STEP_MODES, cell_step_workload  # noqa: E402

_TORCH_CELLS = {"rnn": "RNNCell", "lstm": "LSTMCell", "gru": "GRUCell"}


def torch_workload(cell, mode, size, seed=0):
    """torch's cell call (mode as cell_step_workload) with the weights fastrnn's
    cell of that seed draws, and a check that both give the same h1."""
    torch = bench.import_torch()
    fastrnn_cell = {"rnn": fastrnn.RNNCell, "lstm": fastrnn.LSTMCell,
                    "gru": fastrnn.GRUCell}[cell](size, size, dtype=np.float32, seed=seed)
    module = getattr(torch.nn, _TORCH_CELLS[cell])(size, size)
    module.load_state_dict({name: torch.from_numpy(value.copy())
                            for name, value in fastrnn_cell.state_dict().items()})
    x = np.random.default_rng(seed).standard_normal((1, size), dtype=np.float32)
    inputs, lstm = torch.from_numpy(x), cell == "lstm"
    zeros = torch.zeros(1, size)
    start = (zeros, zeros.clone()) if lstm else zeros
    with torch.no_grad():
        h1 = module(inputs, start)
    want = fastrnn_cell(x, (np.zeros((1, size), np.float32),) * 2 if lstm
                        else np.zeros((1, size), np.float32))
    if not np.allclose((h1[0] if lstm else h1).numpy(), want[0] if lstm else want, atol=1e-5):
        raise RuntimeError(f"{cell}: torch's and fastrnn's first steps differ")
    if mode == "inference":
        state = None

        def step():
            nonlocal state
            with torch.no_grad():
                state = module(inputs, state)
        return step
    parameters = list(module.parameters())
    ones = torch.ones(1, size)

    def train_step():
        module.zero_grad()
        out = module(inputs, start)
        (out[0] if lstm else out).backward(ones)
        torch.nn.utils.clip_grad_norm_(parameters, bench.MAX_NORM)
    return train_step


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="64,128,256")
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--cells", default=",".join(bench.CELLS))
    parser.add_argument("--modes", default=",".join(CELL_STEP_MODES))
    args = parser.parse_args(argv)
    try:
        sizes = [int(size) for size in args.sizes.split(",")]
    except ValueError:
        parser.error(f"--sizes must be comma-separated integers, got {args.sizes!r}")
    if not sizes or min(sizes) < 1:
        parser.error(f"--sizes must be positive integers, got {args.sizes!r}")
    try:
        cells = bench.parse_cells(args.cells)
    except ValueError as error:
        parser.error(str(error))
    modes = args.modes.split(",")
    unknown = [mode for mode in modes if mode not in CELL_STEP_MODES]
    if unknown:
        parser.error(f"--modes: unknown {', '.join(unknown)} (expected some of "
                     f"{', '.join(CELL_STEP_MODES)})")
    if args.repeats < 1:
        parser.error(f"--repeats must be at least 1, got {args.repeats}")
    restore = bench.set_threads(args.threads or fastrnn.get_num_threads())
    try:
        print(f"single-step cells against torch's, B=1, I=H, float32, "
              f"{fastrnn.get_num_threads()} threads, medians of {args.repeats} (us per call)")
        for size in sizes:
            for cell in cells:
                for mode in modes:
                    us = {name: 1e3 * ms for name, ms in bench.median_ms(
                        {"fastrnn": cell_step_workload(cell, mode, size),
                         "torch": torch_workload(cell, mode, size)}, args.repeats).items()}
                    print(f"{cell:5s} {mode:9s} H={size:<5d} fastrnn {us['fastrnn']:8.2f}  "
                          f"torch {us['torch']:8.2f}  torch/fastrnn "
                          f"{us['torch'] / us['fastrnn']:5.2f}x", flush=True)
    finally:
        restore()


if __name__ == "__main__":
    main()
