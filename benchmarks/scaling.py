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

from fastrnn import bench  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", default="1,2,4,8,16")
    parser.add_argument("--cells", default="lstm,gru")
    parser.add_argument("--shapes", default="big,large,wide")
    parser.add_argument("--modes", default="train,forward")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", help="write the results here as they come")
    args = parser.parse_args(argv)
    cores = len(os.sched_getaffinity(0))
    thread_counts = [int(t) for t in args.threads.split(",") if int(t) <= cores]
    frameworks = ["fastrnn"] + (["torch"] if bench.peer_installed("torch") else [])
    results = {"cores": cores, "frameworks": frameworks, "rows": []}
    started = time.perf_counter()
    for threads in thread_counts:
        restore = bench.set_threads(threads)
        try:
            gemm = bench.gemm_gflops(threads)
            print(f"threads {threads}: numpy fp32 GEMM {gemm:.0f} GFLOP/s", flush=True)
            for cell in args.cells.split(","):
                for name in args.shapes.split(","):
                    shape = bench.GRID[name]
                    for mode in args.modes.split(","):
                        workloads = {f: bench.make_workload(f, cell, mode, shape)
                                     for f in frameworks}
                        ms = bench.median_ms(workloads, args.repeats)
                        gflops = bench.flop_count(cell, shape, mode) / ms["fastrnn"] / 1e6
                        row = dict(threads=threads, cell=cell, shape=name, mode=mode,
                                   gemm_gflops=gemm, fastrnn_gflops=gflops, **ms)
                        results["rows"].append(row)
                        ratio = (f" torch {ms['torch']:9.2f} ms  x{ms['torch'] / ms['fastrnn']:.2f}"
                                 if "torch" in ms else "")
                        print(f"  {cell:4s} {name:5s} {mode:7s} fastrnn {ms['fastrnn']:9.2f} ms "
                              f"{gflops:6.1f} GF/s ({100 * gflops / gemm:.0f}% GEMM){ratio}"
                              f"  [{time.perf_counter() - started:.0f}s]", flush=True)
                        if args.json:
                            with open(args.json, "w") as file:
                                json.dump(results, file, indent=1)
        finally:
            restore()
    return 0


if __name__ == "__main__":
    sys.exit(main())
