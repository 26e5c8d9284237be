"""fastrnn.sklearn: scikit-learn's own estimator checks, and tests that the estimators
learn, read every input form alike, pickle, and work in Pipeline and GridSearchCV."""

import importlib
import pickle
import sys

import numpy as np
import pytest

pytest.importorskip("sklearn")

from sklearn.model_selection import GridSearchCV  # noqa: E402
from sklearn.pipeline import Pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402
from sklearn.utils.estimator_checks import (  # noqa: E402
    check_classifiers_train,
    parametrize_with_checks,
)

from fastrnn import SequenceModel, optim  # noqa: E402
from fastrnn.sklearn import (  # noqa: E402
    SequenceClassifier,
    SequenceRegressor,
    expected_failed_checks,
)

# Tiny networks keep scikit-learn's checks to seconds; lr 0.03 lets a hidden size of 8
# reach the scores the checks ask for within the default epochs.
SMALL = dict(hidden_size=8, lr=0.03)
CHECKED = [SequenceClassifier(**SMALL, dtype=np.float64),
           SequenceRegressor(**SMALL, dtype=np.float64)]


@parametrize_with_checks(CHECKED, expected_failed_checks=expected_failed_checks,
                         xfail_strict=True)
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)


# float32 (the default dtype) fails check_methods_subset_invariance (and, on some CPUs,
# check_methods_sample_order_invariance) in some fits, by float32 rounding: not strict,
# since which fits fail depends on the CPU.
@parametrize_with_checks([SequenceClassifier(**SMALL), SequenceRegressor(**SMALL)],
                         expected_failed_checks=expected_failed_checks, xfail_strict=False)
def test_sklearn_estimator_checks_float32(estimator, check):
    check(estimator)


def test_expected_failures_come_from_time_steps_in_columns():
    # The reason given for every expected failure: a 2-D X's columns are time steps.
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(30, 4)), np.arange(30) % 3
    classifier = SequenceClassifier(hidden_size=4, epochs=1, random_state=0).fit(X, y)
    assert classifier.n_features_in_ == 1
    assert classifier.predict(X[:, :1]).shape == (30,)  # fewer steps: valid input
    assert classifier.predict(X.T).shape == (4,)  # 4 sequences of 30 steps
    classifier.partial_fit(X[:, :-1], y)
    assert classifier.n_iter_ == 2


def test_classifiers_train_check_fails_only_on_a_transposed_predict():
    # check_classifiers_train asserts accuracy > 0.83 before predict(X.T): failing
    # there means the accuracy part passed.
    with pytest.raises(AssertionError, match="number of features in predict is different"):
        check_classifiers_train("SequenceClassifier", CHECKED[0])


def sign_of_sum_task(rng, n_samples, n_steps=10):
    X = rng.normal(size=(n_samples, n_steps, 1))
    return X, (X.sum(axis=(1, 2)) > 0).astype(np.int64)


def test_classifier_learns_the_sign_of_a_sum():
    rng = np.random.default_rng(1)
    X, y = sign_of_sum_task(rng, 400)
    X_test, y_test = sign_of_sum_task(rng, 200)
    classifier = SequenceClassifier(hidden_size=16, lr=0.03, epochs=30, random_state=0).fit(X, y)
    assert classifier.score(X_test, y_test) > 0.9
    assert classifier.loss_curve_[-1] < classifier.loss_curve_[0]
    probabilities = classifier.predict_proba(X_test)
    assert probabilities.shape == (200, 2) and probabilities.dtype == np.float64
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0)


def test_classifier_keeps_string_labels_and_their_order():
    rng = np.random.default_rng(2)
    X, y = sign_of_sum_task(rng, 200)
    labels = np.array(["positive", "negative"])[1 - y]
    classifier = SequenceClassifier(hidden_size=8, lr=0.03, random_state=0).fit(X, labels)
    assert classifier.classes_.tolist() == ["negative", "positive"]
    assert classifier.score(X, labels) > 0.9


def test_regressor_beats_predicting_the_mean():
    rng = np.random.default_rng(3)
    X = rng.normal(size=(500, 8, 2))
    y = X[:, :, 0].mean(axis=1) - 0.5 * X[:, -1, 1]
    regressor = SequenceRegressor(hidden_size=16, lr=0.03, random_state=0).fit(X[:400], y[:400])
    # R^2 compares with predicting the mean, which scores 0
    assert regressor.score(X[400:], y[400:]) > 0.8
    assert regressor.predict(X[400:]).shape == (100,)


def test_regressor_predicts_a_vector_per_sequence():
    rng = np.random.default_rng(4)
    X = rng.normal(size=(300, 6, 1))
    y = np.stack([X[:, :, 0].mean(axis=1), X[:, 0, 0]], axis=1)
    regressor = SequenceRegressor(hidden_size=16, lr=0.03, random_state=0).fit(X, y)
    assert regressor.n_outputs_ == 2
    assert regressor.predict(X).shape == (300, 2)
    assert regressor.score(X, y) > 0.8


# ------------------------------------------------------------------ input forms
def ragged_sequences(rng, n_samples=24, n_features=2, max_steps=9):
    lengths = rng.integers(1, max_steps + 1, size=n_samples)
    return [rng.normal(size=(length, n_features)) for length in lengths], lengths


def padded_time_major(sequences):
    """The (T_max, n, n_features) zero-padded array SequenceModel takes, and lengths."""
    lengths = np.array([len(sequence) for sequence in sequences])
    padded = np.zeros((lengths.max(), len(sequences), sequences[0].shape[1]))
    for k, sequence in enumerate(sequences):
        padded[:len(sequence), k] = sequence
    return padded, lengths


def test_ragged_predictions_equal_the_models_padded_call_with_lengths():
    rng = np.random.default_rng(5)
    sequences, _ = ragged_sequences(rng)
    y = rng.normal(size=len(sequences))
    regressor = SequenceRegressor(hidden_size=6, epochs=3, dtype=np.float64,
                                  random_state=0).fit(sequences, y)
    padded, lengths = padded_time_major(sequences)
    expected = regressor.model_.predict(padded, lengths=lengths)[:, 0]
    np.testing.assert_allclose(regressor.predict(sequences), expected, rtol=1e-12)
    # Padding never leaks into a sequence's prediction: each alone gives the same.
    alone = [regressor.predict(sequence[None])[0] for sequence in sequences]
    np.testing.assert_allclose(alone, expected, rtol=1e-12)


def test_ragged_training_equals_sequence_model_training_with_lengths():
    # One full batch, no shuffling: fit is then exactly SequenceModel.train_step on the
    # padded batch with lengths, from the weights of SequenceModel(seed=random_state).
    rng = np.random.default_rng(6)
    sequences, _ = ragged_sequences(rng)
    y = np.arange(len(sequences)) % 3
    classifier = SequenceClassifier(cell="gru", hidden_size=5, epochs=3, lr=0.05,
                                    batch_size=len(sequences), shuffle=False,
                                    dtype=np.float64, random_state=7).fit(sequences, y)
    model = SequenceModel(cell="gru", input_size=2, hidden_size=5, output_size=3,
                          output="last", loss="cross_entropy", optimizer=optim.Adam(lr=0.05),
                          dtype=np.float64, seed=7)
    padded, lengths = padded_time_major(sequences)
    losses = [model.train_step(padded, y, lengths=lengths) for _ in range(3)]
    np.testing.assert_allclose(classifier.loss_curve_, losses, rtol=1e-12)
    np.testing.assert_allclose(classifier.model_.flat_params, model.flat_params, rtol=1e-12)


def test_ragged_lists_of_one_feature_sequences():
    rng = np.random.default_rng(7)
    sequences = [rng.normal(size=length) for length in (3, 5, 2, 4)]
    as_columns = [sequence[:, None] for sequence in sequences]
    regressor = SequenceRegressor(hidden_size=4, epochs=2, random_state=0)
    regressor.fit(sequences, rng.normal(size=4))
    assert regressor.n_features_in_ == 1
    np.testing.assert_array_equal(regressor.predict(sequences), regressor.predict(as_columns))


def test_2d_input_is_3d_input_with_one_feature():
    rng = np.random.default_rng(8)
    X, y = rng.normal(size=(40, 7)), np.arange(40) % 2
    from_2d = SequenceClassifier(hidden_size=4, epochs=3, random_state=1).fit(X, y)
    from_3d = SequenceClassifier(hidden_size=4, epochs=3, random_state=1).fit(X[:, :, None], y)
    assert from_2d.n_features_in_ == from_3d.n_features_in_ == 1
    np.testing.assert_array_equal(from_2d.predict_proba(X), from_3d.predict_proba(X[:, :, None]))
    np.testing.assert_array_equal(from_2d.predict_proba(X), from_2d.predict_proba(X[:, :, None]))


# ------------------------------------------------------------ state and reuse
def test_same_random_state_same_predictions_and_another_differs():
    rng = np.random.default_rng(9)
    X, y = rng.normal(size=(50, 5, 3)), rng.normal(size=50)

    def predictions(random_state):
        return SequenceRegressor(hidden_size=4, epochs=3, dropout=0.0,
                                 random_state=random_state).fit(X, y).predict(X)

    np.testing.assert_array_equal(predictions(3), predictions(3))
    assert not np.array_equal(predictions(3), predictions(4))


def test_partial_fit_once_equals_fit_for_one_epoch():
    rng = np.random.default_rng(10)
    X, y = rng.normal(size=(50, 5, 2)), np.arange(50) % 3
    fitted = SequenceClassifier(hidden_size=4, epochs=1, random_state=2).fit(X, y)
    partial = SequenceClassifier(hidden_size=4, random_state=2).partial_fit(X, y, classes=[0, 1, 2])
    np.testing.assert_array_equal(fitted.predict_proba(X), partial.predict_proba(X))
    partial.partial_fit(X, y)
    assert partial.n_iter_ == 2 and len(partial.loss_curve_) == 2


def test_partial_fit_needs_classes_first_and_keeps_them():
    X, y = np.zeros((6, 3)), np.array([0, 1, 0, 1, 0, 1])
    classifier = SequenceClassifier(hidden_size=2)
    with pytest.raises(ValueError, match="classes must be given on the first call"):
        classifier.partial_fit(X, y)
    classifier.partial_fit(X, y, classes=[0, 1, 2])  # class 2 may come later
    classifier.partial_fit(X, np.full(6, 2))
    assert classifier.classes_.tolist() == [0, 1, 2]
    with pytest.raises(ValueError, match="y holds labels that are not in classes"):
        classifier.partial_fit(X, np.full(6, 3))
    with pytest.raises(ValueError, match="classes must be those of the first call"):
        classifier.partial_fit(X, y, classes=[0, 1])


def test_pickle_round_trip_predicts_and_trains_on_identically():
    rng = np.random.default_rng(11)
    sequences, _ = ragged_sequences(rng)
    y = np.arange(len(sequences)) % 2
    classifier = SequenceClassifier(hidden_size=5, epochs=2, random_state=0).fit(sequences, y)
    restored = pickle.loads(pickle.dumps(classifier))
    assert isinstance(restored.model_, SequenceModel)
    np.testing.assert_array_equal(restored.predict_proba(sequences),
                                  classifier.predict_proba(sequences))
    # The optimizer state and the batch order travel too: training goes on alike.
    classifier.partial_fit(sequences, y)
    restored.partial_fit(sequences, y)
    np.testing.assert_array_equal(restored.model_.flat_params, classifier.model_.flat_params)


def test_optimizer_instance_is_a_template():
    rng = np.random.default_rng(12)
    X, y = rng.normal(size=(30, 4, 1)), rng.normal(size=30)
    template = optim.SGD(lr=0.05, momentum=0.9)
    regressor = SequenceRegressor(hidden_size=4, epochs=2, optimizer=template, random_state=0)
    first = regressor.fit(X, y).predict(X)
    np.testing.assert_array_equal(regressor.fit(X, y).predict(X), first)
    assert template.step_count == 0
    assert regressor.model_.optimizer.hyperparameters["momentum"] == 0.9
    regressor.set_params(lr=0.01).fit(X, y)
    assert regressor.model_.optimizer.lr == 0.01


def test_pipeline_and_grid_search():
    rng = np.random.default_rng(13)
    X = rng.normal(loc=5.0, scale=3.0, size=(120, 6))  # 2-D: the scaler's columns are steps
    y = (X.sum(axis=1) > 30.0).astype(np.int64)
    pipeline = Pipeline([("scale", StandardScaler()),
                         ("rnn", SequenceClassifier(hidden_size=4, lr=0.03, random_state=0))])
    search = GridSearchCV(pipeline, {"rnn__cell": ["gru", "rnn"], "rnn__hidden_size": [4, 8]},
                          cv=2)
    search.fit(X, y)
    assert set(search.best_params_) == {"rnn__cell", "rnn__hidden_size"}
    assert search.best_score_ > 0.75  # cross-validated, on 60 sequences per fit
    assert search.score(X, y) > 0.85
    assert search.best_estimator_.predict(X).shape == (120,)


# ------------------------------------------------------------------- bad input
@pytest.mark.parametrize("X, message", [
    (np.zeros((4, 3, 2, 1)), r"X must be \(n_samples, T, n_features\)"),
    (np.zeros(4), "Expected 2D array"),
    (np.zeros((0, 3, 2)), "0 sample"),
    (np.zeros((4, 0, 2)), "at least one time step and one feature"),
    (np.full((4, 3, 2), np.nan), "Input X contains NaN"),
    ([np.zeros((3, 2)), np.zeros((2, 3)), np.zeros((1, 2)), np.zeros((2, 2))],
     r"X\[1\] has 3 features per step, but X\[0\] has 2"),
    ([np.zeros((3, 2)), np.zeros((0, 2)), np.zeros((1, 2)), np.zeros((2, 2))],
     r"X\[1\] must be \(T, n_features\) or \(T,\) with T >= 1"),
    ([np.zeros((3, 2)), np.full((2, 2), np.inf), np.zeros((1, 2)), np.zeros((2, 2))],
     r"Input X\[1\] contains infinity"),
])
def test_bad_X_is_a_value_error_naming_it(X, message):
    with pytest.raises(ValueError, match=message):
        SequenceRegressor(hidden_size=2, epochs=1).fit(X, np.zeros(4))


def test_predict_refuses_another_number_of_features_per_step():
    regressor = SequenceRegressor(hidden_size=2, epochs=1).fit(np.zeros((4, 3, 2)), np.zeros(4))
    with pytest.raises(ValueError, match="X has 3 features per step, but SequenceRegressor is "
                                         "expecting 2 features per step"):
        regressor.predict(np.zeros((4, 3, 3)))


def test_targets_are_checked():
    X = np.zeros((4, 3, 1))
    with pytest.raises(ValueError, match="X and y must hold the same number of samples"):
        SequenceRegressor(epochs=1).fit(X, np.zeros(3))
    with pytest.raises(ValueError, match="Input y contains NaN"):
        SequenceRegressor(epochs=1).fit(X, np.full(4, np.nan))
    with pytest.raises(ValueError, match="at least 2 classes, got 1 class"):
        SequenceClassifier(epochs=1).fit(X, np.ones(4))
    with pytest.raises(ValueError, match="Unknown label type"):
        SequenceClassifier(epochs=1).fit(X, [0.5, 1.5, 2.5, 3.5])
    with pytest.raises(ValueError, match="requires y to be passed"):
        SequenceClassifier(epochs=1).fit(X, None)


@pytest.mark.parametrize("parameters, error, message", [
    ({"cell": "lstmx"}, ValueError, "cell must be one of"),
    ({"hidden_size": 0}, ValueError, "hidden_size must be an integer >= 1"),
    ({"num_layers": 0}, ValueError, "num_layers must be an integer >= 1"),
    ({"epochs": 0}, ValueError, "epochs must be an integer >= 1"),
    ({"batch_size": -1}, ValueError, "batch_size must be an integer >= 1"),
    ({"lr": -0.1}, ValueError, "lr must be a finite number >= 0"),
    ({"optimizer": "adadelta"}, ValueError, "optimizer must be one of"),
    ({"dropout": 1.5}, ValueError, r"dropout must be a finite number in \[0, 1\)"),
    ({"max_norm": -1.0}, ValueError, "max_norm must be a finite number >= 0"),
    ({"random_state": -1}, ValueError, "random_state must be an integer between 0 and"),
    ({"random_state": "seed"}, TypeError, "random_state must be None, an int or a numpy"),
    ({"shuffle": "yes"}, TypeError, "shuffle must be True or False"),
    ({"dtype": np.int32}, TypeError, "dtype must be float32 or float64"),
])
def test_bad_hyperparameters_fail_at_fit_naming_them(parameters, error, message):
    classifier = SequenceClassifier(**parameters)  # scikit-learn's rule: __init__ only stores
    with pytest.raises(error, match=message):
        classifier.fit(np.zeros((4, 3, 1)), [0, 1, 0, 1])


def test_missing_scikit_learn_says_how_to_install_it(monkeypatch):
    for name in [name for name in sys.modules if name.split(".")[0] == "sklearn"]:
        monkeypatch.setitem(sys.modules, name, None)  # None makes the import fail
    monkeypatch.delitem(sys.modules, "fastrnn.sklearn")
    with pytest.raises(ImportError, match="pip install scikit-learn"):
        importlib.import_module("fastrnn.sklearn")
