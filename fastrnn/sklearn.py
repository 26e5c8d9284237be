"""scikit-learn estimators over SequenceModel: `SequenceClassifier` (one label per
sequence, softmax cross-entropy) and `SequenceRegressor` (one value or vector per
sequence, mean squared error). Both read the recurrent layer's final state (the
model's output="last" head), so sequences of any length give one prediction each.

X, in fit, partial_fit and every predict method, is one of

- a 3-D array (n_samples, T, n_features);
- a 2-D array (n_samples, T): one feature per step, the same as X[:, :, None];
- a list of sequences of differing lengths, each (T_i, n_features) or (T_i,):
  padded with zeros internally and passed to SequenceModel with their lengths, so a
  sequence's prediction never depends on the padding.

`n_features_in_` is the number of features per time step (1 for 2-D X), and T may
differ between fit and predict. This is why scikit-learn's checks that read
X.shape[1] as the feature count fail; `expected_failed_checks` lists them.

random_state: an int is SequenceModel's `seed` (the initial weights are those of
SequenceModel(seed=random_state)) and also seeds the order of the mini-batches; a
numpy RandomState gives such an int, drawn on each fit; None draws fresh entropy.

scikit-learn is an optional dependency: `pip install scikit-learn`.
"""

import numbers

import numpy as np

try:
    from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
    from sklearn.utils import assert_all_finite, check_array, column_or_1d
    from sklearn.utils.multiclass import check_classification_targets
    from sklearn.utils.validation import check_is_fitted
except ImportError as error:  # scikit-learn is optional: fastrnn itself never imports this
    raise ImportError("fastrnn.sklearn needs scikit-learn: pip install scikit-learn") from error

from . import optim
from ._validate import as_dtype, flag, int_in_range, positive_int
from .model import SequenceModel

__all__ = ["SequenceClassifier", "SequenceRegressor", "expected_failed_checks"]

OPTIMIZERS = {"sgd": optim.SGD, "adam": optim.Adam, "adamw": optim.AdamW,
              "adagrad": optim.Adagrad, "rmsprop": optim.RMSprop}
DEFAULT_LR = 1e-2  # for a named optimizer: few epochs at 1e-3 leave small RNNs underfit
_PREDICT_BATCH = 1024  # sequences per forward call in predict, bounding the activations

_FEATURES_PER_STEP = ("2-D X is (n_samples, T), one feature per step, so X.shape[1] is the "
                      "sequence length T, which may differ between calls; n_features_in_ "
                      "counts features per step")


def expected_failed_checks(estimator):
    """The scikit-learn estimator checks `estimator` fails, with the reason: a dict for
    `parametrize_with_checks(..., expected_failed_checks=expected_failed_checks)` or
    `check_estimator(estimator, expected_failed_checks=...)`.

    All but one stem from one design choice: the checks read the columns of a 2-D X
    as features, a sequence estimator reads them as time steps. The other is float32
    rounding, which only some fits show: pass `xfail_strict=False` for a float32
    estimator.
    """
    failed = {
        "check_n_features_in": _FEATURES_PER_STEP,
        "check_n_features_in_after_fitting": _FEATURES_PER_STEP,
        "check_estimators_partial_fit_n_features":
            _FEATURES_PER_STEP + "; X[:, :-1] is valid input with one step fewer",
    }
    if isinstance(estimator, ClassifierMixin):
        failed["check_classifiers_train"] = (
            _FEATURES_PER_STEP + "; predict(X.T) is valid input (n_features sequences of "
            "n_samples steps); the accuracy part of the check passes")
    if np.dtype(estimator.dtype) == np.float32:
        rounding = ("float32: a sequence's outputs may differ by float32 rounding (about "
                    "1e-7) with the batch and the row they are computed in, since the "
                    "layer's products take other paths for other batch sizes and rows; "
                    "the check allows 1e-7")
        failed["check_methods_subset_invariance"] = rounding
        failed["check_methods_sample_order_invariance"] = rounding
    return failed


class _PaddedSequences:
    """Sequences zero-padded to one length, time-major as SequenceModel takes them:
    `values` (T_max, n_samples, n_features) and `lengths` (n_samples,) int64."""

    def __init__(self, values, lengths):
        self.values = values
        self.lengths = lengths

    @property
    def n_samples(self):
        return self.values.shape[1]

    @property
    def n_features(self):
        return self.values.shape[2]

    def batch(self, index):
        """(x (T_b, B, n_features), lengths (B,) or None) for the sequences at `index`
        (a slice or an index array), cut to their longest: None when all are full."""
        lengths = self.lengths[index]
        steps = int(lengths.max())
        lengths = None if lengths.min() == steps else lengths
        return self.values[:steps, index], lengths


def _padded_sequences(X, dtype):
    """X (3-D, 2-D or a ragged list; see the module docstring) as _PaddedSequences of
    `dtype`, checked finite and non-empty."""
    if isinstance(X, (list, tuple)) and len(X) > 1 and not _same_shapes(X):
        return _padded_ragged(X, dtype)
    array = check_array(X, dtype=dtype, allow_nd=True, input_name="X")
    if array.ndim == 2:
        array = array[:, :, None]
    if array.ndim != 3:
        raise ValueError(f"X must be (n_samples, T, n_features), (n_samples, T) or a list of "
                         f"sequences, got shape {array.shape}")
    if 0 in array.shape[1:]:
        raise ValueError(f"X must hold at least one time step and one feature, got shape "
                         f"{array.shape}")
    n_samples, n_steps = array.shape[:2]
    values = np.ascontiguousarray(array.transpose(1, 0, 2))
    return _PaddedSequences(values, np.full(n_samples, n_steps, dtype=np.int64))


def _same_shapes(items):
    first = np.shape(items[0])
    return all(np.shape(item) == first for item in items[1:])


def _padded_ragged(X, dtype):
    sequences = []
    for k, item in enumerate(X):
        # ensure_min_samples=0: an empty sequence gets the message below, which says
        # "time step" (check_array would say "sample")
        sequence = check_array(item, dtype=dtype, ensure_2d=False, ensure_min_samples=0,
                               input_name=f"X[{k}]")
        if sequence.ndim == 1:
            sequence = sequence[:, None]
        if sequence.ndim != 2 or 0 in sequence.shape:
            raise ValueError(f"X[{k}] must be (T, n_features) or (T,) with T >= 1, got "
                             f"shape {np.shape(item)}")
        if sequences and sequence.shape[1] != sequences[0].shape[1]:
            raise ValueError(f"X[{k}] has {sequence.shape[1]} features per step, but X[0] "
                             f"has {sequences[0].shape[1]}")
        sequences.append(sequence)
    lengths = np.array([len(sequence) for sequence in sequences], dtype=np.int64)
    values = np.zeros((lengths.max(), len(sequences), sequences[0].shape[1]), dtype=dtype)
    for k, sequence in enumerate(sequences):
        values[:len(sequence), k] = sequence
    return _PaddedSequences(values, lengths)


def _seed(random_state):
    """SequenceModel's seed for a random_state (see the module docstring)."""
    if random_state is None:
        return None
    if isinstance(random_state, np.random.RandomState):
        return int(random_state.randint(np.iinfo(np.int32).max))
    if isinstance(random_state, numbers.Integral) and not isinstance(random_state, bool):
        return int_in_range(random_state, "random_state", 0, 2**32 - 1)
    raise TypeError(f"random_state must be None, an int or a numpy RandomState, got "
                    f"{random_state!r}")


def _require_targets(y, estimator):
    if y is None:  # the words scikit-learn's check_requires_y_none looks for
        raise ValueError(f"{type(estimator).__name__} requires y to be passed, but the "
                         "target y is None")




class _SequenceEstimator(BaseEstimator):
    """What the classifier and the regressor share: parameters, training, pickling.

    A subclass sets `_loss` (a SequenceModel loss) and implements
    `_targets(y, dtype, restart, classes)` -> (targets for train_step, output_size,
    the fitted attributes a fresh fit sets).
    """

    _loss = None

    def __init__(self, cell="lstm", hidden_size=32, num_layers=1, bidirectional=False,
                 dropout=0.0, optimizer="adam", lr=None, epochs=50, batch_size=32,
                 shuffle=True, max_norm=None, clip_value=None, dtype=np.float32,
                 random_state=None):
        self.cell = cell
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.bidirectional = bidirectional
        self.dropout = dropout
        self.optimizer = optimizer
        self.lr = lr
        self.epochs = epochs
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.max_norm = max_norm
        self.clip_value = clip_value
        self.dtype = dtype
        self.random_state = random_state

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.three_d_array = True
        return tags

    # -------------------------------------------------------------------- training
    def _new_optimizer(self):
        if isinstance(self.optimizer, optim.Optimizer):
            # A template: each fit starts a fresh copy, never the instance's own state.
            optimizer_class, hyper = type(self.optimizer), self.optimizer.hyperparameters
        elif isinstance(self.optimizer, str) and self.optimizer in OPTIMIZERS:
            optimizer_class, hyper = OPTIMIZERS[self.optimizer], {"lr": DEFAULT_LR}
        else:
            raise ValueError(f"optimizer must be one of {tuple(OPTIMIZERS)} or a fastrnn.optim "
                             f"optimizer, got {self.optimizer!r}")
        if self.lr is not None:
            hyper["lr"] = self.lr
        return optimizer_class(**hyper)

    def _train(self, X, y, epochs, restart, classes=None):
        """`epochs` passes over (X, y): from fresh weights when `restart`, else
        continuing model_ (partial_fit)."""
        batch_size = positive_int(self.batch_size, "batch_size")
        shuffle = flag(self.shuffle, "shuffle")
        if restart:  # the model's hyperparameters: checked before the data is converted
            optimizer = self._new_optimizer()
            seed = _seed(self.random_state)
        dtype = as_dtype(self.dtype) if restart else self.model_.dtype
        sequences = self._checked_sequences(X, dtype, restart)
        _require_targets(y, self)
        targets, output_size, fitted = self._targets(y, dtype, restart, classes)
        if len(targets) != sequences.n_samples:
            raise ValueError(f"X and y must hold the same number of samples, got "
                             f"{sequences.n_samples} sequences in X and {len(targets)} in y")
        if restart:
            model = SequenceModel(
                cell=self.cell, input_size=sequences.n_features, hidden_size=self.hidden_size,
                output_size=output_size, num_layers=self.num_layers,
                bidirectional=self.bidirectional, output="last", loss=self._loss,
                optimizer=optimizer, max_norm=self.max_norm, clip_value=self.clip_value,
                dropout=self.dropout, dtype=dtype, seed=seed)
            batch_rng, loss_curve = np.random.default_rng(seed), []
        else:
            model, batch_rng, loss_curve = self.model_, self._batch_rng, self.loss_curve_
        for _ in range(epochs):
            loss_curve.append(_epoch(model, sequences, targets, batch_size,
                                     batch_rng if shuffle else None))
        if restart:
            for name, value in fitted.items():
                setattr(self, name, value)
            self.n_features_in_ = sequences.n_features
            self._batch_rng = batch_rng
        self.n_iter_ = epochs if restart else self.n_iter_ + epochs
        self.model_ = model
        self.loss_curve_ = loss_curve
        self.loss_ = loss_curve[-1]
        return self

    def fit(self, X, y):
        """Train fresh weights for `epochs` passes over (X, y); returns self.

        X: (n_samples, T, n_features), (n_samples, T) or a list of sequences.
        """
        return self._train(X, y, positive_int(self.epochs, "epochs"), restart=True)

    # ------------------------------------------------------------------ prediction
    def _checked_sequences(self, X, dtype, restart=False):
        sequences = _padded_sequences(X, dtype)
        if not restart and sequences.n_features != self.n_features_in_:
            raise ValueError(f"X has {sequences.n_features} features per step, but "
                             f"{type(self).__name__} is expecting {self.n_features_in_} "
                             "features per step as input")
        return sequences

    def _outputs(self, X):
        """The head's outputs (n_samples, output_size), in the model's dtype."""
        check_is_fitted(self, "model_")
        sequences = self._checked_sequences(X, self.model_.dtype)
        n_samples = sequences.n_samples
        return np.concatenate([
            self.model_.predict(*sequences.batch(slice(start, start + _PREDICT_BATCH)))
            for start in range(0, n_samples, _PREDICT_BATCH)])

    # -------------------------------------------------------------------- pickling
    def __getstate__(self):
        # A copy: object.__getstate__ returns the live __dict__.
        state = dict(super().__getstate__())
        if "model_" in state:  # SequenceModel holds unpicklable views; its checkpoint is not
            state["model_"] = state["model_"].to_bytes()
        return state

    def __setstate__(self, state):
        if "model_" in state:
            state = dict(state, model_=SequenceModel.from_bytes(state["model_"]))
        super().__setstate__(state)


def _epoch(model, sequences, targets, batch_size, rng):
    """One pass in mini-batches (shuffled by `rng` unless it is None); returns the mean
    training loss over the samples."""
    n_samples = sequences.n_samples
    order = np.arange(n_samples) if rng is None else rng.permutation(n_samples)
    total = 0.0
    for start in range(0, n_samples, batch_size):
        index = order[start:start + batch_size]
        x, lengths = sequences.batch(index)
        total += model.train_step(x, targets[index], lengths=lengths) * index.size
    return total / n_samples


_PARAMETERS_DOC = """
    Parameters
    ----------
    cell : {"lstm", "gru", "rnn", "rnn_relu", "gru_reset_before"}, default="lstm"
    hidden_size=32, num_layers=1, bidirectional=False, dropout=0.0
        The recurrent layer's (see SequenceModel); dropout applies between stacked
        layers.
    optimizer : {"adam", "adamw", "sgd", "adagrad", "rmsprop"} or a fastrnn.optim
        optimizer, default="adam". An instance is a template: each fit starts a fresh
        copy with its hyperparameters.
    lr : float or None, default=None
        The learning rate; None means 0.01 for a named optimizer and the instance's
        own lr for an instance.
    epochs : int, default=50
        Passes over the data in fit (partial_fit makes one).
    batch_size : int, default=32
    shuffle : bool, default=True
        Shuffle the mini-batches every epoch.
    max_norm=None, clip_value=None : float or None
        Gradient clipping inside the training step (global L2 norm, element value).
    dtype : float32 or float64, default=np.float32
    random_state : None, int or numpy RandomState (see the module docstring).

    Attributes
    ----------
    model_ : SequenceModel, the trained network.
    n_features_in_ : int, features per time step.
    n_iter_ : int, epochs trained.
    loss_curve_ : list of float, the mean training loss of each epoch; loss_ the last.
"""


class SequenceClassifier(ClassifierMixin, _SequenceEstimator):
    __doc__ = ("""One class label per sequence: a recurrent layer, a linear head on its
    final state, softmax cross-entropy.
    """ + _PARAMETERS_DOC + """    classes_ : ndarray (n_classes,), the labels, sorted.
    """)

    _loss = "cross_entropy"

    def _targets(self, y, dtype, restart, classes):
        labels = _labels(y, "y")
        if restart:
            known = np.unique(labels if classes is None else _labels(classes, "classes"))
            if known.size < 2:
                raise ValueError(f"y must hold at least 2 classes, got {known.size} class: "
                                 f"{known.tolist()}")
        else:
            known = self.classes_
            if classes is not None and not np.array_equal(np.unique(classes), known):
                raise ValueError(f"classes must be those of the first call to partial_fit, "
                                 f"{known.tolist()}, got {np.unique(classes).tolist()}")
        unknown = np.setdiff1d(labels, known)
        if unknown.size:
            raise ValueError(f"y holds labels that are not in classes {known.tolist()}: "
                             f"{unknown.tolist()}")
        return np.searchsorted(known, labels).astype(np.int64), known.size, {"classes_": known}

    def partial_fit(self, X, y, classes=None):
        """One pass over (X, y), continuing the current weights. `classes` (every label
        the model will see) is required on the first call; returns self.

        The network's hyperparameters are those of the first call (or of fit);
        batch_size and shuffle are read on every call."""
        first_call = not hasattr(self, "model_")
        if first_call and classes is None:
            raise ValueError("classes must be given on the first call to partial_fit")
        return self._train(X, y, 1, restart=first_call, classes=classes)

    def predict_proba(self, X):
        """Class probabilities (n_samples, n_classes), float64, columns as classes_."""
        logits = self._outputs(X).astype(np.float64)
        logits -= logits.max(axis=1, keepdims=True)  # exp never overflows
        probabilities = np.exp(logits)
        probabilities /= probabilities.sum(axis=1, keepdims=True)
        return probabilities

    def predict(self, X):
        """The most probable label of each sequence (n_samples,)."""
        probabilities = self.predict_proba(X)  # first: it checks that the model is fitted
        return self.classes_[np.argmax(probabilities, axis=1)]


def _labels(y, name):
    labels = column_or_1d(y, warn=True)  # warns for a column vector, as scikit-learn does
    # Before check_classification_targets, which casts NaN to int with a RuntimeWarning
    assert_all_finite(labels, input_name=name)
    check_classification_targets(labels)
    if labels.size == 0:
        raise ValueError(f"{name} must hold at least one label")
    return labels


class SequenceRegressor(RegressorMixin, _SequenceEstimator):
    __doc__ = ("""One value or vector per sequence: a recurrent layer, a linear head on
    its final state, mean squared error. Targets are not rescaled: wrap the estimator
    in sklearn.compose.TransformedTargetRegressor to standardise them.
    """ + _PARAMETERS_DOC + """    n_outputs_ : int, the number of target columns (1 for a 1-D y).
    """)

    _loss = "mse"

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        return tags

    def _targets(self, y, dtype, restart, classes=None):
        values = check_array(y, ensure_2d=False, dtype=dtype, input_name="y")
        if values.ndim > 2 or (values.ndim == 2 and values.shape[1] == 0):
            raise ValueError(f"y must be (n_samples,) or (n_samples, n_outputs) with "
                             f"n_outputs >= 1, got shape {values.shape}")
        targets = values.reshape(len(values), -1)
        n_outputs = targets.shape[1]
        if not restart and n_outputs != self.n_outputs_:
            raise ValueError(f"y has {n_outputs} outputs, but {type(self).__name__} was "
                             f"fitted with {self.n_outputs_}")
        return targets, n_outputs, {"n_outputs_": n_outputs, "_targets_1d": values.ndim == 1}

    def partial_fit(self, X, y):
        """One pass over (X, y), continuing the current weights; returns self.

        The network's hyperparameters are those of the first call (or of fit);
        batch_size and shuffle are read on every call."""
        return self._train(X, y, 1, restart=not hasattr(self, "model_"))

    def predict(self, X):
        """(n_samples,) for a 1-D y in fit, else (n_samples, n_outputs); float64."""
        outputs = self._outputs(X).astype(np.float64)
        return outputs[:, 0] if self._targets_1d else outputs
