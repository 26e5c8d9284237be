"""The adding problem (Hochreiter & Schmidhuber, 1997): a long-memory test.

Each sequence has T steps of two channels: a random value in [0, 1] and a marker
that is 1 at exactly two steps (one in each half of the sequence) and 0 elsewhere.
The target is the sum of the two marked values, read out after the last step.
Predicting the mean, 1.0, scores MSE = Var(U + U) = 1/6 ~ 0.167; beating that
means carrying the first marked value across at least T/2 steps.

An Elman RNN and an LSTM are trained with the same budget (same batches, Adam,
gradient-norm clipping). Typically the Elman RNN stays near the trivial MSE while
the LSTM drives it below 0.01.

    python examples/adding_problem.py            # full run (a few minutes on 2 cores)
    python examples/adding_problem.py --quick    # a few seconds, smoke test
"""

import argparse
import os
import sys
import time
from collections import deque

import numpy as np

try:
    import fastrnn
except ImportError:  # run from a source checkout without installing
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    import fastrnn

TRIVIAL_MSE = 1.0 / 6.0  # predicting 1.0 for the sum of two independent U(0, 1)
TARGET_MSE = 0.01
SMOOTHING = 50  # steps averaged before comparing the training MSE with TARGET_MSE


def adding_batch(rng, n_steps, batch_size, dtype=np.float32):
    """Inputs (T, B, 2) and targets (B, 1) of the adding problem."""
    x = np.zeros((n_steps, batch_size, 2), dtype=dtype)
    x[:, :, 0] = rng.random((n_steps, batch_size))
    half = n_steps // 2
    rows = np.arange(batch_size)
    first = rng.integers(0, half, size=batch_size)
    second = rng.integers(half, n_steps, size=batch_size)
    x[first, rows, 1] = 1.0
    x[second, rows, 1] = 1.0
    y = (x[first, rows, 0] + x[second, rows, 0])[:, None]
    return x, y.astype(dtype)


def train(cell, args):
    """Train one model; returns (per-step losses, steps to TARGET_MSE or None, model)."""
    model = fastrnn.SequenceModel(
        cell=cell, input_size=2, hidden_size=args.hidden_size, output_size=1,
        output="last", loss="mse", optimizer=fastrnn.optim.Adam(lr=args.lr),
        max_norm=args.max_norm, seed=args.seed)
    # The same data seed for every cell: both models see exactly the same batches.
    data_rng = np.random.default_rng([args.seed, 1])
    losses, recent = [], deque(maxlen=SMOOTHING)
    solved_at = None
    start = time.perf_counter()
    for step in range(1, args.train_steps + 1):
        x, y = adding_batch(data_rng, args.steps_per_seq, args.batch_size)
        # Each batch is fresh and the loss is computed before the update, so the
        # training loss is an unbiased estimate of the held-out error.
        loss = model.train_step(x, y)
        losses.append(loss)
        recent.append(loss)
        smoothed = float(np.mean(recent))
        if solved_at is None and len(recent) == SMOOTHING and smoothed < TARGET_MSE:
            solved_at = step
        if step % args.log_every == 0 or step == args.train_steps:
            print(f"  {cell:>4} step {step:5d}  mse (mean of last {len(recent)}) {smoothed:.4f}"
                  f"  {time.perf_counter() - start:6.1f}s", flush=True)
        if solved_at is not None and args.stop_when_solved:
            break
    return losses, solved_at, model, time.perf_counter() - start


def save_plot(path, curves, args):
    try:
        import matplotlib
    except ImportError:
        print(f"matplotlib is not installed: skipping the plot {path} "
              "(pip install matplotlib to get it)")
        return
    matplotlib.use("Agg")  # files only; never needs a display
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for cell, losses in curves.items():
        losses = np.asarray(losses)
        window = min(SMOOTHING, len(losses))
        smoothed = np.convolve(losses, np.ones(window) / window, mode="valid")
        ax.plot(np.arange(window, len(losses) + 1), smoothed, label=cell.upper())
    ax.axhline(TRIVIAL_MSE, color="gray", linestyle="--", label="predict 1.0 (1/6)")
    ax.axhline(TARGET_MSE, color="gray", linestyle=":", label=f"MSE {TARGET_MSE}")
    ax.set_yscale("log")
    ax.set_xlabel("training step")
    ax.set_ylabel(f"MSE (mean of last {SMOOTHING} steps)")
    ax.set_title(f"Adding problem, T={args.steps_per_seq}, hidden {args.hidden_size}, "
                 f"batch {args.batch_size}")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    print(f"saved loss curves to {path}")


def parse_args(argv):
    parser = argparse.ArgumentParser(
        description="The adding problem: an Elman RNN against an LSTM on a T-step memory "
                    "task (Hochreiter & Schmidhuber 1997).")
    parser.add_argument("--quick", action="store_true",
                        help="tiny run for smoke tests (T=20, 40 steps)")
    parser.add_argument("--steps-per-seq", type=int, default=100, metavar="T",
                        help="sequence length T (default 100)")
    parser.add_argument("--train-steps", type=int, default=2000,
                        help="training steps per model (default 2000)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--hidden-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=1e-2, help="Adam learning rate")
    parser.add_argument("--max-norm", type=float, default=1.0,
                        help="gradient-norm clipping threshold")
    parser.add_argument("--cells", nargs="+", default=["rnn", "lstm"],
                        choices=fastrnn.layers.CELL_NAMES)
    parser.add_argument("--stop-when-solved", action="store_true",
                        help=f"stop a model once its MSE is below {TARGET_MSE}")
    parser.add_argument("--test-size", type=int, default=2000,
                        help="sequences in the fresh test batch")
    parser.add_argument("--plot", default="adding_problem.png", metavar="PATH",
                        help="PNG of the loss curves (needs matplotlib; default "
                             "adding_problem.png)")
    parser.add_argument("--no-plot", action="store_true", help="do not save a plot")
    parser.add_argument("--log-every", type=int, default=250, metavar="N")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.quick:
        args.steps_per_seq, args.train_steps, args.batch_size = 20, 40, 16
        args.hidden_size, args.test_size, args.log_every = 16, 200, 20
    return args


def main(argv=None):
    args = parse_args(argv)
    print(f"adding problem: T={args.steps_per_seq}, batch {args.batch_size}, hidden "
          f"{args.hidden_size}, Adam lr {args.lr}, max_norm {args.max_norm}, "
          f"{args.train_steps} steps per model, seed {args.seed}")
    test_x, test_y = adding_batch(np.random.default_rng([args.seed, 2]), args.steps_per_seq,
                                  args.test_size)
    trivial = float(np.mean((test_y - 1.0) ** 2))
    curves, results = {}, {}
    for cell in args.cells:
        losses, solved_at, model, seconds = train(cell, args)
        test_mse = float(np.mean((model.predict(test_x) - test_y) ** 2))
        curves[cell], results[cell] = losses, (solved_at, test_mse, len(losses), seconds)

    print(f"\nresults (test batch of {args.test_size} fresh sequences; "
          f"predicting 1.0 scores MSE {trivial:.4f}):")
    for cell, (solved_at, test_mse, steps, seconds) in results.items():
        reached = f"after {solved_at} steps" if solved_at else f"not reached in {steps} steps"
        print(f"  {cell.upper():>4}: MSE < {TARGET_MSE} {reached}; final test MSE "
              f"{test_mse:.4f} ({test_mse / trivial:.1%} of trivial); {seconds:.0f}s")
    if not args.no_plot:
        save_plot(args.plot, curves, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
