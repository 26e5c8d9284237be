"""Memory of a training step, fastrnn against torch: how much a process's resident
memory rises when a model is built and trained, once the framework is loaded.

    python benchmarks/memory.py --cells lstm,gru,rnn --shapes big,large,wide

Each framework, cell and shape runs in a fresh interpreter, which imports the
same modules whichever framework it measures (fastrnn.bench imports torch when
it is installed, to give it the same thread count). There the workload of
`fastrnn bench` (zero_grad, forward, backward of out.sum(), clip) first runs
twice on a model of its own over a short sequence (16 steps at most), which
loads the kernels the step uses. Then the peak resident memory (Linux's VmHWM,
reset through /proc/self/clear_refs) is watched while a second model and its
full-length input are built and run a few steps. "step MB" is that peak minus
the resident memory before: what training a model of that shape takes
(parameters, gradients, input, activations, temporaries). "peak MB" is the
whole process's, and includes the interpreter, both frameworks' code and
fastrnn's compiled kernels.

The short warm-up keeps memory that either framework freed from serving the
measured steps (a full-length warm-up let torch's measured steps reuse the
activations it freed after backward, while fastrnn's warm-up layer keeps its
own for a later backward). Where a short sequence runs fastrnn's serial
kernels and the full one its parallel ones (RNN and GRU at the small shape),
the first start of its worker threads falls within the measurement. Memory
that the warm-up left resident (freed heap pages, BLAS buffers, temporaries as
large as a weight, which do not shrink with the sequence) can still serve the
measured steps and hide from "step MB": compare "peak MB" too.

Not an asv benchmark (asv's peakmem_ is the whole process's peak, fastrnn alone).
"""

import argparse
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from fastrnn import bench  # noqa: E402

_CLEAR_REFS = "/proc/self/clear_refs"


def _status_mb(key):
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"/proc/self/status has no {key}")


def measure(framework, cell, shape, steps, threads):
    """(step MB, peak MB) of `steps` training steps, in this process."""
    bench.set_threads(threads)
    short = bench.Shape("", min(shape.T, 16), shape.B, shape.I, shape.H)
    warm_up = bench.make_workload(framework, cell, "train", short)
    warm_up()
    warm_up()
    with open(_CLEAR_REFS, "w") as clear_refs:
        clear_refs.write("5")  # VmHWM := VmRSS
    before = _status_mb("VmRSS")
    workload = bench.make_workload(framework, cell, "train", shape, seed=1)
    for _ in range(steps):
        workload()
    peak = _status_mb("VmHWM")
    return peak - before, peak


def _measure_in_child(framework, cell, shape, steps, threads):
    command = [sys.executable, os.path.abspath(__file__), "--child", framework, cell,
               f"{shape.T},{shape.B},{shape.I},{shape.H}", str(steps), str(threads)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=1200)
    if result.returncode != 0:
        raise RuntimeError(f"measuring {framework} {cell} {shape} failed:\n{result.stderr}")
    step_mb, peak_mb = json.loads(result.stdout.strip().splitlines()[-1])
    return step_mb, peak_mb


def _shape_texts(text):
    """'big,large' -> ['big', 'large']; '20,4,8,16;mid' -> ['20,4,8,16', 'mid']."""
    texts = []
    for part in text.split(";"):
        part = part.strip()
        names = part.split(",")
        texts.extend(names if all(name in bench.GRID for name in names) else [part])
    return texts


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", default="lstm,gru,rnn")
    parser.add_argument("--shapes", default="big,large,wide",
                        help="grid names separated by ',', or T,B,I,H; several "
                             "separated by ';'")
    parser.add_argument("--frameworks", default="fastrnn,torch")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--child", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        framework, cell, shape, steps, threads = args.child
        print(json.dumps(measure(framework, cell, bench.parse_shape(shape), int(steps),
                                 int(threads))))
        return 0
    if not os.path.exists(_CLEAR_REFS):
        parser.error("needs Linux's /proc/self/clear_refs to reset the peak")
    frameworks = []
    for framework in args.frameworks.split(","):
        if framework != "fastrnn" and not bench.peer_installed(framework):
            print(f"{framework} is not installed: skipped")
            continue
        frameworks.append(framework)
    cells = bench.parse_cells(args.cells)
    shapes = [bench.parse_shape(text) for text in _shape_texts(args.shapes)]
    header = f"{'cell':5s} {'shape':24s}" + "".join(
        f" {name + ' step MB':>16s} {name + ' peak MB':>16s}" for name in frameworks)
    print(f"training step memory, float32, {args.threads} threads, {args.steps} steps")
    print(header)
    for cell in cells:
        for shape in shapes:
            row = f"{cell:5s} {str(shape):24s}"
            for framework in frameworks:
                step_mb, peak_mb = _measure_in_child(framework, cell, shape, args.steps,
                                                     args.threads)
                row += f" {step_mb:16.1f} {peak_mb:16.1f}"
            print(row, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
