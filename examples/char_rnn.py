"""Character-level text generation, the classic char-rnn.

A next-character model (SequenceModel.from_text) is trained with truncated BPTT
(model.fit) on a text file, or by default on Python source code that exists on every
machine with Python: a few standard-library modules. It then writes samples at a
couple of temperatures (low: conservative and repetitive; high: varied, more
mistakes).

    python examples/char_rnn.py                          # ~2 minutes on the stdlib source
    python examples/char_rnn.py --text book.txt --seconds 600 --save book.npz
    python examples/char_rnn.py --quick                  # a few seconds, smoke test
"""

import argparse
import math
import os
import sys
import time

try:
    import fastrnn
except ImportError:  # run from a source checkout without installing
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    import fastrnn
from fastrnn.corpus import stdlib_source


def parse_args(argv):
    parser = argparse.ArgumentParser(
        description="Train a character-level model on a text and generate samples from it.")
    parser.add_argument("--quick", action="store_true", help="tiny run for smoke tests")
    parser.add_argument("--text", metavar="FILE",
                        help="UTF-8 text to learn (default: the source of a few standard-"
                             "library modules)")
    parser.add_argument("--cell", default="lstm", choices=fastrnn.layers.CELL_NAMES)
    parser.add_argument("--hidden-size", type=int, default=128)
    parser.add_argument("--layers", type=int, default=1)
    parser.add_argument("--window", type=int, default=64,
                        help="truncated-BPTT window (characters per step)")
    parser.add_argument("--batch-size", type=int, default=32,
                        help="parallel streams through the text")
    parser.add_argument("--steps", type=int, default=None,
                        help="stop after this many training steps")
    parser.add_argument("--seconds", type=float, default=120.0,
                        help="stop after this many seconds of training (default 120)")
    parser.add_argument("--lr", type=float, default=3e-3, help="Adam learning rate")
    parser.add_argument("--max-norm", type=float, default=5.0,
                        help="gradient-norm clipping threshold")
    parser.add_argument("--prime", default="def ", help="text the samples start from")
    parser.add_argument("--length", type=int, default=400, help="characters per sample")
    parser.add_argument("--temperatures", type=float, nargs="+", default=[0.7, 1.0])
    parser.add_argument("--top-k", type=int, default=None,
                        help="sample only among the k most likely characters")
    parser.add_argument("--save", metavar="CKPT",
                        help="write a checkpoint (reload with fastrnn.load)")
    parser.add_argument("--log-every", type=int, default=100, metavar="N")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.quick:
        args.hidden_size, args.window, args.batch_size = 32, 32, 8
        args.steps, args.length, args.log_every = 30, 80, 10
    return args


def main(argv=None):
    args = parse_args(argv)
    if args.text:
        try:
            with open(args.text, encoding="utf-8") as file:
                text = file.read()
        except (OSError, UnicodeDecodeError) as error:
            print(f"char_rnn.py: cannot read --text {args.text}: {error}", file=sys.stderr)
            return 2
        source = args.text
    else:
        text = stdlib_source()
        source = "the standard library's own source (fastrnn.corpus.stdlib_source)"
    if args.quick:
        text = text[:30_000]
    # Hold out the end of the text to measure generalisation, not memorisation.
    n_valid = min(len(text) // 10, 50_000)
    train_text, valid_text = text[:-n_valid], text[-n_valid:]
    if len(train_text) < (args.window + 1) * args.batch_size + 1:
        print(f"char_rnn.py: the text is too short ({len(text)} characters) for batch "
              f"{args.batch_size} x window {args.window}", file=sys.stderr)
        return 2

    model = fastrnn.SequenceModel.from_text(
        text, cell=args.cell, hidden_size=args.hidden_size, num_layers=args.layers,
        optimizer=fastrnn.optim.Adam(lr=args.lr), max_norm=args.max_norm, seed=args.seed)
    print(f"corpus: {source}: {len(text):,} characters, {len(model.vocab)} distinct; "
          f"{args.cell.upper()} hidden {args.hidden_size} x {args.layers} layer(s), window "
          f"{args.window}, batch {args.batch_size}, seed {args.seed}")

    start = time.perf_counter()

    def report(step, loss):
        if step % args.log_every == 0:
            print(f"  step {step:5d}  loss {loss:.3f} nats/char "
                  f"({loss / math.log(2):.2f} bits)  {time.perf_counter() - start:5.1f}s",
                  flush=True)

    # With steps or a time budget given, fit runs as many epochs as they allow.
    history = model.fit(train_text, window=args.window, batch_size=args.batch_size,
                        steps=args.steps, time_budget=args.seconds,
                        progress=False, callback=report)
    elapsed = time.perf_counter() - start
    summary = (f"trained {len(history['loss'])} steps in {elapsed:.0f}s; final train loss "
               f"{history['loss'][-1]:.3f}")
    # evaluate() cuts the text into streams of at least window + 1 characters.
    valid_streams = min(16, (len(valid_text) - 1) // (args.window + 1))
    if valid_streams >= 1:
        valid_loss = model.evaluate(valid_text, window=args.window, batch_size=valid_streams)
        summary += (f", validation loss {valid_loss:.3f} nats/char "
                    f"({valid_loss / math.log(2):.2f} bits/char)")
    print(summary)

    samples = {}
    for temperature in args.temperatures:
        samples[temperature] = model.generate(prime=args.prime, n=args.length,
                                              temperature=temperature, top_k=args.top_k,
                                              seed=args.seed)
        print(f"\n--- sample at temperature {temperature} ---\n{args.prime}"
              f"{samples[temperature]}")
    if args.save:
        model.save(args.save)
        reloaded = fastrnn.load(args.save)
        temperature = args.temperatures[0]
        same = reloaded.generate(prime=args.prime, n=args.length, temperature=temperature,
                                 top_k=args.top_k, seed=args.seed) == samples[temperature]
        print(f"\nsaved checkpoint to {args.save} (fastrnn.load reproduces the sample: "
              f"{'yes' if same else 'NO'})")
        if not same:
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
