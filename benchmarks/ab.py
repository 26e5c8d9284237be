"""fastrnn at another commit against the working tree, side by side in one process.

    python benchmarks/ab.py BASE [--shape NAME|T,B,I,H ...] [--cells rnn,lstm,gru]
                                 [--modes train,forward,stream] [--repeats 15] [--threads N]

BASE (a commit, branch or tag) is checked out into a temporary directory and
imported as the package `fastrnn_base` (fastrnn's imports are relative, so it
runs there under that name, with kernels cached apart); the working tree's
fastrnn is imported as usual. Shape names are `fastrnn bench`'s (the grid and the
shapes off it). A workload is a training step, a forward call under no_grad, or
(stream) 100 calls of one step each (T = B = 1, the shape's I and H) carrying
the state. Each workload alternates between the two, a sample of each in turn
after an untimed call, and the table gives each side's median,
the ratio base / tree (above 1: the tree is faster) and that ratio's spread over
pairs of samples (the noise). `--aa` compares BASE against itself (a second
copy) to show the noise alone. Run it with OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE
unset.
"""

import argparse
import importlib
import os
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from fastrnn import bench  # noqa: E402  (the working tree's)

STREAM_CALLS = 100


def _checkout(rev, directory, name):
    """Import the package at `rev` as `name` from `directory`."""
    source = os.path.join(directory, "source")
    subprocess.run(["git", "-C", ROOT, "worktree", "add", "--detach", "-f", source, rev],
                   check=True, capture_output=True)
    os.symlink(os.path.join(source, "fastrnn"), os.path.join(directory, name))
    return source


def _workload(package, cell, mode, shape, seed=0):
    T, B, I, H = shape
    layer_class = {"rnn": package.RNN, "lstm": package.LSTM, "gru": package.GRU}[cell]
    layer = layer_class(I, H, dtype=np.float32, seed=seed)
    x = np.random.default_rng(seed).standard_normal((T, B, I)).astype(np.float32)
    if mode == "forward":
        def run():
            with package.no_grad():
                layer(x)
        return run
    if mode == "stream":
        step = x[:1, :1]
        state = None

        def run():
            nonlocal state
            with package.no_grad():
                for _ in range(STREAM_CALLS):
                    _, state = layer(step, state)
        return run

    def run():
        layer.zero_grad()
        out = layer(x)[0]
        layer.backward(np.ones_like(out), max_norm=5.0)
    return run


def _time(run):
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


def compare(base, tree, cells, modes, shapes, repeats):
    rows = []
    for mode in modes:
        for cell in cells:
            for name, shape in shapes:
                runs = [_workload(base, cell, mode, shape), _workload(tree, cell, mode, shape)]
                samples = [[], []]
                for _ in range(repeats):
                    for side, run in enumerate(runs):
                        run()  # untimed settling call
                        samples[side].append(_time(run))
                ratios = [a / b for a, b in zip(*samples)]
                rows.append((cell, mode, name, statistics.median(samples[0]),
                             statistics.median(samples[1]), statistics.median(ratios),
                             min(ratios), max(ratios)))
                print(f"{cell:5s} {mode:8s} {name:24s} base {rows[-1][3] * 1e3:9.3f} ms  "
                      f"tree {rows[-1][4] * 1e3:9.3f} ms  base/tree {rows[-1][5]:5.2f}x "
                      f"(pairs {rows[-1][6]:.2f}-{rows[-1][7]:.2f})", flush=True)
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("base")
    parser.add_argument("--shape", action="append", default=None)
    parser.add_argument("--cells", default="rnn,lstm,gru")
    parser.add_argument("--modes", default="train,forward")
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--aa", action="store_true", help="BASE against a copy of itself")
    args = parser.parse_args()
    shapes = [(spec, _parse_shape(parser, spec))
              for spec in args.shape or ("tiny", "small", "mid", "big", "large", "wide")]
    modes, cells = args.modes.split(","), args.cells.split(",")
    for option, values, known in (("--modes", modes, bench.MODES),
                                  ("--cells", cells, bench.CELLS)):
        unknown = [value for value in values if value not in known]
        if unknown:
            parser.error(f"{option}: unknown {', '.join(unknown)} (expected some of "
                         f"{', '.join(known)})")
    with tempfile.TemporaryDirectory() as directory:
        sources = []
        for folder, name in (("a", "fastrnn_base"), ("b", "fastrnn_copy"))[:2 if args.aa else 1]:
            os.makedirs(os.path.join(directory, folder))
            sources.append(_checkout(args.base, os.path.join(directory, folder), name))
            sys.path.insert(0, os.path.join(directory, folder))
        try:
            base = importlib.import_module("fastrnn_base")
            tree = importlib.import_module("fastrnn_copy" if args.aa else "fastrnn")
            for package in (base, tree):
                package.set_num_threads(args.threads or package.get_num_threads())
            print(f"base {args.base} from {base.__file__}\ntree from {tree.__file__}\n"
                  f"threads {tree.get_num_threads()}, float32, medians of {args.repeats}")
            compare(base, tree, cells, modes, shapes, args.repeats)
        finally:
            for source in sources:
                subprocess.run(["git", "-C", ROOT, "worktree", "remove", "--force", source],
                               capture_output=True)


def _parse_shape(parser, spec):
    try:
        shape = bench.parse_shape(spec)
    except ValueError:
        parser.error(f"--shape: expected a name ({', '.join(bench.NAMED_SHAPES)}) or four "
                     f"positive integers T,B,I,H, got {spec!r}")
    return shape.T, shape.B, shape.I, shape.H


if __name__ == "__main__":
    main()
