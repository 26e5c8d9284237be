"""Multicore scaling of fastrnn against torch: training-step and forward medians for
each thread count, cell and shape, with the machine's GEMM throughput alongside.

    python benchmarks/scaling.py --threads 1,2,4,8,16 --cells lstm,gru \
        --shapes big,large,wide --json scaling.json

Not an asv benchmark (asv collects only time_/peakmem_/track_ names): a one-shot
script for a machine lent for a few minutes.
"""

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from fastrnn import _threads, bench  # noqa: E402


def _with_strategy(strategy, workload):
    """The fastrnn workload run under one threading strategy (see fastrnn._threads)."""
    def run():
        _threads.STRATEGY = strategy
        workload()
    return run


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", default="1,2,4,8,16")
    parser.add_argument("--cells", default="lstm,gru")
    parser.add_argument("--shapes", default="big,large,wide")
    parser.add_argument("--modes", default="train,forward")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--strategies", default="auto,blas",
                        help="fastrnn threading strategies to compare")
    parser.add_argument("--json", help="write the results here as they come")
    args = parser.parse_args(argv)
    cores = len(os.sched_getaffinity(0))
    thread_counts = [int(t) for t in args.threads.split(",") if int(t) <= cores]
    strategies = args.strategies.split(",")
    frameworks = [f"fastrnn[{s}]" for s in strategies] + (
        ["torch"] if bench.peer_installed("torch") else [])
    results = {"cores": cores, "frameworks": frameworks, "rows": []}
    started = time.perf_counter()
    for threads in thread_counts:
        restore = bench.set_threads(threads)
        try:
            gemm = bench.gemm_gflops(threads)
            print(f"threads {threads}: numpy fp32 GEMM {gemm:.0f} GFLOP/s", flush=True)
            for cell in args.cells.split(","):
                for name in args.shapes.split(","):
                    shape = bench.NAMED_SHAPES[name]
                    for mode in args.modes.split(","):
                        workloads = {}
                        for framework in frameworks:
                            if framework.startswith("fastrnn["):
                                strategy = framework[len("fastrnn["):-1]
                                workloads[framework] = _with_strategy(
                                    strategy, bench.make_workload("fastrnn", cell, mode, shape))
                            else:
                                workloads[framework] = bench.make_workload(
                                    framework, cell, mode, shape)
                        ms = bench.median_ms(workloads, args.repeats)
                        best = min(ms[f] for f in frameworks if f.startswith("fastrnn"))
                        gflops = bench.flop_count(cell, shape, mode) / best / 1e6
                        row = dict(threads=threads, cell=cell, shape=name, mode=mode,
                                   gemm_gflops=gemm, fastrnn_gflops=gflops, **ms)
                        results["rows"].append(row)
                        timings = "  ".join(f"{f} {ms[f]:8.2f}" for f in frameworks)
                        ratio = f"  torch/best x{ms['torch'] / best:.2f}" if "torch" in ms else ""
                        print(f"  {cell:4s} {name:5s} {mode:7s} {timings} ms{ratio}  best "
                              f"{gflops:6.1f} GF/s ({100 * gflops / gemm:.0f}% GEMM)"
                              f"  [{time.perf_counter() - started:.0f}s]", flush=True)
                        if args.json:
                            with open(args.json, "w") as file:
                                json.dump(results, file, indent=1)
        finally:
            restore()
    return 0


if __name__ == "__main__":
    sys.exit(main())
