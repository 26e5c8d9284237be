"""fastrnn.optim: updates vs a textbook numpy reference and vs torch.optim, state_dict
round trips, and argument validation."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from fastrnn import optim

SIZE = 257  # odd, so no vector-width remainder is left untested
STEPS = 6


# --- slow numpy references, written from the textbook equations -----------------------

class ReferenceSGD:
    def __init__(self, lr=1e-3, momentum=0.0, dampening=0.0, weight_decay=0.0,
                 nesterov=False):
        self.lr, self.momentum, self.dampening = lr, momentum, dampening
        self.weight_decay, self.nesterov = weight_decay, nesterov
        self.buf = None

    def step(self, p, g):
        g = g + self.weight_decay * p
        if self.momentum:
            if self.buf is None:
                self.buf = g.copy()
            else:
                self.buf = self.momentum * self.buf + (1 - self.dampening) * g
            g = g + self.momentum * self.buf if self.nesterov else self.buf
        return p - self.lr * g


class ReferenceAdam:
    decoupled = False

    def __init__(self, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0,
                 amsgrad=False):
        self.lr, (self.b1, self.b2), self.eps = lr, betas, eps
        self.weight_decay, self.amsgrad = weight_decay, amsgrad
        self.t, self.m, self.v, self.v_max = 0, 0.0, 0.0, 0.0

    def step(self, p, g):
        self.t += 1
        if self.decoupled:
            p = p * (1 - self.lr * self.weight_decay)
        else:
            g = g + self.weight_decay * p
        self.m = self.b1 * self.m + (1 - self.b1) * g
        self.v = self.b2 * self.v + (1 - self.b2) * g * g
        self.v_max = np.maximum(self.v_max, self.v)
        v = self.v_max if self.amsgrad else self.v
        m_hat = self.m / (1 - self.b1 ** self.t)
        v_hat = v / (1 - self.b2 ** self.t)
        return p - self.lr * m_hat / (np.sqrt(v_hat) + self.eps)


class ReferenceAdamW(ReferenceAdam):
    decoupled = True

    def __init__(self, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2,
                 amsgrad=False):
        super().__init__(lr, betas, eps, weight_decay, amsgrad)


class ReferenceAdagrad:
    def __init__(self, lr=1e-2, lr_decay=0.0, weight_decay=0.0,
                 initial_accumulator_value=0.0, eps=1e-10):
        self.lr, self.lr_decay, self.weight_decay, self.eps = lr, lr_decay, weight_decay, eps
        self.sum = initial_accumulator_value
        self.t = 0

    def step(self, p, g):
        self.t += 1
        g = g + self.weight_decay * p
        self.sum = self.sum + g * g
        lr_t = self.lr / (1 + (self.t - 1) * self.lr_decay)
        return p - lr_t * g / (np.sqrt(self.sum) + self.eps)


class ReferenceRMSprop:
    def __init__(self, lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0.0, momentum=0.0,
                 centered=False):
        self.lr, self.alpha, self.eps = lr, alpha, eps
        self.weight_decay, self.momentum, self.centered = weight_decay, momentum, centered
        self.sq, self.mean, self.buf = 0.0, 0.0, 0.0

    def step(self, p, g):
        g = g + self.weight_decay * p
        self.sq = self.alpha * self.sq + (1 - self.alpha) * g * g
        var = self.sq
        if self.centered:
            self.mean = self.alpha * self.mean + (1 - self.alpha) * g
            var = self.sq - self.mean ** 2
        scaled = g / (np.sqrt(var) + self.eps)
        if self.momentum > 0:
            self.buf = self.momentum * self.buf + scaled
            return p - self.lr * self.buf
        return p - self.lr * scaled


REFERENCES = {"SGD": ReferenceSGD, "Adam": ReferenceAdam, "AdamW": ReferenceAdamW,
              "Adagrad": ReferenceAdagrad, "RMSprop": ReferenceRMSprop}

CONFIGS = [
    ("SGD", {}),
    ("SGD", {"lr": 0.1, "weight_decay": 0.01}),
    ("SGD", {"lr": 0.1, "momentum": 0.9}),
    ("SGD", {"lr": 0.05, "momentum": 0.8, "dampening": 0.3, "weight_decay": 0.02}),
    ("SGD", {"lr": 0.05, "momentum": 0.9, "nesterov": True, "weight_decay": 0.01}),
    ("Adam", {}),
    ("Adam", {"lr": 0.01, "betas": (0.8, 0.99), "eps": 1e-6, "weight_decay": 0.1}),
    ("Adam", {"lr": 0.01, "amsgrad": True}),
    ("Adam", {"lr": 0.02, "betas": (0.0, 0.5), "weight_decay": 0.05, "amsgrad": True}),
    ("AdamW", {}),
    ("AdamW", {"lr": 0.01, "weight_decay": 0.3, "amsgrad": True}),
    ("AdamW", {"lr": 0.01, "betas": (0.6, 0.9), "weight_decay": 0.0}),
    ("Adagrad", {}),
    ("Adagrad", {"lr": 0.1, "lr_decay": 0.05, "weight_decay": 0.1,
                 "initial_accumulator_value": 0.3, "eps": 1e-8}),
    ("RMSprop", {}),
    ("RMSprop", {"lr": 0.01, "alpha": 0.9, "weight_decay": 0.1}),
    ("RMSprop", {"lr": 0.01, "momentum": 0.9}),
    ("RMSprop", {"lr": 0.01, "centered": True, "eps": 1e-6}),
    ("RMSprop", {"lr": 0.005, "alpha": 0.95, "momentum": 0.5, "centered": True,
                 "weight_decay": 0.01}),
]
CONFIG_IDS = [f"{name}-{'-'.join(f'{k}={v}' for k, v in kw.items()) or 'defaults'}"
              for name, kw in CONFIGS]


def _problem(rng, dtype=np.float64, steps=STEPS):
    params = rng.normal(size=SIZE).astype(dtype)
    grads = [rng.normal(scale=scale, size=SIZE).astype(dtype)
             for scale in np.geomspace(1.0, 1e-2, steps)]
    return params, grads


def _max_rel_error(got, want):
    return float(np.max(np.abs(got - want)) / np.max(np.abs(want)))


@pytest.mark.parametrize("name, kwargs", CONFIGS, ids=CONFIG_IDS)
def test_matches_numpy_reference(name, kwargs, rng):
    params, grads = _problem(rng)
    opt = getattr(optim, name)(**kwargs)
    reference = REFERENCES[name](**kwargs)
    expected = params.copy()
    for grad in grads:
        opt.step(params, grad)
        expected = reference.step(expected, grad)
        assert _max_rel_error(params, expected) < 1e-12
    assert opt.step_count == len(grads)


def _steps_beside_torch(name, kwargs, params, grads):
    """Yield (fastrnn params, torch params) after each step of the same optimizer."""
    torch = pytest.importorskip("torch", reason="torch is needed for the parity check")
    opt = getattr(optim, name)(**kwargs)
    tensor = torch.tensor(params.copy(), requires_grad=True)
    torch_opt = getattr(torch.optim, name)([tensor], **kwargs)
    for grad in grads:
        opt.step(params, grad)
        tensor.grad = torch.tensor(grad)
        torch_opt.step()
        yield params, tensor.detach().numpy()


@pytest.mark.parametrize("name, kwargs", CONFIGS, ids=CONFIG_IDS)
def test_matches_torch_float64(name, kwargs, rng):
    params, grads = _problem(rng)
    for ours, theirs in _steps_beside_torch(name, kwargs, params, grads):
        np.testing.assert_allclose(ours, theirs, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("name, kwargs", CONFIGS[::3], ids=CONFIG_IDS[::3])
def test_float32_matches_torch_float32(name, kwargs, rng):
    params, grads = _problem(rng, np.float32)
    ours, theirs = list(_steps_beside_torch(name, kwargs, params, grads))[-1]
    assert ours.dtype == np.float32
    np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name, kwargs", CONFIGS, ids=CONFIG_IDS)
def test_state_dict_resumes_bit_for_bit(name, kwargs, rng):
    params, grads = _problem(rng, steps=8)
    opt = getattr(optim, name)(**kwargs)
    for grad in grads[:3]:
        opt.step(params, grad)
    saved = opt.state_dict()
    resumed_params = params.copy()

    resumed = getattr(optim, name)()  # default hyperparameters: the dict must restore them
    resumed.load_state_dict(saved)
    assert resumed.hyperparameters == opt.hyperparameters
    for grad in grads[3:]:
        opt.step(params, grad)
        resumed.step(resumed_params, grad)
    assert np.array_equal(params, resumed_params)
    assert resumed.step_count == opt.step_count == len(grads)


def test_state_dict_is_plain_and_a_copy(rng):
    params, grads = _problem(rng)
    opt = optim.Adam(lr=0.01, amsgrad=True)
    opt.step(params, grads[0])
    state = opt.state_dict()
    assert state["optimizer"] == "Adam" and state["step"] == 1
    assert state["size"] == SIZE and state["dtype"] == "float64"
    for key, value in state.items():
        assert isinstance(value, (bool, int, float, str, tuple, np.ndarray)), key
    before = opt.state_dict()
    state["exp_avg"][:] = 123.0
    assert np.array_equal(opt.state_dict()["exp_avg"], before["exp_avg"])


def test_state_dict_before_first_step_and_npz_style_values(rng, tmp_path):
    fresh = optim.RMSprop(lr=0.02, centered=True).state_dict()
    assert set(fresh) == {"optimizer", "step", "lr", "alpha", "eps", "weight_decay",
                          "momentum", "centered"}
    params, grads = _problem(rng)
    opt = optim.Adam(lr=0.01, betas=(0.8, 0.9))
    opt.step(params, grads[0])
    # A round trip through np.savez turns every value into an array.
    path = tmp_path / "opt.npz"
    np.savez(path, **opt.state_dict())
    with np.load(path) as stored:
        loaded = optim.Adam()
        loaded.load_state_dict(dict(stored))
    assert loaded.hyperparameters == opt.hyperparameters
    other = params.copy()
    opt.step(params, grads[1])
    loaded.step(other, grads[1])
    assert np.array_equal(params, other)


def _bad_states(good):
    def edited(**changes):
        state = dict(good)
        for key, value in changes.items():
            if value is _DROP:
                del state[key]
            else:
                state[key] = value
        return state

    return {
        "other optimizer": edited(optimizer="SGD"),
        "negative step": edited(step=-1),
        "float step": edited(step=1.5),
        "missing buffer": edited(exp_avg_sq=_DROP),
        "missing hyperparameter": edited(lr=_DROP),
        "extra key": edited(bogus=1.0),
        "bad lr": edited(lr=-1.0),
        "bad betas": edited(betas=(0.9, 1.0)),
        "short buffer": edited(exp_avg=good["exp_avg"][:-1]),
        "wrong buffer dtype": edited(exp_avg=good["exp_avg"].astype(np.float32)),
        "bad dtype name": edited(dtype="float16"),
        "bad size": edited(size=0),
    }


_DROP = object()


def test_load_state_dict_rejects_bad_dicts_and_keeps_state(rng):
    params, grads = _problem(rng)
    source = optim.Adam(lr=0.01)
    source.step(params.copy(), grads[0])
    good = source.state_dict()

    target = optim.Adam(lr=0.5, betas=(0.5, 0.6))
    target.step(params.copy(), grads[1])
    target.step(params.copy(), grads[2])
    before = target.state_dict()
    for label, bad in _bad_states(good).items():
        with pytest.raises((ValueError, TypeError)):
            target.load_state_dict(bad)
        after = target.state_dict()
        assert after.keys() == before.keys(), label
        for key in before:
            assert np.array_equal(after[key], before[key]), (label, key)
    with pytest.raises(TypeError, match="state must be a dict"):
        target.load_state_dict([("lr", 1.0)])


BAD_HYPERPARAMETERS = [
    (optim.SGD, {"lr": -0.1}, "lr"),
    (optim.SGD, {"lr": float("nan")}, "lr"),
    (optim.SGD, {"lr": float("inf")}, "lr"),
    (optim.SGD, {"lr": "0.1"}, "lr"),
    (optim.SGD, {"momentum": -0.5}, "momentum"),
    (optim.SGD, {"dampening": 1.5}, "dampening"),
    (optim.SGD, {"weight_decay": -1e-3}, "weight_decay"),
    (optim.SGD, {"nesterov": True}, "nesterov"),
    (optim.SGD, {"nesterov": True, "momentum": 0.9, "dampening": 0.1}, "nesterov"),
    (optim.SGD, {"nesterov": 1}, "nesterov"),
    (optim.Adam, {"betas": (1.0, 0.999)}, "betas"),
    (optim.Adam, {"betas": (0.9, -0.1)}, "betas"),
    (optim.Adam, {"betas": (0.9,)}, "betas"),
    (optim.Adam, {"betas": 0.9}, "betas"),
    (optim.Adam, {"eps": 0.0}, "eps"),
    (optim.Adam, {"weight_decay": -0.1}, "weight_decay"),
    (optim.Adam, {"amsgrad": "yes"}, "amsgrad"),
    (optim.AdamW, {"lr": -1.0}, "lr"),
    (optim.Adagrad, {"lr_decay": -0.1}, "lr_decay"),
    (optim.Adagrad, {"initial_accumulator_value": -1.0}, "initial_accumulator_value"),
    (optim.Adagrad, {"eps": -1e-10}, "eps"),
    (optim.RMSprop, {"alpha": 1.5}, "alpha"),
    (optim.RMSprop, {"momentum": -0.9}, "momentum"),
    (optim.RMSprop, {"eps": 0.0}, "eps"),
    (optim.RMSprop, {"centered": None}, "centered"),
]


@pytest.mark.parametrize("cls, kwargs, argument", BAD_HYPERPARAMETERS,
                         ids=[f"{c.__name__}-{k}" for c, k, _ in BAD_HYPERPARAMETERS])
def test_bad_hyperparameters_raise_naming_the_argument(cls, kwargs, argument):
    with pytest.raises((ValueError, TypeError), match=argument):
        cls(**kwargs)


def test_lr_setter_validates():
    opt = optim.SGD(lr=0.1)
    opt.lr = 0.05
    assert opt.lr == 0.05 and opt.hyperparameters["lr"] == 0.05
    with pytest.raises(ValueError, match="lr"):
        opt.lr = -1.0
    assert opt.lr == 0.05
    assert opt.momentum == 0.0  # every hyperparameter reads as an attribute
    assert "SGD(lr=0.05" in repr(opt)


def test_step_validates_arrays(rng):
    opt = optim.Adam()
    p = rng.normal(size=10)
    with pytest.raises(TypeError, match="params"):
        opt.step(list(p), p)
    with pytest.raises(TypeError, match="grads"):
        opt.step(p, p.astype(np.float32))
    with pytest.raises(TypeError, match="params"):
        opt.step(p.astype(np.int64), p.astype(np.int64))
    with pytest.raises(ValueError, match="shape"):
        opt.step(p, p[:5].copy())
    with pytest.raises(ValueError, match="1-D"):
        opt.step(p.reshape(2, 5), p.reshape(2, 5))
    with pytest.raises(ValueError, match="contiguous"):
        opt.step(p[::2], p[::2].copy())
    read_only = p.copy()
    read_only.flags.writeable = False
    with pytest.raises(ValueError, match="writeable"):
        opt.step(read_only, p)
    assert opt.step_count == 0  # nothing reached the kernel

    opt.step(p, rng.normal(size=10))
    with pytest.raises(ValueError, match="zero_state"):
        opt.step(rng.normal(size=11), rng.normal(size=11))
    with pytest.raises(ValueError, match="float64"):
        opt.step(p.astype(np.float32), p.astype(np.float32))
    opt.zero_state()
    assert opt.step_count == 0 and opt.state_dict()["step"] == 0
    opt.step(rng.normal(size=11).astype(np.float32), rng.normal(size=11).astype(np.float32))


def test_zero_state_restarts_like_a_new_optimizer(rng):
    params, grads = _problem(rng)
    used = optim.RMSprop(lr=0.01, momentum=0.9, centered=True)
    used.step(params.copy(), grads[0])
    used.zero_state()
    fresh = optim.RMSprop(lr=0.01, momentum=0.9, centered=True)
    a, b = params.copy(), params.copy()
    for grad in grads:
        used.step(a, grad)
        fresh.step(b, grad)
    assert np.array_equal(a, b)


# --- properties ------------------------------------------------------------------------

finite = st.floats(-1e3, 1e3, allow_nan=False, allow_infinity=False)
vectors = st.integers(1, 40).flatmap(
    lambda n: st.tuples(hnp.arrays(np.float64, n, elements=finite),
                        hnp.arrays(np.float64, n, elements=finite)))


@given(vectors, st.floats(0.0, 1.0))
def test_plain_sgd_is_p_minus_lr_g(arrays, lr):
    params, grads = arrays
    expected = params - lr * grads
    scale = np.abs(params) + lr * np.abs(grads)  # the kernel may fuse into one FMA
    optim.SGD(lr=lr).step(params, grads)
    # Among subnormals the rounding unit is absolute: one of them.
    tolerance = 4e-16 * scale + np.finfo(np.float64).smallest_subnormal
    assert np.all(np.abs(params - expected) <= tolerance)


@given(vectors, st.floats(1e-4, 1.0), st.floats(0.0, 0.99), st.floats(0.0, 0.999))
def test_first_adam_step_moves_each_parameter_at_most_lr(arrays, lr, beta1, beta2):
    # After bias correction m_hat/sqrt(v_hat) = sign(g) at step 1.
    params, grads = arrays
    before = params.copy()
    optim.Adam(lr=lr, betas=(beta1, beta2)).step(params, grads)
    assert np.all(np.abs(params - before) <= lr * (1 + 1e-12) + 1e-12 * np.abs(before))
