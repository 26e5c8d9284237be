"""SequenceModel training against the same model in torch, float64.

The torch twin is a torch.nn.Module with attributes `rnn` (nn.RNN/LSTM/GRU) and `head`
(nn.Linear), so its state_dict keys are exactly SequenceModel.params' keys; it starts
from fastrnn's initial weights (loaded with strict=True), sees the same batches and
takes the textbook steps: zero_grad, forward (pack_padded_sequence when lengths are
given), loss with reduction mean over the valid rows, backward, clip_grad_norm_, step.
20 steps of each must give the same loss sequence within 1e-8 relative, the same
pre-clip gradient norms and the same final weights.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="torch parity needs torch (CI installs torch==2.13.0)")

from helpers import make_torch_module, random_model_batch  # noqa: E402
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence  # noqa: E402

import fastrnn  # noqa: E402

STEPS = 20
SEQ_LEN, BATCH, INPUT, HIDDEN, OUTPUT, VOCAB = 5, 3, 3, 4, 3, 5
MAX_NORM = 0.1  # small enough that most steps are clipped
LOSS_RTOL = 1e-8
CELLS = ("rnn", "rnn_relu", "lstm", "gru")
OUTPUTS = ("sequence", "last")
# (model loss, vocabulary input?)
LOSS_KINDS = {"ce_vocab": ("cross_entropy", True), "ce_float": ("cross_entropy", False),
              "mse": ("mse", False), "bce": ("bce", False)}
OPTIMIZERS = ("sgd_nesterov", "adam")
# (num_layers, bidirectional, lengths)
STRUCTURES = {"plain": (1, False, False), "lengths": (1, False, True),
              "stacked": (2, False, True), "bidirectional": (1, True, True),
              "stacked_bidirectional": (2, True, True)}


@pytest.fixture(autouse=True, scope="module")
def single_threaded_torch():
    """Tiny tensors: torch's thread pool only adds overhead (a lot, on a busy machine)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def fastrnn_optimizer(kind):
    if kind == "sgd_nesterov":
        return fastrnn.optim.SGD(lr=0.1, momentum=0.9, nesterov=True)
    return fastrnn.optim.Adam(lr=0.01)


def torch_optimizer_for(kind, parameters):
    # foreach=False: the single-tensor formulas fastrnn.optim follows
    if kind == "sgd_nesterov":
        return torch.optim.SGD(parameters, lr=0.1, momentum=0.9, nesterov=True, foreach=False)
    return torch.optim.Adam(parameters, lr=0.01, foreach=False)


class TorchSequenceModel(torch.nn.Module):
    """torch's SequenceModel: rnn -> head on every step or on the top layer's final h_n."""

    def __init__(self, model):
        super().__init__()
        config = model.config
        self.output = config["output"]
        self.is_lstm = config["cell"] == "lstm"
        self.directions = 2 if config["bidirectional"] else 1
        self.vocab_size = config["vocab_size"]
        rnn_params = {name[len("rnn."):]: value for name, value in model.state_dict().items()
                      if name.startswith("rnn.")}
        self.rnn = make_torch_module(config["cell"], rnn_params, config["input_size"],
                                     config["hidden_size"], config["num_layers"],
                                     config["bidirectional"])
        self.head = torch.nn.Linear(self.directions * config["hidden_size"],
                                    config["output_size"], dtype=torch.float64)
        # strict: a naming mismatch between fastrnn's params and torch's is an error.
        self.load_state_dict({name: torch.from_numpy(value)
                              for name, value in model.state_dict().items()}, strict=True)

    def forward(self, x, lengths):
        if self.vocab_size is not None:
            x = torch.nn.functional.one_hot(torch.as_tensor(x), self.vocab_size).double()
        else:
            x = torch.as_tensor(x, dtype=torch.float64)
        if lengths is None:
            out, final = self.rnn(x)
        else:
            packed = pack_padded_sequence(x, torch.as_tensor(lengths), enforce_sorted=False)
            packed_out, final = self.rnn(packed)
            out, _ = pad_packed_sequence(packed_out, total_length=x.shape[0])
        if self.output == "sequence":
            return self.head(out)  # (T, B, O)
        h_n = final[0] if self.is_lstm else final
        # the top layer's final state of each direction, forward then reverse
        top = [h_n[h_n.shape[0] - self.directions + d] for d in range(self.directions)]
        return self.head(torch.cat(top, dim=1))  # (B, O)


def torch_loss(kind, logits, y, lengths, output):
    """Mean over the valid rows (and, for mse/bce, over the outputs of each row)."""
    if kind == "cross_entropy":
        per_row = torch.nn.functional.cross_entropy(
            logits.reshape(-1, logits.shape[-1]), torch.as_tensor(y).reshape(-1),
            reduction="none")
    else:
        target = torch.as_tensor(y, dtype=torch.float64)
        if kind == "mse":
            elements = torch.nn.functional.mse_loss(logits, target, reduction="none")
        else:
            elements = torch.nn.functional.binary_cross_entropy_with_logits(
                logits, target, reduction="none")
        per_row = elements.reshape(-1, logits.shape[-1]).mean(dim=1)
    if output == "last" or lengths is None:
        return per_row.mean()
    steps = torch.arange(logits.shape[0])[:, None]
    valid = (steps < torch.as_tensor(lengths)[None, :]).reshape(-1).double()
    return (per_row * valid).sum() / valid.sum()


def run_parity(cell, output, loss_kind, optimizer_kind, structure, seed):
    """Train fastrnn and its torch twin for STEPS steps on the same batches.

    Returns (fastrnn losses, torch losses, fastrnn pre-clip norms, torch pre-clip norms,
    fastrnn model, torch model).
    """
    loss, vocab = LOSS_KINDS[loss_kind]
    num_layers, bidirectional, use_lengths = STRUCTURES[structure]
    model = fastrnn.SequenceModel(
        cell=cell, input_size=INPUT, hidden_size=HIDDEN, output_size=OUTPUT,
        num_layers=num_layers, bidirectional=bidirectional,
        vocab_size=VOCAB if vocab else None, output=output, loss=loss,
        optimizer=fastrnn_optimizer(optimizer_kind), max_norm=MAX_NORM, dtype=np.float64, seed=seed)
    twin = TorchSequenceModel(model)
    torch_optimizer = torch_optimizer_for(optimizer_kind, twin.parameters())
    rng = np.random.default_rng(seed)
    batches = [random_model_batch(rng, model, SEQ_LEN, BATCH, use_lengths)
               for _ in range(STEPS)]

    fast_losses, fast_norms = [], []
    for x, y, lengths in batches:
        fast_losses.append(model.train_step(x, y, lengths=lengths))
        fast_norms.append(model.grad_norm)

    torch_losses, torch_norms = [], []
    for x, y, lengths in batches:
        torch_optimizer.zero_grad()
        value = torch_loss(loss, twin(x, lengths), y, lengths, output)
        value.backward()
        norm = torch.nn.utils.clip_grad_norm_(twin.parameters(), MAX_NORM, foreach=False)
        torch_optimizer.step()
        torch_losses.append(value.item())
        torch_norms.append(norm.item())
    return (np.array(fast_losses), np.array(torch_losses), np.array(fast_norms),
            np.array(torch_norms), model, twin)


def max_relative_difference(actual, expected):
    return float(np.max(np.abs(actual - expected) / np.abs(expected)))


def check_parity(cell, output, loss_kind, optimizer_kind, structure, seed):
    fast, reference, fast_norms, torch_norms, model, twin = run_parity(
        cell, output, loss_kind, optimizer_kind, structure, seed)
    assert np.all(np.isfinite(fast)) and model.skipped_steps == 0
    difference = max_relative_difference(fast, reference)
    assert difference <= LOSS_RTOL, (
        f"loss sequences differ by {difference:.3e} relative\nfastrnn {fast}\ntorch   {reference}")
    # the gradients agree too: the norm clip_grad_norm_ saw before clipping
    assert max_relative_difference(fast_norms, torch_norms) <= LOSS_RTOL
    assert np.any(fast_norms > MAX_NORM), "clipping never engaged: raise the grad norm"
    # and so do the weights after 20 updates
    final = {name: tensor.detach().numpy() for name, tensor in twin.state_dict().items()}
    assert list(final) == list(model.params)
    for name, value in final.items():
        np.testing.assert_allclose(model.params[name], value, rtol=1e-7, atol=1e-9,
                                   err_msg=name)
    return difference


FULL_GRID = list(itertools.product(CELLS, OUTPUTS, LOSS_KINDS, OPTIMIZERS))


@pytest.mark.parametrize("cell, output, loss_kind, optimizer_kind", FULL_GRID,
                         ids=["-".join(case) for case in FULL_GRID])
def test_training_matches_torch_stacked_bidirectional_with_lengths(cell, output, loss_kind,
                                                                     optimizer_kind):
    """Every cell x output x loss x optimizer on the structure that exercises the most:
    two layers, both directions, variable lengths."""
    seed = FULL_GRID.index((cell, output, loss_kind, optimizer_kind))
    check_parity(cell, output, loss_kind, optimizer_kind, "stacked_bidirectional", seed)


# each cell on each simpler structure; outputs and optimizers alternate
STRUCTURE_GRID = [(cell, OUTPUTS[(k + k // 4) % 2], structure, OPTIMIZERS[(k // 2 + k // 4) % 2])
                  for k, (cell, structure) in enumerate(itertools.product(
                      CELLS, ("plain", "lengths", "stacked", "bidirectional")))]


@pytest.mark.parametrize("cell, output, structure, optimizer_kind", STRUCTURE_GRID,
                         ids=["-".join(case) for case in STRUCTURE_GRID])
def test_training_matches_torch_per_structure(cell, output, structure, optimizer_kind):
    """Each simpler structure on its own (one layer, lengths or not; stacked; bidirectional)."""
    seed = 1000 + STRUCTURE_GRID.index((cell, output, structure, optimizer_kind))
    loss_kind = "ce_vocab" if output == "sequence" else "mse"
    check_parity(cell, output, loss_kind, optimizer_kind, structure, seed)


def test_torch_twin_state_dict_keys_equal_model_params():
    model = fastrnn.SequenceModel(cell="lstm", input_size=INPUT, hidden_size=HIDDEN,
                                  output_size=OUTPUT, num_layers=2, bidirectional=True,
                                  dtype=np.float64, seed=0)
    twin = TorchSequenceModel(model)
    assert list(twin.state_dict()) == list(model.params)
    assert list(model.params)[-2:] == ["head.weight", "head.bias"]
