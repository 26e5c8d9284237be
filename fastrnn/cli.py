"""The `fastrnn` command line (also `python -m fastrnn`)."""

import argparse
import sys
import time

import numpy as np

from ._compile import announce_compilation
from .layers import CELL_NAMES as CELL_CHOICES
from .layers import layer_for_cell


def _gradcheck(args):
    from .gradcheck import gradcheck

    rng = np.random.default_rng(args.seed)
    layer = layer_for_cell(args.cell, args.input_size, args.hidden_size, num_layers=args.layers,
                        bidirectional=args.bidirectional, bias=not args.no_bias,
                        dtype=np.float64, seed=args.seed)
    x = rng.standard_normal((args.steps, args.batch, args.input_size))
    rows = layer.num_layers * layer.num_directions
    h0 = rng.standard_normal((rows, args.batch, args.hidden_size))
    state = (h0, rng.standard_normal(h0.shape)) if layer.has_cell_state else h0
    lengths = rng.integers(1, args.steps + 1, size=args.batch) if args.lengths else None
    report = gradcheck(layer, x, state, lengths, eps=args.eps, atol=args.atol, rtol=args.rtol,
                       seed=args.seed)
    print(f"{args.cell}: layers={args.layers} bidirectional={args.bidirectional} "
          f"T={args.steps} B={args.batch} I={args.input_size} H={args.hidden_size}"
          + (f" lengths={lengths.tolist()}" if lengths is not None else ""))
    print(report)
    return 0 if report.ok else 1


def _train_model(args, text, log=print, parallel=None):
    """Build (or resume) a character model and train it with truncated BPTT; returns
    the model, or with `parallel` (model -> a fastrnn.distributed.DataParallel) the
    DataParallel that trained it."""
    from . import optim
    from .model import SequenceModel, load

    if getattr(args, "resume", None):
        model = load(args.resume)
        if model.vocab is None:
            raise ValueError(f"--resume: {args.resume!r} is not a text model")
        log(f"resumed {model!r} from {args.resume}")
    else:
        model = SequenceModel.from_text(
            text, cell=args.cell, hidden_size=args.hidden_size, num_layers=args.layers,
            dropout=args.dropout if args.layers > 1 else 0.0,
            optimizer=optim.Adam(lr=args.lr), max_norm=args.max_norm, seed=args.seed)
    trainer = model
    if parallel is not None:
        from ._threads import get_num_threads

        trainer = parallel(model)
        log(f"data-parallel on {trainer.size} MPI ranks, {get_num_threads()} kernel "
            "thread(s) each")
    config = model.config  # a resumed model's, not the command line's
    log(f"corpus: {len(text):,} characters, vocabulary {len(model.vocab)}; "
        f"model: {config['cell']} H={config['hidden_size']} x{config['num_layers']}, "
        f"{model.num_parameters:,} parameters")
    started = time.perf_counter()
    last_report = [started]

    def report(step, loss):
        now = time.perf_counter()
        if now - last_report[0] >= args.report_every or step == 1:
            last_report[0] = now
            log(f"step {step:5d}  loss {loss:.3f}  ({now - started:.0f}s, "
                f"{1e3 * (now - started) / step:.1f} ms/step)")
            if args.sample_every_report:
                log("  sample: " + repr(model.generate(args.prime, 120, temperature=0.8,
                                                       seed=step)))

    trainer.fit(text, window=args.window, batch_size=args.batch_size,
                steps=args.steps, time_budget=args.seconds, progress=False, callback=report)
    return trainer


def _add_training_options(command, steps, seconds, hidden_size):
    command.add_argument("--cell", choices=CELL_CHOICES, default="lstm")
    command.add_argument("--hidden-size", type=int, default=hidden_size)
    command.add_argument("--layers", type=int, default=1)
    command.add_argument("--dropout", type=float, default=0.0,
                         help="dropout between stacked layers (training only)")
    command.add_argument("--window", type=int, default=64, help="truncated-BPTT window")
    command.add_argument("--batch-size", type=int, default=32)
    command.add_argument("--lr", type=float, default=3e-3, help="Adam learning rate")
    command.add_argument("--max-norm", type=float, default=5.0, help="gradient-norm clip")
    command.add_argument("--steps", type=int, default=steps, help="training steps (max)")
    command.add_argument("--seconds", type=float, default=seconds, help="time budget (max)")
    command.add_argument("--seed", type=int, default=0)
    command.add_argument("--prime", default="def ", help="text the samples start from")
    command.add_argument("--report-every", type=float, default=5.0,
                         help="seconds between progress lines")


def _demo(args):
    from .corpus import read_text, stdlib_source

    text = read_text(args.text) if args.text else stdlib_source(args.max_chars)
    print("fastrnn demo: a character model learns to write Python from the standard "
          "library's own source" if not args.text else f"fastrnn demo: training on {args.text}")
    args.sample_every_report = True
    model = _train_model(args, text)
    for temperature in (0.5, 0.8):
        print(f"\n--- sample, temperature {temperature} ---")
        print(args.prime + model.generate(args.prime, args.n, temperature=temperature,
                                          seed=args.seed))
    if args.out:
        model.save(args.out)
        print(f"\nsaved checkpoint to {args.out}")
    return 0


def _train(args):
    from .corpus import read_text

    text = read_text(args.text)
    args.sample_every_report = False
    if not args.mpi:
        model = _train_model(args, text)
        model.save(args.out)
        print(f"saved checkpoint to {args.out}")
        return 0
    try:
        from . import distributed
    except ImportError as error:
        print(f"fastrnn train: error: --mpi: {error}", file=sys.stderr)
        return 2
    # Every rank trains; rank 0 alone reports and writes the checkpoint.
    log = print if distributed.MPI.COMM_WORLD.Get_rank() == 0 else _silent
    trainer = _train_model(args, text, log, parallel=lambda model: distributed.DataParallel(
        model, timeout=args.mpi_timeout))
    trainer.save(args.out)
    log(f"saved checkpoint to {args.out}")
    return 0


def _silent(*_):
    pass


def _sample(args):
    from .model import load

    model = load(args.checkpoint)
    if model.vocab is None:
        raise ValueError(f"checkpoint: {args.checkpoint!r} is not a text model")
    print(args.prime + model.generate(args.prime, args.n, temperature=args.temperature,
                                      top_k=args.top_k, seed=args.seed))
    return 0


def _bench(args):
    from . import bench

    return bench.run(args)


def _comma_separated(choices):
    """argparse type: a comma-separated list of some of `choices`."""
    def parse(text):
        names = [name.strip() for name in text.split(",") if name.strip()]
        unknown = [name for name in names if name not in choices]
        if not names or unknown:
            raise argparse.ArgumentTypeError(
                f"choose from {', '.join(choices)} (comma-separated), got {text!r}")
        return names
    return parse


def _compile_kernels(args):
    import numba

    from ._fill_cache import cache_location, fill_cache, parallel_threads

    if numba.config.DISABLE_JIT:
        print("fastrnn compile: NUMBA_DISABLE_JIT is set, so nothing compiles")
        return 0
    print(f"fastrnn compile: filling the kernel cache in {cache_location()}")
    if parallel_threads() == 1:
        print("  the multi-threaded kernels are left out: numba may use 1 thread here "
              "(set NUMBA_NUM_THREADS=2 or more to include them)")
    started = time.perf_counter()
    for filled in fill_cache(args.cells, args.dtypes):
        what = (f"compiled {filled.compiled} kernel specialisations" if filled.compiled
                else "all kernels already cached")
        print(f"  {filled.cell:16s} {filled.dtype:7s}  {what} ({filled.seconds:.1f} s)",
              flush=True)
    print(f"done in {time.perf_counter() - started:.1f} s")
    return 0


def _add_compile_command(commands):
    command = commands.add_parser(
        "compile", help="compile the kernels ahead of time into numba's cache",
        description="Compile every kernel the given cells and dtypes can reach (inference, "
                    "training with clipping, single- and multi-threaded, the single-step "
                    "cells, the model's head, losses and optimizers) into numba's on-disk "
                    "cache (NUMBA_CACHE_DIR when set), so that later processes start "
                    "without compiling: for container images and CI. numba keys the cache "
                    "by CPU: fill it on the kind of machine that will use it.")
    command.add_argument("--cells", type=_comma_separated(CELL_CHOICES),
                         default=list(CELL_CHOICES),
                         help=f"comma-separated, from {','.join(CELL_CHOICES)} (default: all)")
    command.add_argument("--dtypes", type=_comma_separated(("float32", "float64")),
                         default=["float32", "float64"],
                         help="comma-separated, from float32,float64 (default: both)")
    command.set_defaults(run=_compile_kernels)


def _parser():
    parser = argparse.ArgumentParser(
        prog="fastrnn", description="CPU recurrent networks on fused Numba kernels.")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    check = commands.add_parser(
        "gradcheck", help="check BPTT gradients against finite differences",
        description="Build a random float64 layer and check every gradient (parameters, "
                    "input, initial state) against central finite differences. Exits 1 "
                    "when any element fails.")
    check.add_argument("--cell", choices=CELL_CHOICES, default="lstm")
    check.add_argument("--layers", type=int, default=1)
    check.add_argument("--bidirectional", action="store_true")
    check.add_argument("--no-bias", action="store_true")
    check.add_argument("--lengths", action="store_true", help="random sequence lengths")
    check.add_argument("--steps", type=int, default=5, help="time steps T")
    check.add_argument("--batch", type=int, default=3, help="batch size B")
    check.add_argument("--input-size", type=int, default=3)
    check.add_argument("--hidden-size", type=int, default=4)
    check.add_argument("--eps", type=float, default=1e-6)
    check.add_argument("--atol", type=float, default=1e-5)
    check.add_argument("--rtol", type=float, default=1e-3)
    check.add_argument("--seed", type=int, default=0)
    check.set_defaults(run=_gradcheck)

    demo = commands.add_parser(
        "demo", help="train a character model for about a minute and generate text",
        description="Train a character-level LSTM on the Python standard library's own "
                    "source (or --text FILE), printing progress and samples.")
    _add_training_options(demo, steps=None, seconds=60.0, hidden_size=128)
    demo.add_argument("--text", help="train on this text file instead")
    demo.add_argument("--max-chars", type=int, default=600_000,
                      help="corpus size taken from the standard library")
    demo.add_argument("-n", type=int, default=300, help="characters per final sample")
    demo.add_argument("--out", help="also save a checkpoint here")
    demo.set_defaults(run=_demo)

    train = commands.add_parser(
        "train", help="train a character model on a text file and save a checkpoint",
        description="Train a character-level model on --text FILE with truncated BPTT and "
                    "save it to --out.")
    train.add_argument("--text", required=True, help="UTF-8 text file to learn from")
    train.add_argument("--out", required=True, help="checkpoint file to write")
    train.add_argument("--resume", help="continue training this checkpoint")
    train.add_argument("--mpi", action="store_true",
                       help="data-parallel over MPI ranks: run as `mpiexec -n N fastrnn train "
                            "... --mpi`; each rank trains on its share of every batch "
                            "(needs pip install fastrnn[mpi])")
    train.add_argument("--mpi-timeout", type=float, default=120.0, metavar="SECONDS",
                       help="with --mpi: abort the job when a rank waits this long for "
                            "another (a dead or hung rank; default: 120)")
    _add_training_options(train, steps=1000, seconds=None, hidden_size=128)
    train.set_defaults(run=_train)

    sample = commands.add_parser(
        "sample", help="generate text from a checkpoint",
        description="Generate characters from a checkpoint written by `fastrnn train`.")
    sample.add_argument("checkpoint")
    sample.add_argument("-n", type=int, default=300, help="characters to generate")
    sample.add_argument("--temperature", type=float, default=0.8)
    sample.add_argument("--top-k", type=int, default=None)
    sample.add_argument("--prime", default="")
    sample.add_argument("--seed", type=int, default=0)
    sample.set_defaults(run=_sample)

    bench = commands.add_parser(
        "bench", help="time fastrnn against installed peers (torch, JAX)",
        description="Side-by-side timings on the benchmark grid or given shapes.")
    from . import bench as bench_module  # imports no peer: torch/JAX load only when timed

    bench_module.add_arguments(bench)
    bench.set_defaults(run=_bench)
    _add_compile_command(commands)
    return parser


def main(argv=None):
    parser = _parser()
    args = parser.parse_args(argv)
    # `compile` reports what it compiles itself; every other command says when it must.
    notice_stream = None if args.command == "compile" else sys.stderr
    try:
        with announce_compilation(notice_stream):
            return args.run(args)
    except (ValueError, TypeError, KeyError, OSError) as error:
        # Bad input is reported as one line and exit status 2, never a traceback.
        print(f"fastrnn {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
