"""The `fastrnn` command line (also `python -m fastrnn`)."""

import argparse
import sys

import numpy as np

CELL_CHOICES = ("rnn", "rnn_relu", "lstm", "gru")


def build_layer(cell, input_size, hidden_size, **options):
    """A layer for a command-line cell name."""
    from . import GRU, LSTM, RNN

    if cell in ("rnn", "rnn_tanh"):
        return RNN(input_size, hidden_size, nonlinearity="tanh", **options)
    if cell == "rnn_relu":
        return RNN(input_size, hidden_size, nonlinearity="relu", **options)
    if cell == "lstm":
        return LSTM(input_size, hidden_size, **options)
    if cell == "gru":
        return GRU(input_size, hidden_size, **options)
    raise ValueError(f"cell must be one of {CELL_CHOICES}, got {cell!r}")


def _gradcheck(args):
    from .gradcheck import gradcheck

    rng = np.random.default_rng(args.seed)
    layer = build_layer(args.cell, args.input_size, args.hidden_size, num_layers=args.layers,
                        bidirectional=args.bidirectional, bias=not args.no_bias,
                        dtype=np.float64, seed=args.seed)
    x = rng.standard_normal((args.steps, args.batch, args.input_size))
    rows = layer.num_layers * layer.num_directions
    h0 = rng.standard_normal((rows, args.batch, args.hidden_size))
    state = (h0, rng.standard_normal(h0.shape)) if args.cell == "lstm" else h0
    lengths = rng.integers(1, args.steps + 1, size=args.batch) if args.lengths else None
    report = gradcheck(layer, x, state, lengths, eps=args.eps, atol=args.atol, rtol=args.rtol,
                       seed=args.seed)
    print(f"{args.cell}: layers={args.layers} bidirectional={args.bidirectional} "
          f"T={args.steps} B={args.batch} I={args.input_size} H={args.hidden_size}"
          + (f" lengths={lengths.tolist()}" if lengths is not None else ""))
    print(report)
    return 0 if report.ok else 1


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
    return parser


def main(argv=None):
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except (ValueError, TypeError, KeyError, OSError) as error:
        # Bad input is reported as one line and exit status 2, never a traceback.
        print(f"fastrnn {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
