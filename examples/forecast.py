"""Time-series forecasting: next-value prediction on the chaotic Mackey-Glass series.

The series comes from the Mackey-Glass delay differential equation
    dx/dt = beta * x(t - tau) / (1 + x(t - tau)^10) - gamma * x(t),  tau = 17,
integrated with numpy (Euler, dt = 0.1) and sampled once per time unit, so no data is
downloaded. The first part trains, the rest (later in time) tests. The model reads
windows of the series and predicts, at every step (output="sequence", MSE), the
value `--horizon` samples ahead. It is scored on the last step of each test window
(full context) against the naive forecast "the next value equals the last one".

    python examples/forecast.py            # full run
    python examples/forecast.py --quick    # a few seconds, smoke test
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


def mackey_glass(n_samples, tau=17.0, beta=0.2, gamma=0.1, power=10, dt=0.1,
                 sample_every=1.0, transient=500, x0=1.2):
    """n_samples of the Mackey-Glass series, one per `sample_every` time units,
    after dropping `transient` samples so the start-up history is forgotten."""
    lag = int(round(tau / dt))
    stride = int(round(sample_every / dt))
    n_steps = (n_samples + transient) * stride
    x = np.full(lag + n_steps, x0)  # constant history before t = 0
    for t in range(lag, lag + n_steps - 1):
        delayed = x[t - lag]
        x[t + 1] = x[t] + dt * (beta * delayed / (1.0 + delayed ** power) - gamma * x[t])
    return x[lag + transient * stride::stride][:n_samples]


def windows(series, starts, length, horizon):
    """Inputs (length, N, 1) and targets `horizon` samples later, same shape."""
    steps = np.asarray(starts)[None, :] + np.arange(length)[:, None]
    x = series[steps][..., None]
    y = series[steps + horizon][..., None]
    return x.astype(np.float32), y.astype(np.float32)


def rmse(prediction, target):
    return float(np.sqrt(np.mean((prediction - target) ** 2)))


def parse_args(argv):
    parser = argparse.ArgumentParser(
        description="Forecast the chaotic Mackey-Glass series with a recurrent network and "
                    "compare its test RMSE with the naive last-value forecast.")
    parser.add_argument("--quick", action="store_true", help="tiny run for smoke tests")
    parser.add_argument("--cell", default="lstm", choices=fastrnn.layers.CELL_NAMES)
    parser.add_argument("--samples", type=int, default=4000, help="length of the series")
    parser.add_argument("--test-fraction", type=float, default=0.25,
                        help="the final part of the series held out for testing")
    parser.add_argument("--window", type=int, default=48, help="steps per training window")
    parser.add_argument("--horizon", type=int, default=1,
                        help="predict the value this many samples ahead")
    parser.add_argument("--train-steps", type=int, default=2000)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--hidden-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=5e-3, help="Adam learning rate")
    parser.add_argument("--max-norm", type=float, default=1.0,
                        help="gradient-norm clipping threshold")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.quick:
        args.samples, args.train_steps, args.hidden_size = 1000, 150, 16
    return args


def main(argv=None):
    args = parse_args(argv)
    series = mackey_glass(args.samples)
    n_train = int(len(series) * (1.0 - args.test_fraction))
    # Scale with training statistics only: the test part stays unseen.
    mean, std = series[:n_train].mean(), series[:n_train].std()
    scaled = (series - mean) / std
    train, test = scaled[:n_train], scaled[n_train:]
    span = args.window + args.horizon
    if len(test) < span + 1 or len(train) < span + 1:
        raise SystemExit(f"--samples {args.samples} is too short for --window {args.window} "
                         f"and --horizon {args.horizon}")
    print(f"Mackey-Glass (tau=17): {len(train)} train / {len(test)} test samples; "
          f"{args.cell.upper()} hidden {args.hidden_size}, window {args.window}, horizon "
          f"{args.horizon}, {args.train_steps} steps, seed {args.seed}")

    model = fastrnn.SequenceModel(
        cell=args.cell, input_size=1, hidden_size=args.hidden_size, output_size=1,
        output="sequence", loss="mse", optimizer=fastrnn.optim.Adam(lr=args.lr),
        max_norm=args.max_norm, seed=args.seed)
    rng = np.random.default_rng(args.seed)
    start, log_every = time.perf_counter(), max(args.train_steps // 5, 1)
    for step in range(1, args.train_steps + 1):
        starts = rng.integers(0, len(train) - span + 1, size=args.batch_size)
        loss = model.train_step(*windows(train, starts, args.window, args.horizon))
        if step % log_every == 0:
            print(f"  step {step:5d}  train mse {loss:.5f} (scaled units)  "
                  f"{time.perf_counter() - start:5.1f}s", flush=True)

    # Every test window, scored at its last step, where the model has seen the whole window.
    x_test, y_test = windows(test, np.arange(len(test) - span + 1), args.window, args.horizon)
    forecast = model.predict(x_test)[-1, :, 0] * std + mean
    target = y_test[-1, :, 0] * std + mean
    last_value = x_test[-1, :, 0] * std + mean
    model_rmse, naive_rmse = rmse(forecast, target), rmse(last_value, target)
    print(f"\ntest RMSE over {len(target)} forecasts ({args.horizon} ahead; series std "
          f"{series.std():.3f}):")
    print(f"  {args.cell.upper() + ' model:':<28}{model_rmse:.4f}")
    print(f"  {'naive last-value baseline:':<28}{naive_rmse:.4f}")
    print(f"  {'model / baseline:':<28}{model_rmse / naive_rmse:.3f} "
          f"({'better' if model_rmse < naive_rmse else 'worse'} than the baseline)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
