"""fastrnn.SequenceModel: whole-model gradcheck, dropout, text, generation, fit
(truncated BPTT), non-finite steps and input validation."""

from __future__ import annotations

import math

import numpy as np
import pytest
from helpers import flat_grads, flat_params, random_model_batch, unflatten_params

import fastrnn
from fastrnn.model import UNKNOWN

SEQ_LEN, BATCH = 5, 3
TEXT = "abcd" * 100


def small_model(**options):
    """A tiny float64 model; `options` override the defaults."""
    settings = dict(cell="lstm", input_size=3, hidden_size=4, output_size=3,
                    dtype=np.float64, seed=0, optimizer=fastrnn.optim.Adam(lr=0.01))
    settings.update(options)
    return fastrnn.SequenceModel(**settings)


def optimizer_snapshot(model):
    return {k: (v.copy() if isinstance(v, np.ndarray) else v)
            for k, v in model.optimizer.state_dict().items()}


def assert_same_optimizer_state(before, after):
    assert before.keys() == after.keys()
    for key, value in before.items():
        np.testing.assert_array_equal(after[key], value, err_msg=key)


# ----------------------------------------------------------------------- gradcheck

GRADCHECK_CASES = {
    # name: (model options, lengths?)
    "lstm-onehot-sequence-ce-lengths": (dict(cell="lstm", vocab_size=5, output_size=5), True),
    "gru-float-last-mse-stacked-bidirectional-lengths": (
        dict(cell="gru", output="last", loss="mse", output_size=2, num_layers=2,
             bidirectional=True), True),
    "rnn-float-sequence-bce-bidirectional": (
        dict(cell="rnn", loss="bce", output_size=2, bidirectional=True), False),
    "rnn_relu-onehot-last-ce-stacked": (
        dict(cell="rnn_relu", vocab_size=4, output="last", output_size=3, num_layers=2), False),
}


@pytest.mark.parametrize("case", list(GRADCHECK_CASES))
def test_train_step_gradients_match_finite_differences_over_the_whole_model(case):
    """Every parameter (recurrent layers, one-hot input weights, head) against central
    differences of the loss train_step reports; SGD(lr=0) makes the update a no-op."""
    options, use_lengths = GRADCHECK_CASES[case]
    model = small_model(optimizer=fastrnn.optim.SGD(lr=0.0), **options)
    rng = np.random.default_rng(7)
    x, y, lengths = random_model_batch(rng, model, SEQ_LEN, BATCH, use_lengths)
    start = flat_params(model)

    def loss_at(vector):
        model.load_state_dict(unflatten_params(model, vector))
        return model.train_step(x, y, lengths=lengths)

    numeric = fastrnn.numerical_grad(loss_at, start, eps=1e-6)
    model.load_state_dict(unflatten_params(model, start))
    loss_at(start)
    analytic = flat_grads(model)
    np.testing.assert_array_equal(flat_params(model), start)  # lr=0: no update
    np.testing.assert_allclose(analytic, numeric, rtol=1e-5, atol=1e-8)
    for name in ("rnn.weight_ih_l0", "rnn.weight_hh_l0", "head.weight", "head.bias"):
        assert np.any(model.grads[name] != 0), f"{name} got no gradient"


def test_one_hot_input_gradient_is_zero_for_tokens_absent_from_the_batch():
    model = small_model(vocab_size=6, output_size=6, optimizer=fastrnn.optim.SGD(lr=0.0))
    x = np.array([[1, 2], [2, 4], [1, 1]])
    model.train_step(x, np.zeros_like(x))
    column_used = np.any(model.grads["rnn.weight_ih_l0"] != 0, axis=0)
    np.testing.assert_array_equal(column_used, [False, True, True, False, True, False])


# ------------------------------------------------------------------------- dropout

def dropout_model(dropout, seed=3):
    return small_model(cell="gru", num_layers=3, hidden_size=6, dropout=dropout, seed=seed,
                       optimizer=fastrnn.optim.SGD(lr=0.1, momentum=0.9))


def test_dropout_training_is_reproducible_for_a_seed():
    rng = np.random.default_rng(0)
    batches = [random_model_batch(rng, dropout_model(0.5), SEQ_LEN, BATCH) for _ in range(2)]
    runs = []
    for _ in range(2):
        model = dropout_model(0.5)
        losses = [model.train_step(x, y) for x, y, _ in batches]
        runs.append((losses, flat_params(model)))
    assert runs[0][0] == runs[1][0]
    np.testing.assert_array_equal(runs[0][1], runs[1][1])


def test_dropout_is_applied_in_training_only():
    rng = np.random.default_rng(1)
    with_dropout, without = dropout_model(0.5), dropout_model(0.0)
    np.testing.assert_array_equal(flat_params(with_dropout), flat_params(without))
    x, y, _ = random_model_batch(rng, with_dropout, SEQ_LEN, BATCH)
    # predict: no dropout, deterministic, and the same as the dropout-free twin
    first = with_dropout.predict(x)
    np.testing.assert_array_equal(with_dropout.predict(x), first)
    np.testing.assert_array_equal(first, without.predict(x))
    assert with_dropout.rnn.training  # predict restores training mode
    # training: dropout changes the loss
    assert with_dropout.train_step(x, y) != without.train_step(x, y)


def test_dropout_zero_equals_no_dropout():
    rng = np.random.default_rng(2)
    explicit_zero = dropout_model(0.0)
    default = small_model(cell="gru", num_layers=3, hidden_size=6, seed=3,
                          optimizer=fastrnn.optim.SGD(lr=0.1, momentum=0.9))
    for _ in range(3):
        x, y, _ = random_model_batch(rng, default, SEQ_LEN, BATCH)
        assert explicit_zero.train_step(x, y) == default.train_step(x, y)
    np.testing.assert_array_equal(flat_params(explicit_zero), flat_params(default))


# ---------------------------------------------------------------------------- text

def text_model(text="hello, world", **options):
    settings = dict(cell="gru", hidden_size=8, seed=0, optimizer=fastrnn.optim.Adam(lr=0.05))
    settings.update(options)
    return fastrnn.SequenceModel.from_text(text, **settings)


def test_from_text_builds_the_vocabulary_and_round_trips():
    model = text_model("hello, world")
    assert model.vocab == sorted(set("hello, world"))
    assert model.config["vocab_size"] == model.config["output_size"] == len(model.vocab) + 1
    ids = model.encode("hello, world")
    assert ids.dtype == np.int64 and ids.min() >= 1  # id 0 is reserved
    assert model.decode(ids) == "hello, world"
    assert model.encode("").shape == (0,) and model.decode([]) == ""


def test_unknown_characters_map_to_id_zero_and_decode_to_the_replacement_char():
    model = text_model("hello")
    ids = model.encode("hex!")
    assert ids[0] != 0 and ids[1] != 0 and ids[2] == 0 and ids[3] == 0
    assert model.decode(ids) == "he" + UNKNOWN * 2
    assert UNKNOWN == "\ufffd"
    with pytest.raises(ValueError, match="ids"):
        model.decode([len(model.vocab) + 1])


def test_encode_needs_a_vocabulary():
    with pytest.raises(ValueError, match="vocabulary"):
        small_model().encode("abc")


@pytest.fixture(scope="module")
def trained_text_model():
    model = text_model(TEXT)
    model.fit(TEXT, window=8, batch_size=4, steps=20, progress=False)
    return model


def test_generate_is_reproducible_for_a_seed_and_returns_n_chars(trained_text_model):
    model = trained_text_model
    first = model.generate("ab", n=30, temperature=1.5, seed=11)
    assert len(first) == 30 and UNKNOWN not in first
    assert model.generate("ab", n=30, temperature=1.5, seed=11) == first
    assert model.generate("ab", n=30, temperature=1.5, seed=12) != first
    assert model.generate("ab", n=0) == ""
    assert len(model.generate("", n=5, seed=0)) == 5


def test_generate_with_top_k_1_is_greedy(trained_text_model):
    model = trained_text_model
    ids = list(model.encode("ab"))
    for _ in range(12):  # the argmax path: rerun the whole prefix, take the best known id
        logits = model.predict(np.array(ids))
        ids.append(int(np.argmax(logits[-1, 1:])) + 1)
    greedy = model.decode(ids[2:])
    assert model.generate("ab", n=12, top_k=1, seed=0) == greedy
    assert model.generate("ab", n=12, top_k=1, temperature=3.0, seed=5) == greedy


@pytest.mark.parametrize("temperature, error", [(0.0, ValueError), (-1.0, ValueError),
                                                (math.nan, ValueError), (math.inf, ValueError),
                                                ("hot", TypeError), (None, TypeError)])
def test_generate_rejects_a_bad_temperature(trained_text_model, temperature, error):
    with pytest.raises(error, match="temperature"):
        trained_text_model.generate("ab", n=3, temperature=temperature)


@pytest.mark.parametrize("top_k", [0, -2])
def test_generate_rejects_a_bad_top_k(trained_text_model, top_k):
    with pytest.raises(ValueError, match="top_k"):
        trained_text_model.generate("ab", n=3, top_k=top_k)


# ----------------------------------------------------------------------------- fit

def test_fit_returns_a_history_and_the_loss_decreases(capsys):
    model = text_model(TEXT)
    # 60 characters make 4 streams of one window each (fit's batch_size, not a default)
    history = model.fit(TEXT, window=8, batch_size=4, epochs=2, validation=TEXT[:60],
                        progress=False)
    stream_length = (len(TEXT) - 1) // 4  # 4 parallel streams
    windows = (stream_length - 1) // 8  # each window needs its next-token targets
    assert len(history["loss"]) == 2 * windows
    assert all(isinstance(loss, float) for loss in history["loss"])
    assert len(history["val_loss"]) == 2
    assert np.mean(history["loss"][-5:]) < 0.2 * np.mean(history["loss"][:5])
    assert history["val_loss"][1] < history["val_loss"][0]
    assert capsys.readouterr().err == ""  # progress=False prints nothing


def test_fit_stops_after_steps_or_time_budget():
    model = text_model(TEXT)
    assert len(model.fit(TEXT, window=8, batch_size=4, epochs=5, steps=3,
                         progress=False)["loss"]) == 3
    assert len(model.fit(TEXT, window=8, batch_size=4, epochs=5, time_budget=0.0,
                         progress=False)["loss"]) == 1


BAD_FIT_ARGUMENTS = {
    "steps-zero": (dict(steps=0), ValueError, "steps"),
    "steps-float": (dict(steps=1.5), TypeError, "steps"),
    "negative-time-budget": (dict(time_budget=-1.0), ValueError, "time_budget"),
    "window-zero": (dict(window=0), ValueError, "window"),
    "batch-size-zero": (dict(batch_size=0), ValueError, "batch_size"),
    "data-shorter-than-a-window": (dict(window=200), ValueError, "data"),
    "validation-shorter-than-a-window": (dict(validation="abc"), ValueError, "validation"),
}


@pytest.mark.parametrize("options, error, name", list(BAD_FIT_ARGUMENTS.values()),
                         ids=list(BAD_FIT_ARGUMENTS))
def test_fit_rejects_bad_arguments_before_training(options, error, name):
    model = text_model(TEXT)
    before = flat_params(model)
    settings = dict(window=8, batch_size=4, progress=False)
    settings.update(options)
    with pytest.raises(error, match=name):
        model.fit(TEXT, **settings)
    np.testing.assert_array_equal(flat_params(model), before)


def test_fit_needs_a_next_token_model():
    with pytest.raises(ValueError, match="vocab_size"):
        small_model().fit(np.arange(100), progress=False)


def test_fit_carries_the_state_between_windows():
    """fit == a manual loop of train_step(x, y, state=model.last_state) over the streams."""
    window, batch_size = 8, 4
    fitted = text_model(TEXT, cell="lstm")
    history = fitted.fit(TEXT, window=window, batch_size=batch_size, progress=False)

    def manual(carry):
        model = text_model(TEXT, cell="lstm")
        ids = model.encode(TEXT)
        length = (ids.size - 1) // batch_size
        streams = ids[:length * batch_size].reshape(batch_size, length).T
        losses, state = [], None
        for k in range((length - 1) // window):
            x = streams[k * window:(k + 1) * window]
            y = streams[k * window + 1:(k + 1) * window + 1]
            losses.append(model.train_step(x, y, state=state))
            state = model.last_state if carry else None
        return losses, model

    losses, model = manual(carry=True)
    assert history["loss"] == losses
    np.testing.assert_array_equal(flat_params(fitted), flat_params(model))
    # and the carry matters: restarting every window from zeros trains differently
    restarted, _ = manual(carry=False)
    assert restarted[0] == losses[0] and restarted[1] != losses[1]


def test_evaluate_scores_every_window_carrying_the_state():
    """For one sequence, windows with the state carried over are one pass over the
    streams: evaluate is the mean cross-entropy of that pass."""
    window, batch_size = 8, 4
    model = text_model(TEXT, cell="lstm", dtype=np.float64)
    ids = model.encode(TEXT)
    length = (ids.size - 1) // batch_size
    streams = ids[:length * batch_size].reshape(batch_size, length).T
    steps = (length - 1) // window * window
    logits = model.predict(streams[:steps])
    expected, _ = fastrnn.losses.cross_entropy(logits.reshape(steps * batch_size, -1),
                                               streams[1:steps + 1].reshape(-1))
    assert model.evaluate(TEXT, window=window, batch_size=batch_size) == pytest.approx(
        expected, rel=1e-12)
    assert fastrnn.training.evaluate(model, TEXT, window=window, batch_size=batch_size) == \
        model.evaluate(TEXT, window=window, batch_size=batch_size)


def test_the_training_and_text_functions_are_the_model_methods():
    fitted, by_function = text_model(TEXT), text_model(TEXT)
    options = dict(window=8, batch_size=4, steps=3, progress=False)
    assert fastrnn.training.fit(by_function, TEXT, **options) == fitted.fit(TEXT, **options)
    np.testing.assert_array_equal(flat_params(by_function), flat_params(fitted))
    assert fastrnn.text.generate(by_function, "ab", n=10, seed=2) == fitted.generate(
        "ab", n=10, seed=2)


# ---------------------------------------------------------------------- non-finite

def test_nan_input_skips_the_update():
    model = small_model(loss="mse", output_size=2, optimizer=fastrnn.optim.Adam(lr=0.01))
    rng = np.random.default_rng(3)
    x, y, _ = random_model_batch(rng, model, SEQ_LEN, BATCH)
    model.train_step(x, y)  # a real step first, so the optimizer has state to protect
    params, optimizer_state = flat_params(model), optimizer_snapshot(model)
    x_bad = x.copy()
    x_bad[2, 1, 0] = np.nan
    loss = model.train_step(x_bad, y)
    assert math.isnan(loss)
    assert model.skipped_steps == 1
    np.testing.assert_array_equal(flat_params(model), params)
    assert_same_optimizer_state(optimizer_state, optimizer_snapshot(model))
    # training goes on normally afterwards
    assert math.isfinite(model.train_step(x, y))
    assert model.skipped_steps == 1
    assert not np.array_equal(flat_params(model), params)


def test_nan_target_skips_the_update():
    model = small_model(loss="mse", output_size=2)
    rng = np.random.default_rng(4)
    x, y, _ = random_model_batch(rng, model, SEQ_LEN, BATCH)
    y[0, 0, 1] = np.nan
    params = flat_params(model)
    assert math.isnan(model.train_step(x, y))
    assert model.skipped_steps == 1
    np.testing.assert_array_equal(flat_params(model), params)


def test_nan_in_padded_steps_does_not_count():
    model = small_model(loss="mse", output_size=2)
    rng = np.random.default_rng(5)
    x, y, _ = random_model_batch(rng, model, SEQ_LEN, BATCH)
    lengths = np.array([SEQ_LEN, 2, 3])
    x[3:, 1] = np.nan
    y[2:, 1] = np.nan
    params = flat_params(model)
    assert math.isfinite(model.train_step(x, y, lengths=lengths))
    assert model.skipped_steps == 0
    assert np.all(np.isfinite(flat_params(model)))
    assert not np.array_equal(flat_params(model), params)


@pytest.mark.parametrize("loss", ["cross_entropy", "mse", "bce"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_huge_learning_rate_overflow_skips_the_update(loss, dtype):
    lr = 1e38 if dtype == np.float32 else 1e308
    model = small_model(cell="rnn", loss=loss, output_size=2, dtype=dtype,
                        optimizer=fastrnn.optim.SGD(lr=lr))
    rng = np.random.default_rng(6)
    x, y, _ = random_model_batch(rng, model, SEQ_LEN, BATCH)
    skipped = 0
    for _ in range(6):
        params = flat_params(model)
        loss_value = model.train_step(x, y)
        if math.isfinite(loss_value) and math.isfinite(model.grad_norm):
            assert model.skipped_steps == skipped  # finite steps are never skipped
            continue
        skipped += 1
        assert model.skipped_steps == skipped
        np.testing.assert_array_equal(flat_params(model), params)
    assert skipped > 0, "the learning rate never drove the loss to inf"


# ---------------------------------------------------- flat buffers and predict's state

def test_flat_buffers_and_num_parameters_cover_every_parameter():
    model = small_model(num_layers=2, bidirectional=True)
    total = sum(value.size for value in model.params.values())
    assert model.num_parameters == total == model.flat_params.size == model.flat_grads.size
    np.testing.assert_array_equal(model.flat_params, flat_params(model))  # params order
    for named, flat in ((model.params, model.flat_params), (model.grads, model.flat_grads)):
        assert all(np.shares_memory(value, flat) for value in named.values())
    x, y, _ = random_model_batch(np.random.default_rng(9), model, SEQ_LEN, BATCH)
    model.train_step(x, y)
    np.testing.assert_array_equal(model.flat_grads, flat_grads(model))
    # Clipping takes the model: all of its gradients, the head's too.
    norm = float(np.linalg.norm(flat_grads(model)))
    assert fastrnn.clip_grad_norm(model, 1e-3) == pytest.approx(norm, rel=1e-12)
    assert np.linalg.norm(flat_grads(model)) == pytest.approx(1e-3, rel=1e-5)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_predict_returns_the_final_state_that_continues_the_sequence(cell):
    model = small_model(cell=cell)
    x = np.random.default_rng(10).standard_normal((2 * SEQ_LEN, BATCH, 3))
    whole, final = model.predict(x, return_state=True)
    np.testing.assert_array_equal(whole, model.predict(x))
    first, state = model.predict(x[:SEQ_LEN], return_state=True)
    second, end = model.predict(x[SEQ_LEN:], state=state, return_state=True)
    np.testing.assert_allclose(np.concatenate([first, second]), whole, rtol=0, atol=1e-12)
    for part, expected in zip(model.rnn.state_parts(end), model.rnn.state_parts(final)):
        if expected is not None:
            np.testing.assert_allclose(part, expected, rtol=0, atol=1e-12)


def test_vocabulary_maps_characters_to_ids_and_back():
    vocabulary = fastrnn.text.Vocabulary.from_text("banana")
    assert vocabulary.chars == ("a", "b", "n") and vocabulary.size == 4
    np.testing.assert_array_equal(vocabulary.encode("nab?"), [3, 1, 2, 0])
    assert vocabulary.decode([3, 1, 2, 0]) == "nab" + UNKNOWN
    for bad in (["a", "a"], ["ab"], [], [1]):
        with pytest.raises(ValueError, match="chars"):
            fastrnn.text.Vocabulary(bad)
    with pytest.raises(ValueError, match="text"):
        fastrnn.text.Vocabulary.from_text("")
    with pytest.raises(ValueError, match=r"ids must lie in \[0, 3\]"):
        vocabulary.decode([4])
    with pytest.raises(TypeError, match="ids must be an integer array"):
        vocabulary.decode([1.0])
    model = text_model("banana")
    assert model.vocabulary.chars == vocabulary.chars and model.vocab == ["a", "b", "n"]
    assert model.config["vocab_size"] == vocabulary.size


# ---------------------------------------------------------------------- validation

def vocab_model():
    return small_model(cell="gru", vocab_size=5, output_size=5)


def float_model(loss="cross_entropy", output="sequence"):
    return small_model(cell="gru", loss=loss, output=output, output_size=3)


GOOD_IDS = np.zeros((SEQ_LEN, BATCH), dtype=np.int64)
GOOD_X = np.zeros((SEQ_LEN, BATCH, 3))
GOOD_Y = np.zeros((SEQ_LEN, BATCH), dtype=np.int64)
GOOD_Y_FLOAT = np.zeros((SEQ_LEN, BATCH, 3))

BAD_INPUTS = {
    # name: (model factory, x, y, lengths, error, argument named)
    "vocab-x-too-large": (vocab_model, GOOD_IDS + 5, GOOD_Y, None, ValueError, "x"),
    "vocab-x-negative": (vocab_model, GOOD_IDS - 1, GOOD_Y, None, ValueError, "x"),
    "vocab-x-float": (vocab_model, GOOD_IDS.astype(float), GOOD_Y, None, TypeError, "x"),
    "vocab-x-3d": (vocab_model, GOOD_IDS[..., None], GOOD_Y, None, ValueError, "x"),
    "x-4d": (float_model, GOOD_X[..., None], GOOD_Y, None, ValueError, "x"),
    "x-1d": (float_model, GOOD_X[:, 0, 0], GOOD_Y, None, ValueError, "x"),
    "x-wrong-features": (float_model, GOOD_X[..., :2], GOOD_Y, None, ValueError, "x"),
    "x-no-steps": (float_model, GOOD_X[:0], GOOD_Y[:0], None, ValueError, "x"),
    "x-complex": (float_model, GOOD_X + 0j, GOOD_Y, None, TypeError, "x"),
    "x-strings": (float_model, GOOD_X.astype(str), GOOD_Y, None, TypeError, "x"),
    "y-class-too-large": (float_model, GOOD_X, GOOD_Y + 3, None, ValueError, "y"),
    "y-class-negative": (float_model, GOOD_X, GOOD_Y - 1, None, ValueError, "y"),
    "y-float-for-cross-entropy": (float_model, GOOD_X, GOOD_Y.astype(float), None,
                                  TypeError, "y"),
    "y-wrong-shape": (float_model, GOOD_X, GOOD_Y[:, :2], None, ValueError, "y"),
    "y-sequence-shape-for-last": (lambda: float_model(output="last"), GOOD_X, GOOD_Y, None,
                                  ValueError, "y"),
    "y-mse-wrong-shape": (lambda: float_model(loss="mse"), GOOD_X, GOOD_Y_FLOAT[..., :2],
                          None, ValueError, "y"),
    "y-mse-complex": (lambda: float_model(loss="mse"), GOOD_X, GOOD_Y_FLOAT + 0j, None,
                      TypeError, "y"),
    "lengths-wrong-size": (float_model, GOOD_X, GOOD_Y, np.array([5, 5]), ValueError,
                           "lengths"),
    "lengths-zero": (float_model, GOOD_X, GOOD_Y, np.array([5, 0, 5]), ValueError,
                     "lengths"),
    "lengths-beyond-T": (float_model, GOOD_X, GOOD_Y, np.array([5, 6, 5]), ValueError,
                         "lengths"),
    "lengths-float": (float_model, GOOD_X, GOOD_Y, np.array([5.0, 5.0, 5.0]), TypeError,
                      "lengths"),
    "lengths-for-unbatched": (float_model, GOOD_X[:, 0], GOOD_Y[:, 0], np.array([5]),
                              ValueError, "lengths"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_raises_naming_the_argument_and_changes_nothing(case):
    make, x, y, lengths, error, name = BAD_INPUTS[case]
    model = make()
    rng = np.random.default_rng(8)
    model.train_step(*random_model_batch(rng, model, SEQ_LEN, BATCH)[:2])
    params, optimizer_state = flat_params(model), optimizer_snapshot(model)
    with pytest.raises(error, match=rf"^{name}\b"):
        model.train_step(x, y, lengths=lengths)
    np.testing.assert_array_equal(flat_params(model), params)
    assert_same_optimizer_state(optimizer_state, optimizer_snapshot(model))
    assert model.skipped_steps == 0
    if name != "y":  # predict validates x and lengths the same way
        with pytest.raises(error, match=rf"^{name}\b"):
            model.predict(x, lengths=lengths)


def test_fit_over_a_set_of_sequences_resets_the_state_at_each_sequence():
    import fastrnn

    texts = ["abcabcabcabcabcabcabcabc" * 4, "xyzxyzxyzxyzxyzxyzxyz" * 4]
    options = dict(cell="gru", hidden_size=8, seed=3, dtype=np.float64,
                   optimizer=fastrnn.optim.SGD(lr=0.1))
    model = fastrnn.SequenceModel.from_text("".join(texts), **options)
    history = model.fit(texts, window=8, batch_size=2, progress=False)
    # The same steps by hand: each sequence's windows, the state reset at its start.
    manual = fastrnn.SequenceModel.from_text("".join(texts), **options)
    losses = []
    for text in texts:
        ids = manual.encode(text)
        length = (ids.size - 1) // 2
        streams = ids[:length * 2].reshape(2, length).T
        state = None
        for k in range((length - 1) // 8):
            x, y = streams[k * 8:(k + 1) * 8], streams[k * 8 + 1:(k + 1) * 8 + 1]
            losses.append(manual.train_step(x, y, state=state))
            state = manual.last_state
    assert history["loss"] == losses
    assert model.evaluate(texts, window=8, batch_size=2) == manual.evaluate(
        texts, window=8, batch_size=2)
    with pytest.raises(ValueError, match=r"data\[1\]"):
        model.fit(["abc" * 40, "ab"], window=8, batch_size=2, progress=False)
    with pytest.raises(ValueError, match="at least one sequence"):
        model.fit([], window=8, batch_size=2, progress=False)
