"""Sequence classification: scikit-learn's 8x8 handwritten digits, read row by row.

Each image becomes a sequence of T=8 steps with 8 features (one pixel row per step,
scaled to [0, 1]); the model classifies it from the state after the last row
(output="last", cross-entropy). The data set ships inside scikit-learn, so nothing
is downloaded.

    python examples/digits.py            # full run: test accuracy above 90%
    python examples/digits.py --quick    # a few seconds, smoke test
"""

import argparse
import os
import sys
import time

import numpy as np

try:
    import fastrnn
except ImportError:  # run from a source checkout without installing
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    import fastrnn

MISSING_SKLEARN = 2  # exit status when scikit-learn is not installed


def load_sequences():
    """Images as (T=8, N, 8) float32 sequences in [0, 1] and int64 labels (N,)."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = digits.images.astype(np.float32) / 16.0  # pixel intensities are 0..16
    return np.ascontiguousarray(images.transpose(1, 0, 2)), digits.target.astype(np.int64)


def split(n_items, test_fraction, rng):
    order = rng.permutation(n_items)
    n_test = int(round(n_items * test_fraction))
    return order[n_test:], order[:n_test]


def accuracy(model, x, y):
    return float(np.mean(model.predict(x).argmax(axis=1) == y))


def parse_args(argv):
    parser = argparse.ArgumentParser(
        description="Classify scikit-learn's 8x8 digits with a recurrent network that reads "
                    "each image one pixel row per step.")
    parser.add_argument("--quick", action="store_true", help="tiny run for smoke tests")
    parser.add_argument("--cell", default="lstm", choices=fastrnn.layers.CELL_NAMES)
    parser.add_argument("--hidden-size", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=5e-3, help="Adam learning rate")
    parser.add_argument("--max-norm", type=float, default=5.0,
                        help="gradient-norm clipping threshold")
    parser.add_argument("--test-fraction", type=float, default=0.25)
    parser.add_argument("--seed", type=int, default=0,
                        help="seeds the train/test split, the weights and the batch order")
    args = parser.parse_args(argv)
    if args.quick:
        args.epochs, args.hidden_size = 2, 32
    return args


def main(argv=None):
    args = parse_args(argv)
    try:
        x, y = load_sequences()
    except ImportError:
        print("digits.py needs scikit-learn for its bundled digits data set: "
              "pip install scikit-learn", file=sys.stderr)
        return MISSING_SKLEARN
    rng = np.random.default_rng(args.seed)
    train_idx, test_idx = split(len(y), args.test_fraction, rng)
    x_train, y_train = x[:, train_idx], y[train_idx]
    x_test, y_test = x[:, test_idx], y[test_idx]
    print(f"digits: {len(y_train)} train / {len(y_test)} test images as T=8 rows of 8 pixels; "
          f"{args.cell.upper()} hidden {args.hidden_size}, batch {args.batch_size}, Adam lr "
          f"{args.lr}, seed {args.seed}")

    model = fastrnn.SequenceModel(
        cell=args.cell, input_size=8, hidden_size=args.hidden_size, output_size=10,
        output="last", loss="cross_entropy", optimizer=fastrnn.optim.Adam(lr=args.lr),
        max_norm=args.max_norm, seed=args.seed)
    start = time.perf_counter()
    for epoch in range(1, args.epochs + 1):
        order = rng.permutation(len(y_train))
        losses = []
        for first in range(0, len(order), args.batch_size):
            batch = order[first:first + args.batch_size]
            losses.append(model.train_step(x_train[:, batch], y_train[batch]))
        print(f"  epoch {epoch:3d}  train loss {np.mean(losses):.4f}  test accuracy "
              f"{accuracy(model, x_test, y_test):.2%}  {time.perf_counter() - start:5.1f}s",
              flush=True)

    test_accuracy = accuracy(model, x_test, y_test)
    print(f"\nafter {args.epochs} epochs ({time.perf_counter() - start:.0f}s): train accuracy "
          f"{accuracy(model, x_train, y_train):.2%}, test accuracy {test_accuracy:.2%} "
          f"({round(test_accuracy * len(y_test))}/{len(y_test)} correct)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
