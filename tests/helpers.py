"""Shared test helpers: random parameters/inputs and a torch bridge.

torch is imported lazily inside the torch helpers so that test modules which only
need numpy can import this file on machines without torch.
"""

from __future__ import annotations

import importlib.util
import os

import numpy as np
from reference import TORCH_CELLS, canonical_cell, gate_count, param_name


def param_shapes(cell, input_size, hidden_size, num_layers=1, bidirectional=False, bias=True):
    """torch's parameter names and shapes for the module, in torch's order."""
    G = gate_count(cell)
    H = hidden_size
    D = 2 if bidirectional else 1
    shapes = {}
    for layer in range(num_layers):
        layer_in = input_size if layer == 0 else D * H
        for direction in range(D):
            reverse = direction == 1
            shapes[param_name("weight_ih", layer, reverse)] = (G * H, layer_in)
            shapes[param_name("weight_hh", layer, reverse)] = (G * H, H)
            if bias:
                shapes[param_name("bias_ih", layer, reverse)] = (G * H,)
                shapes[param_name("bias_hh", layer, reverse)] = (G * H,)
    return shapes


def random_params(cell, input_size, hidden_size, num_layers=1, bidirectional=False,
                  bias=True, rng=None, dtype=np.float64, scale=None):
    """Random torch-named params, U(-scale, scale) with torch's default scale 1/sqrt(H).

    rng: a numpy Generator or an int seed (None means seed 0, so calls are reproducible).
    """
    rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng or 0)
    scale = 1.0 / np.sqrt(hidden_size) if scale is None else scale
    shapes = param_shapes(cell, input_size, hidden_size, num_layers, bidirectional, bias)
    return {name: rng.uniform(-scale, scale, size=shape).astype(dtype)
            for name, shape in shapes.items()}


def random_lengths(rng, batch, seq_len, include_full=True):
    """Random lengths in [1, T]; with include_full at least one sequence spans all T steps
    (torch's pad_packed_sequence then needs no total_length, but we pass it anyway)."""
    lengths = rng.integers(1, seq_len + 1, size=batch)
    if include_full:
        lengths[rng.integers(batch)] = seq_len
    return lengths.astype(np.int64)


def state_shape(num_layers, bidirectional, batch, hidden_size):
    return ((2 if bidirectional else 1) * num_layers, batch, hidden_size)


# ---------------------------------------------------------------------------
# torch bridge
# ---------------------------------------------------------------------------


def make_torch_module(cell, params, input_size, hidden_size, num_layers=1,
                      bidirectional=False, bias=True):
    """A float64 torch.nn.RNN/LSTM/GRU holding exactly `params`."""
    import torch

    cell = canonical_cell(cell)
    if cell not in TORCH_CELLS:
        raise ValueError(f"torch has no {cell!r} cell")
    kwargs = {"num_layers": num_layers, "bias": bias, "bidirectional": bidirectional,
              "dtype": torch.float64}
    if cell == "lstm":
        module = torch.nn.LSTM(input_size, hidden_size, **kwargs)
    elif cell == "gru":
        module = torch.nn.GRU(input_size, hidden_size, **kwargs)
    else:
        nonlinearity = "tanh" if cell == "rnn_tanh" else "relu"
        module = torch.nn.RNN(input_size, hidden_size, nonlinearity=nonlinearity, **kwargs)
    # strict=True: a naming mismatch between our params and torch's is an error.
    module.load_state_dict({k: torch.from_numpy(np.array(v, dtype=np.float64))
                            for k, v in params.items()}, strict=True)
    return module


def torch_forward_backward(cell, params, x, h0=None, c0=None, lengths=None, num_layers=1,
                           bidirectional=False, d_out=None, d_hn=None, d_cn=None, bias=True):
    """Run torch forward and backward of sum(out*d_out) + sum(h_n*d_hn) [+ sum(c_n*d_cn)].

    Returns numpy float64: (out, h_n, c_n, dx, dh0, dc0, grads); c_n/dc0 are None
    unless LSTM; dh0/dc0 are None when the corresponding initial state was None.
    """
    import torch
    from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

    cell = canonical_cell(cell)
    is_lstm = cell == "lstm"
    T, _, input_size = x.shape
    hidden_size = params["weight_hh_l0"].shape[1]
    module = make_torch_module(cell, params, input_size, hidden_size, num_layers,
                               bidirectional, bias)

    def leaf(a):
        return None if a is None else torch.tensor(a, dtype=torch.float64, requires_grad=True)

    x_t, h0_t, c0_t = leaf(x), leaf(h0), leaf(c0)
    if is_lstm:
        # torch takes both LSTM states or neither; a missing one means zeros.
        zeros = torch.zeros(state_shape(num_layers, bidirectional, x.shape[1], hidden_size),
                            dtype=torch.float64)
        state = None if h0_t is None and c0_t is None else (
            h0_t if h0_t is not None else zeros,
            c0_t if c0_t is not None else zeros,
        )
    else:
        state = h0_t

    if lengths is None:
        out, final = module(x_t, state)
    else:
        # lengths must live on the CPU as int64 for pack_padded_sequence.
        packed = pack_padded_sequence(x_t, torch.as_tensor(lengths, dtype=torch.int64),
                                      enforce_sorted=False)
        packed_out, final = module(packed, state)
        out, _ = pad_packed_sequence(packed_out, total_length=T)
    h_n, c_n = final if is_lstm else (final, None)

    loss = (out * torch.as_tensor(d_out)).sum() if d_out is not None else out.sum() * 0
    if d_hn is not None:
        loss = loss + (h_n * torch.as_tensor(d_hn)).sum()
    if is_lstm and d_cn is not None:
        loss = loss + (c_n * torch.as_tensor(d_cn)).sum()
    loss.backward()

    def grad_of(t):
        if t is None:
            return None
        return np.zeros(tuple(t.shape)) if t.grad is None else t.grad.detach().numpy().copy()

    grads = {name: grad_of(p) for name, p in module.named_parameters()}
    return (out.detach().numpy().copy(), h_n.detach().numpy().copy(),
            None if c_n is None else c_n.detach().numpy().copy(),
            grad_of(x_t), grad_of(h0_t), grad_of(c0_t), grads)


# ---------------------------------------------------------------------------
# fastrnn layer bridge (one calling convention for RNN, LSTM and GRU)
# ---------------------------------------------------------------------------


def max_rel_error(actual, expected):
    """Largest absolute difference, relative to the largest expected magnitude."""
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    scale = max(float(np.max(np.abs(expected), initial=0.0)), 1e-300)
    return float(np.max(np.abs(actual - expected), initial=0.0)) / scale


def make_layer(cell, input_size, hidden_size, num_layers=1, bidirectional=False, bias=True,
               batch_first=False, dtype=np.float64, seed=None, params=None, dropout=0.0):
    """A fastrnn layer for a reference cell name; `params` (torch-named) are loaded if given."""
    import fastrnn

    cell = canonical_cell(cell)
    kwargs = {"num_layers": num_layers, "bias": bias, "batch_first": batch_first,
              "bidirectional": bidirectional, "dtype": dtype, "seed": seed,
              "dropout": dropout}
    if cell == "lstm":
        layer = fastrnn.LSTM(input_size, hidden_size, **kwargs)
    elif cell in ("gru", "gru_reset_before"):
        layer = fastrnn.GRU(input_size, hidden_size, reset_after=cell == "gru", **kwargs)
    else:
        layer = fastrnn.RNN(input_size, hidden_size,
                            nonlinearity="tanh" if cell == "rnn_tanh" else "relu", **kwargs)
    if params is not None:
        layer.load_state_dict(params)
    return layer


def _is_lstm(layer):
    import fastrnn

    return isinstance(layer, fastrnn.LSTM)


def layer_forward(layer, x, h0=None, c0=None, lengths=None):
    """Call any fastrnn layer; returns (out, h_n, c_n) with c_n None unless LSTM."""
    if _is_lstm(layer):
        state = None if h0 is None and c0 is None else (h0, c0)
        out, (h_n, c_n) = layer(x, state, lengths=lengths)
        return out, h_n, c_n
    assert c0 is None
    out, h_n = layer(x, h0, lengths=lengths)
    return out, h_n, None


def layer_backward(layer, d_out, d_hn=None, d_cn=None, **clipping):
    """Backward of any fastrnn layer; returns (dx, dh0, dc0) with dc0 None unless LSTM."""
    if _is_lstm(layer):
        d_state = None if d_hn is None and d_cn is None else (d_hn, d_cn)
        dx, (dh0, dc0) = layer.backward(d_out, d_state, **clipping)
        return dx, dh0, dc0
    assert d_cn is None
    dx, dh0 = layer.backward(d_out, d_hn, **clipping)
    return dx, dh0, None


# ---------------------------------------------------------------------------
# SequenceModel helpers
# ---------------------------------------------------------------------------


def random_model_batch(rng, model, seq_len, batch, use_lengths=False):
    """A random (x, y, lengths) batch that fits a fastrnn.SequenceModel's configuration.

    x: token ids (T, B) for a vocabulary model, else N(0, 1) floats (T, B, I).
    y: class ids for cross_entropy, 0/1 floats for bce, N(0, 1) floats for mse; shaped
    per step (T, B[, O]) for output="sequence", per sequence (B[, O]) for "last".
    lengths: random in [1, T] (not necessarily any of them T) or None.
    """
    config = model.config
    if config["vocab_size"] is not None:
        x = rng.integers(0, config["vocab_size"], size=(seq_len, batch))
    else:
        x = rng.standard_normal((seq_len, batch, config["input_size"]))
    rows = (batch,) if config["output"] == "last" else (seq_len, batch)
    n_out = config["output_size"]
    if config["loss"] == "cross_entropy":
        y = rng.integers(0, n_out, size=rows)
    elif config["loss"] == "bce":
        y = rng.integers(0, 2, size=rows + (n_out,)).astype(np.float64)
    else:
        y = rng.standard_normal(rows + (n_out,))
    lengths = random_lengths(rng, batch, seq_len, include_full=False) if use_lengths else None
    return x, y, lengths


def flat_params(model):
    """All of a model's parameters as one float64 vector, in `model.params` order."""
    return np.concatenate([np.asarray(v, dtype=np.float64).ravel()
                           for v in model.params.values()])


def flat_grads(model):
    """All of a model's gradients as one float64 vector, in `model.params` order."""
    return np.concatenate([np.asarray(model.grads[name], dtype=np.float64).ravel()
                           for name in model.params])


def unflatten_params(model, vector):
    """A torch-named state_dict of the model's shapes filled from `vector`."""
    state, offset = {}, 0
    for name, value in model.params.items():
        state[name] = np.asarray(vector[offset:offset + value.size]).reshape(value.shape)
        offset += value.size
    assert offset == len(vector)
    return state


def ragged_lengths(rng, batch, seq_len, full):
    """Random lengths in [1, T], not all equal, at least one shorter than T (needs B >= 2,
    and T >= 3 without `full`).

    full=True: at least one sequence also spans all T steps;
    full=False: every sequence is shorter than T, so max(lengths) < T.
    """
    if batch < 2 or seq_len < (2 if full else 3):
        raise ValueError(f"cannot make ragged lengths for T={seq_len}, B={batch}, full={full}")
    longest, shorter = rng.choice(batch, size=2, replace=False)
    if full:
        lengths = rng.integers(1, seq_len + 1, size=batch)
        lengths[longest] = seq_len
        lengths[shorter] = rng.integers(1, seq_len)
    else:
        lengths = rng.integers(1, seq_len, size=batch)
        if lengths.min() == lengths.max():  # make two of them differ
            others = [n for n in range(1, seq_len) if n != lengths[longest]]
            lengths[shorter] = rng.choice(others)
    return lengths.astype(np.int64)


def assert_ragged(lengths, seq_len, full):
    """The lengths a 'len' test case claims: not all equal, some sequence shorter than T;
    with full, one spanning all T steps, without it none (max(lengths) < T)."""
    lengths = np.asarray(lengths)
    assert lengths.min() < lengths.max(), f"lengths {lengths} are all equal"
    assert lengths.min() < seq_len, f"lengths {lengths} are not ragged (T={seq_len})"
    assert (lengths.max() == seq_len) == bool(full), (
        f"lengths {lengths}: max {'should' if full else 'should not'} reach T={seq_len}")


REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load_benchmark_script(name):
    """A fresh copy of the module benchmarks/NAME.py (its per-process caches
    start empty)."""
    path = os.path.join(REPO_ROOT, "benchmarks", f"{name}.py")
    spec = importlib.util.spec_from_file_location(f"{name}_under_test", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def load_asv_suite():
    """A fresh copy of the asv suite's module, benchmarks/bench_layers.py."""
    return load_benchmark_script("bench_layers")
