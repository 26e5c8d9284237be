"""Cold start: what a new user waits for before the first results, and after.

    python benchmarks/cold_start.py [--cells rnn,lstm,gru] [--dtypes float32]
                                    [--repeats 3] [--compile-first]

For each cell and dtype, a new interpreter with an empty kernel cache (a fresh
temporary NUMBA_CACHE_DIR: numba then reads and writes only there, never the
package's own __pycache__) times `import fastrnn`, the first inference call of a
1-layer layer of the benchmark's mid shape (T=50, B=32, I=64, H=128) under
fastrnn.no_grad(), the first training step after it (forward, backward of the
summed outputs with max_norm=5), and a second training step (the same process,
warm). A second new interpreter then times the same with the cache that the first
one filled ("warm cache"). Each figure is the median of --repeats such pairs, each
pair with its own empty cache. "CPU s" is the CPU time the first interpreter spent
on the import, the inference call and the training step (all its threads): compiling
runs on one thread, so where other jobs share the cores and stretch the wall times,
this stays near what an idle machine's wall time would be.

--compile-first runs `python -m fastrnn compile --cells CELL --dtypes DTYPE` in
the empty cache before the first interpreter, and reports its time: the first
interpreter's figures should then match the warm-cache ones.

The fastrnn measured is the one the interpreters import: the PYTHONPATH given
(`PYTHONPATH=/path/to/checkout python benchmarks/cold_start.py`), else this
checkout. Its path is printed. The interpreters run with OPENBLAS_CORETYPE and
OPENBLAS_L2_SIZE removed from their environment (see DESIGN.md on benchmarks).
"""

import argparse
import datetime
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CELLS = ("rnn", "rnn_relu", "lstm", "gru", "gru_reset_before")  # fastrnn.layers.CELL_NAMES
DTYPES = ("float32", "float64")
MID_SHAPE = (50, 32, 64, 128)  # T, B, I, H
MAX_NORM = 5.0
_BLAS_OVERRIDES = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")


def measure_in_this_process(cell, dtype):
    """Seconds of each phase, timed from an interpreter that has imported nothing
    of fastrnn's (nor numpy, numba) yet, and where fastrnn was loaded from."""
    started, cpu_started = time.perf_counter(), time.process_time()
    import fastrnn  # importing is the first thing measured

    imported = time.perf_counter()
    import numpy as np  # already loaded by fastrnn

    n_steps, batch, input_size, hidden_size = MID_SHAPE
    layer = fastrnn.layers.layer_for_cell(cell, input_size, hidden_size, dtype=dtype, seed=0)
    x = np.random.default_rng(0).standard_normal((n_steps, batch, input_size)).astype(dtype)
    built = time.perf_counter()
    with fastrnn.no_grad():
        layer(x)
    inferred = time.perf_counter()

    def training_step():
        out, _ = layer(x)
        layer.backward(np.ones_like(out), max_norm=MAX_NORM)

    training_step()
    trained, cpu_trained = time.perf_counter(), time.process_time()
    training_step()
    trained_again = time.perf_counter()
    return {"import": imported - started, "inference": inferred - built,
            "train": trained - inferred, "second_train": trained_again - trained,
            "cpu": cpu_trained - cpu_started,
            "fastrnn": fastrnn.__file__, "version": fastrnn.__version__,
            "numba": sys.modules["numba"].__version__}


def _child_environment(cache_dir):
    env = {k: v for k, v in os.environ.items() if k not in _BLAS_OVERRIDES}
    env["NUMBA_CACHE_DIR"] = cache_dir
    # A given PYTHONPATH comes first: this checkout is only the fallback.
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [os.environ.get("PYTHONPATH"), ROOT]))
    return env


def _run(command, env, what):
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=3600)
    if result.returncode != 0:
        raise RuntimeError(f"{what} failed (exit {result.returncode}):\n{result.stderr}")
    return result


def _measure_in_child(cell, dtype, cache_dir):
    command = [sys.executable, os.path.abspath(__file__), "--child", cell, dtype]
    result = _run(command, _child_environment(cache_dir), f"measuring {cell} {dtype}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def _compile_in_child(cell, dtype, cache_dir):
    """Seconds `python -m fastrnn compile` takes for one cell and dtype."""
    command = [sys.executable, "-m", "fastrnn", "compile", "--cells", cell, "--dtypes", dtype]
    started = time.perf_counter()
    _run(command, _child_environment(cache_dir), f"fastrnn compile {cell} {dtype}")
    return time.perf_counter() - started


def measure_pair(cell, dtype, compile_first):
    """(first process, warm-cache process, compile seconds or None), one empty cache."""
    with tempfile.TemporaryDirectory(prefix="fastrnn-cold-start-") as cache_dir:
        compile_seconds = _compile_in_child(cell, dtype, cache_dir) if compile_first else None
        first = _measure_in_child(cell, dtype, cache_dir)
        warm = _measure_in_child(cell, dtype, cache_dir)
    return first, warm, compile_seconds


def _total(run):
    return run["import"] + run["inference"] + run["train"]


def _median(runs, key):
    return statistics.median(key(run) for run in runs)


def _cpu_model():
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown CPU"


def _source_revision(fastrnn_file):
    """`git log -1 --oneline` of the checkout the measured fastrnn lives in, if any."""
    checkout = os.path.dirname(os.path.dirname(fastrnn_file))
    result = subprocess.run(["git", "-C", checkout, "log", "-1", "--oneline"],
                            capture_output=True, text=True)
    if result.returncode != 0:
        return "not a git checkout"
    dirty = subprocess.run(["git", "-C", checkout, "status", "--porcelain", "--untracked-files=no"],
                           capture_output=True, text=True).stdout.strip()
    return result.stdout.strip() + (" + uncommitted changes" if dirty else "")


def _split(text, choices, name):
    values = [value.strip() for value in text.split(",") if value.strip()]
    unknown = [value for value in values if value not in choices]
    if not values or unknown:
        raise argparse.ArgumentTypeError(
            f"{name}: choose from {', '.join(choices)} (comma-separated), got {text!r}")
    return values


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", default="rnn,lstm,gru",
                        type=lambda text: _split(text, CELLS, "--cells"))
    parser.add_argument("--dtypes", default="float32",
                        type=lambda text: _split(text, DTYPES, "--dtypes"))
    parser.add_argument("--repeats", type=int, default=3,
                        help="pairs of interpreters per cell and dtype (medians shown)")
    parser.add_argument("--compile-first", action="store_true",
                        help="run `fastrnn compile` for the cell and dtype in the empty "
                             "cache first")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(measure_in_this_process(*args.child)))
        return 0
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")

    first_label = "after `fastrnn compile`" if args.compile_first else "cold (empty cache)"
    header = (f"{'cell':8s} {'dtype':7s} |" + (f" {'compile s':>9s} |" if args.compile_first
                                                else "")
              + f" {'import s':>8s} {'infer s':>8s} {'train s':>8s} {'total s':>8s}"
              f" {'CPU s':>7s} {'2nd step ms':>11s} | {'import s':>8s} {'infer s':>8s} {'train s':>8s}"
              f" {'total s':>8s}")
    printed_header = False
    for cell in args.cells:
        for dtype in args.dtypes:
            pairs = [measure_pair(cell, dtype, args.compile_first) for _ in range(args.repeats)]
            firsts = [first for first, _, _ in pairs]
            warms = [warm for _, warm, _ in pairs]
            if not printed_header:
                measured = firsts[0]
                print(f"fastrnn cold start, {datetime.date.today()}, {_cpu_model()}, "
                      f"{len(os.sched_getaffinity(0))} cores; median of {args.repeats} "
                      f"run(s); layer shape mid (T,B,I,H) = {MID_SHAPE}")
                print(f"fastrnn {measured['version']} from {measured['fastrnn']} "
                      f"({_source_revision(measured['fastrnn'])}); numba {measured['numba']}")
                bars = [k for k, char in enumerate(header) if char == "|"]
                print(f"{'':{bars[-2]}s}| {first_label}, new process".ljust(bars[-1])
                      + "| warm cache, new process")
                print(header)
                printed_header = True
            row = f"{cell:8s} {dtype:7s} |"
            if args.compile_first:
                row += f" {statistics.median(c for _, _, c in pairs):9.1f} |"
            row += (f" {_median(firsts, lambda r: r['import']):8.2f}"
                    f" {_median(firsts, lambda r: r['inference']):8.2f}"
                    f" {_median(firsts, lambda r: r['train']):8.2f}"
                    f" {_median(firsts, _total):8.2f}"
                    f" {_median(firsts, lambda r: r['cpu']):7.2f}"
                    f" {1e3 * _median(firsts, lambda r: r['second_train']):11.2f} |"
                    f" {_median(warms, lambda r: r['import']):8.2f}"
                    f" {_median(warms, lambda r: r['inference']):8.2f}"
                    f" {_median(warms, lambda r: r['train']):8.2f}"
                    f" {_median(warms, _total):8.2f}")
            print(row, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
