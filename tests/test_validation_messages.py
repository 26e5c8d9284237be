"""One set of messages: the same kind of bad argument reads the same wherever it is
given (layers, model, optimizers, clipping, gradcheck, threads), and a wrong kind of
value is a TypeError while a right kind out of range is a ValueError."""

from __future__ import annotations

import re

import numba
import numpy as np
import pytest

import fastrnn


def _layer():
    return fastrnn.GRU(2, 3, num_layers=2, dtype=np.float64, seed=0)


def _backward(**clipping):
    layer = _layer()
    out, _ = layer(np.zeros((4, 1, 2)))
    layer.backward(np.ones_like(out), **clipping)


NON_NEGATIVE = {
    "layer backward max_norm": (lambda v: _backward(max_norm=v), "max_norm"),
    "clip_grad_norm": (lambda v: fastrnn.clip_grad_norm(_layer(), v), "max_norm"),
    "clip_grad_value": (lambda v: fastrnn.clip_grad_value(_layer(), v), "clip_value"),
    "model clip_value": (lambda v: fastrnn.SequenceModel(input_size=2, clip_value=v),
                         "clip_value"),
    "optimizer lr": (lambda v: fastrnn.optim.SGD(lr=v), "lr"),
    "optimizer weight_decay": (lambda v: fastrnn.optim.Adam(weight_decay=v), "weight_decay"),
    "gradcheck atol": (lambda v: fastrnn.gradcheck(_layer(), np.zeros((2, 1, 2)), atol=v),
                       "atol"),
}


@pytest.mark.parametrize("case", list(NON_NEGATIVE))
def test_a_non_negative_number(case):
    call, name = NON_NEGATIVE[case]
    with pytest.raises(ValueError, match=f"^{name} must be a finite number >= 0, got -1.0$"):
        call(-1.0)
    with pytest.raises(ValueError, match=f"^{name} must be a finite number >= 0, got nan$"):
        call(float("nan"))
    with pytest.raises(TypeError, match=f"^{name} must be a real number >= 0, got '1'$"):
        call("1")


FRACTIONS = {
    "layer dropout": (lambda v: fastrnn.LSTM(2, 3, dropout=v), "dropout", "[0, 1)"),
    "model dropout": (lambda v: fastrnn.SequenceModel(input_size=2, dropout=v), "dropout",
                      "[0, 1)"),
    "Adam betas": (lambda v: fastrnn.optim.Adam(betas=(0.9, v)), r"betas\[1\]", "[0, 1)"),
    "RMSprop alpha": (lambda v: fastrnn.optim.RMSprop(alpha=v), "alpha", "[0, 1]"),
}


@pytest.mark.parametrize("case", list(FRACTIONS))
def test_a_fraction(case):
    call, name, interval = FRACTIONS[case]
    with pytest.raises(ValueError, match=f"^{name} must be a finite number in "
                                         f"{re.escape(interval)}, got 1.5$"):
        call(1.5)
    with pytest.raises(TypeError, match=f"^{name} must be a real number in "):
        call(None)


POSITIVE = {
    "numerical_grad eps": (lambda v: fastrnn.numerical_grad(np.sum, [1.0], eps=v), "eps"),
    "gradcheck eps": (lambda v: fastrnn.gradcheck(_layer(), np.zeros((2, 1, 2)), eps=v), "eps"),
    "optimizer eps": (lambda v: fastrnn.optim.Adagrad(eps=v), "eps"),
}


@pytest.mark.parametrize("case", list(POSITIVE))
def test_a_positive_number(case):
    call, name = POSITIVE[case]
    with pytest.raises(ValueError, match=f"^{name} must be a finite number > 0, got 0.0$"):
        call(0.0)


INTEGERS = {
    "layer hidden_size": (lambda v: fastrnn.RNN(2, v), "hidden_size", "an integer >= 1"),
    "model num_layers": (lambda v: fastrnn.SequenceModel(input_size=2, num_layers=v),
                         "num_layers", "an integer >= 1"),
    "model vocab_size": (lambda v: fastrnn.SequenceModel(vocab_size=v), "vocab_size",
                         "an integer >= 2"),
    "set_num_threads": (fastrnn.set_num_threads, "n",
                        f"an integer between 1 and {numba.config.NUMBA_NUM_THREADS} "
                        "(the cores this process may use)"),
}


@pytest.mark.parametrize("case", list(INTEGERS))
def test_an_integer_in_range(case):
    call, name, expected = INTEGERS[case]
    before = fastrnn.get_num_threads()
    try:
        with pytest.raises(ValueError, match=f"^{name} must be {re.escape(expected)}, got -1$"):
            call(-1)
        with pytest.raises(TypeError, match=f"^{name} must be {re.escape(expected)}, got 2.0$"):
            call(2.0)
        with pytest.raises(TypeError, match=f"^{name} must be {re.escape(expected)}, got True$"):
            call(True)
    finally:
        fastrnn.set_num_threads(before)


def test_ids_lengths_and_classes_out_of_range_name_the_range():
    model = fastrnn.SequenceModel(cell="gru", vocab_size=5, output_size=5, hidden_size=3)
    ids = np.zeros((4, 2), dtype=np.int64)
    with pytest.raises(ValueError, match=re.escape("x must lie in [0, 4] (vocab_size 5), "
                                                   "got values from 0 to 7")):
        model.predict(ids + np.array([0, 7]))
    with pytest.raises(TypeError, match="^x must be an integer array of token ids, got dtype "
                                        "float64$"):
        model.predict(ids.astype(float))
    with pytest.raises(ValueError, match=re.escape("y must lie in [0, 4] (output_size 5), "
                                                   "got values from -1 to 0")):
        model.train_step(ids, ids - np.array([1, 0]))
    with pytest.raises(ValueError, match=re.escape("lengths must lie in [1, 4] (the sequence "
                                                   "length T), got values from 0 to 4")):
        model.train_step(ids, ids, lengths=np.array([4, 0]))
    with pytest.raises(ValueError, match=re.escape("targets must lie in [0, 1] (2 classes: "
                                                   "the columns of logits), got values from "
                                                   "0 to 2")):
        fastrnn.losses.cross_entropy(np.zeros((2, 2)), np.array([0, 2]))
