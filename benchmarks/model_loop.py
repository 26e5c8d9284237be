"""A SequenceModel training loop against torch's same loop, side by side in one process.

    python benchmarks/model_loop.py [--repeats 15] [--threads N] [--cells lstm,gru,rnn]

The step is the asv suite's SequenceModelTrainStep (examples/adding_problem.py's
model and batch: H = 64, B = 64, T = 100, I = 2, MSE on the last step's output,
Adam with lr 1e-2, global-norm clip to 1): fastrnn's `SequenceModel.train_step`
against torch's nn.LSTM/GRU/RNN with an nn.Linear head, the same loss,
torch.optim.Adam and clip_grad_norm_, from the same weights, float32. The samples
alternate (`fastrnn.bench.median_ms`); the table gives medians and torch ms /
fastrnn ms. Run it with OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE unset.
"""

import argparse
import os
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
import fastrnn  # noqa: E402
from fastrnn import bench  # noqa: E402

sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
from bench_layers import ADDING, adding_problem_workload  # noqa: E402


def torch_workload(fastrnn_step, cell):
    """torch's training step of the model fastrnn_step trains, from its weights."""
    torch = bench.import_torch()
    model = fastrnn_step.model
    x, y = fastrnn_step.batch
    weights = {name: torch.from_numpy(np.array(value)) for name, value in model.params.items()}
    recurrent = bench.torch_module_class(cell)(x.shape[2], ADDING["hidden"])
    recurrent.load_state_dict({name[len("rnn."):]: value for name, value in weights.items()
                               if name.startswith("rnn.")})
    head = torch.nn.Linear(ADDING["hidden"], y.shape[1])
    head.load_state_dict({name[len("head."):]: value for name, value in weights.items()
                          if name.startswith("head.")})
    parameters = list(recurrent.parameters()) + list(head.parameters())
    optimizer = torch.optim.Adam(parameters, lr=ADDING["lr"])
    inputs, targets = torch.from_numpy(x), torch.from_numpy(y)

    def train_step():
        optimizer.zero_grad()
        out, _ = recurrent(inputs)
        loss = torch.nn.functional.mse_loss(head(out[-1]), targets)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(parameters, ADDING["max_norm"])
        optimizer.step()
        return loss.item()
    return train_step


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--cells", default="lstm")
    args = parser.parse_args(argv)
    cells = args.cells.split(",")
    unknown = [cell for cell in cells if cell not in bench.CELLS]
    if unknown:
        parser.error(f"--cells: unknown {', '.join(unknown)} (expected some of "
                     f"{', '.join(bench.CELLS)})")
    if args.repeats < 1:
        parser.error(f"--repeats must be at least 1, got {args.repeats}")
    restore = bench.set_threads(args.threads or fastrnn.get_num_threads())
    try:
        print(f"SequenceModel.train_step against torch, T={ADDING['n_steps']} "
              f"B={ADDING['batch']} I=2 H={ADDING['hidden']}, float32, "
              f"{fastrnn.get_num_threads()} threads, medians of {args.repeats}")
        for cell in cells:
            step = adding_problem_workload(cell)
            peer = torch_workload(step, cell)
            first = (float(step()), peer())  # the same weights and batch: the same loss
            if not np.isclose(*first, rtol=1e-4):
                raise RuntimeError(f"{cell}: the first losses differ (fastrnn, torch): {first}")
            ms = bench.median_ms({"fastrnn": step, "torch": peer}, args.repeats)
            print(f"{cell:5s} fastrnn {ms['fastrnn']:8.3f} ms  torch {ms['torch']:8.3f} ms  "
                  f"torch/fastrnn {ms['torch'] / ms['fastrnn']:5.2f}x", flush=True)
    finally:
        restore()


if __name__ == "__main__":
    main()
