"""Every execution plan the kernels can choose, forced on any machine, against the
numpy reference: every cell x plan x dtype x {full, ragged} lengths x clipping mode,
outputs, final states and every gradient, and the same for no_grad inference.

Each case runs at sizes that really take its plan's path, and asserts that it did
(fastrnn._threads.observed_runs reports each direction's plan and per-step product).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numba
import numpy as np
import pytest
from helpers import layer_backward, layer_forward, make_layer, max_rel_error, random_params
from reference import (
    CELLS,
    gate_count,
    reference_backward,
    reference_clip_grad_norm,
    reference_forward,
)

import fastrnn
from fastrnn import _cells, _threads


def _hidden_with_weight_over(cell, size):
    """The smallest H whose W_hh (G*H, H) has more than `size` elements."""
    return math.isqrt(size // gate_count(cell)) + 1


@dataclass(frozen=True)
class PlanCase:
    """A forced plan, sizes (T, B, I, H) per cell that take its path, and the
    per-step products forward and BPTT must then run."""
    name: str
    threads: int
    blocked: bool
    sizes: object  # cell -> (T, B, I, H)
    forward: str
    backward: str
    blas_threads: int = 1
    bidirectional: bool = True
    # extra conditions on each direction's report (pass, report) and on the sizes
    check_report: object = None
    check_sizes: object = None


LONG = _cells._MIN_STEPS_FOR_COPY + 1  # long enough for weight copies and blocks
SHORT = _cells._MIN_STEPS_FOR_COPY - 1


def _column_blocks(pass_name, report):
    return report["block_grid"][1] > 1


def _row_chunks_forward(pass_name, report):
    return pass_name == "backward" or report["block_grid"][0] > 1


def _fill_by(who):
    def check(pass_name, report):
        return report["fill"] == who
    return check


PLANS = [
    PlanCase("serial-short", 1, True, lambda cell: (SHORT, 3, 4, 6),
             "transposed_view", "plain"),
    PlanCase("serial-weight-copy", 1, False, lambda cell: (LONG, 3, 4, 6),
             "weight_copy", "plain"),
    PlanCase("serial-transposed-view", 1, False,
             lambda cell: (LONG, 3, 5, _hidden_with_weight_over(cell, _cells._SMALL_WEIGHT)),
             "transposed_view", "plain"),
    PlanCase("serial-blocked-columns", 1, True, lambda cell: (LONG, 64, 8, 128),
             "blocked", "blocked", bidirectional=False, check_report=_column_blocks),
    PlanCase("serial-blocked-row-chunks", 1, True, lambda cell: (LONG, 256, 3, 128),
             "blocked", "blocked", bidirectional=False, check_report=_row_chunks_forward),
    PlanCase("serial-weight-major", 1, False, lambda cell: (LONG, 2, 5, 512),
             "weight_major", "plain", bidirectional=False),
    PlanCase("serial-long-sequence", 1, True, lambda cell: (300, 2, 3, 8),
             "blocked", "blocked"),
    PlanCase("single-row", 2, True, lambda cell: (LONG, 1, 4, 6), "blocked", "blocked"),
    PlanCase("blas-threaded", 1, False, lambda cell: (LONG, 16, 32, 64),
             "weight_copy", "plain", blas_threads=2),
    PlanCase("batch2-blocked", 2, True, lambda cell: (LONG, 64, 8, 128),
             "blocked", "blocked", bidirectional=False),
    PlanCase("batch3-blocked-uneven", 3, True, lambda cell: (LONG, 7, 4, 8),
             "blocked", "blocked"),
    PlanCase("batch2-unblocked", 2, False, lambda cell: (LONG, 5, 4, 6),
             "weight_copy", "plain"),
    # Fewer rows (T*B) than threads x K: the weight gradients split by gate columns.
    PlanCase("batch2-grads-by-gate-columns", 2, False, lambda cell: (LONG, 2, 40, 40),
             "weight_copy", "plain",
             check_sizes=lambda T, B, I, H: T * B < 2 * min(I, H)),
    PlanCase("serial-compiled-weight-fill", 1, True,
             lambda cell: (LONG, 4, 8, _hidden_with_weight_over(cell, _cells._COMPILED_FILL_SIZE)),
             "blocked", "blocked", bidirectional=False, check_report=_fill_by("compiled")),
    PlanCase("batch2-parallel-weight-fill", 2, True,
             lambda cell: (LONG, 4, 8, _hidden_with_weight_over(cell, _cells._PARALLEL_COPY_SIZE)),
             "blocked", "blocked", bidirectional=False, check_report=_fill_by("parallel")),
]
PLAN_IDS = [plan.name for plan in PLANS]
DTYPES = {"float64": np.float64, "float32": np.float32}
LENGTHS = ("full", "ragged")
CLIPPING = ("noclip", "clip_hidden", "max_norm")


def _needs_threads(plan):
    needed = max(plan.threads, plan.blas_threads)
    if needed > numba.config.NUMBA_NUM_THREADS:
        # tests/conftest.py raises NUMBA_NUM_THREADS to 3 unless the user set it lower.
        pytest.skip(f"NUMBA_NUM_THREADS={numba.config.NUMBA_NUM_THREADS} was set below the "
                    f"{needed} threads this plan forces")


def _as_float32_exact(array):
    """float64 values that float32 holds exactly: both dtypes see the same problem,
    and so share one reference result."""
    return None if array is None else array.astype(np.float32).astype(np.float64)


@functools.lru_cache(maxsize=2)
def _problem(cell, plan_name, lengths_kind):
    """(problem, cotangents, reference forward) of one cell, plan and lengths kind;
    cached, as every dtype and clipping mode runs the same problem."""
    plan = PLANS[PLAN_IDS.index(plan_name)]
    T, B, I, H = plan.sizes(cell)
    if plan.check_sizes is not None:
        assert plan.check_sizes(T, B, I, H)
    rng = np.random.default_rng([CELLS.index(cell), PLAN_IDS.index(plan_name),
                                 LENGTHS.index(lengths_kind)])
    D = 2 if plan.bidirectional else 1
    lstm = cell == "lstm"
    shape = (D, B, H)
    lengths = None
    if lengths_kind == "ragged":
        lengths = rng.integers(1, T, size=B)  # every sequence shorter than T
        lengths[0] = 1
        lengths[-1] = T - 1  # and, from two sequences on, not all of one length
        assert lengths.max() < T
    params = random_params(cell, I, H, 1, plan.bidirectional, rng=rng, scale=1.5 / np.sqrt(H))
    problem = {
        "params": {name: _as_float32_exact(value) for name, value in params.items()},
        "x": _as_float32_exact(rng.standard_normal((T, B, I))),
        "h0": _as_float32_exact(rng.standard_normal(shape) * 0.5),
        "c0": _as_float32_exact(rng.standard_normal(shape) * 0.5) if lstm else None,
        "lengths": lengths,
        "num_layers": 1,
        "bidirectional": plan.bidirectional,
    }
    cotangents = {
        "d_out": rng.standard_normal((T, B, D * H)),
        "d_hn": rng.standard_normal(shape),
        "d_cn": rng.standard_normal(shape) if lstm else None,
    }
    return problem, cotangents, reference_forward(cell, **problem)


@functools.lru_cache(maxsize=2)
def _reference_gradients(cell, plan_name, lengths_kind, clip_hidden):
    problem, cotangents, _ = _problem(cell, plan_name, lengths_kind)
    return reference_backward(cell, **problem, **cotangents, clip_hidden=clip_hidden)


def _layer(cell, plan, dtype, problem):
    input_size, hidden = problem["x"].shape[2], problem["params"]["weight_hh_l0"].shape[1]
    return make_layer(cell, input_size, hidden, 1, plan.bidirectional, dtype=dtype,
                      params=problem["params"])


def _assert_ran(plan, runs, batch, passes):
    expected_threads = min(plan.threads, batch)
    directions = 2 if plan.bidirectional else 1
    for pass_name in passes:
        reports = [run for run in runs if run["pass"] == pass_name]
        assert len(reports) == directions, (pass_name, runs)
        for report in reports:
            assert report["threads"] == expected_threads, report
            assert report["blocked"] == plan.blocked, report
            assert report["blas_threads"] == (plan.blas_threads if expected_threads == 1
                                              else 1), report
            assert report["product"] == getattr(plan, pass_name), report
            if plan.check_report is not None:
                assert plan.check_report(pass_name, report), report


def _tolerances(dtype, n_steps):
    if dtype == np.float64:
        return 1e-10, 1e-9
    # float32 rounding (and its rational tanh) grows with the steps it passes through
    return 2e-5 * math.sqrt(n_steps), 5e-5 * math.sqrt(n_steps)


def _assert_close(actual, expected, rtol, name):
    error = max_rel_error(np.asarray(actual, dtype=np.float64), expected)
    assert error <= rtol, f"{name}: relative error {error:.2e} > {rtol:.1e}"


CASES = [(cell, plan, lengths, clipping, dtype) for cell in CELLS for plan in PLAN_IDS
         for lengths in LENGTHS for clipping in CLIPPING for dtype in DTYPES]


def _case_id(case):
    """The case's name; "ragged" lengths of a one-sequence batch are named "short"."""
    plan = PLANS[PLAN_IDS.index(case[1])]
    one_row = plan.sizes(case[0])[1] == 1
    return "-".join("short" if part == "ragged" and one_row else part for part in case)


@pytest.mark.parametrize("cell, plan_name, lengths_kind, clipping, dtype_name", CASES,
                         ids=[_case_id(case) for case in CASES])
def test_every_plan_matches_the_reference(cell, plan_name, lengths_kind, clipping, dtype_name):
    plan = PLANS[PLAN_IDS.index(plan_name)]
    _needs_threads(plan)
    dtype = DTYPES[dtype_name]
    problem, cotangents, (out, h_n, c_n) = _problem(cell, plan_name, lengths_kind)
    dx, dh0, dc0, grads = _reference_gradients(cell, plan_name, lengths_kind, None)
    options, norm = {}, None
    if clipping == "clip_hidden":
        options["clip_hidden"] = 0.5
        unclipped_dx = dx
        dx, dh0, dc0, grads = _reference_gradients(cell, plan_name, lengths_kind, 0.5)
        assert not np.allclose(dx, unclipped_dx)  # the clip bites
    if clipping == "max_norm":
        grads = {name: grad.copy() for name, grad in grads.items()}
        total = math.sqrt(sum(float(np.sum(g ** 2)) for g in grads.values()))
        options["max_norm"] = 0.5 * total  # bites: every gradient is halved
        norm = reference_clip_grad_norm(grads, options["max_norm"])
    layer = _layer(cell, plan, dtype, problem)

    with _threads.observed_runs() as runs, _threads.forced_plan(
            plan.threads, plan.blocked, plan.blas_threads):
        f_out, f_hn, f_cn = layer_forward(layer, problem["x"].astype(dtype), problem["h0"],
                                          problem["c0"], problem["lengths"])
        f_dx, f_dh0, f_dc0 = layer_backward(layer, cotangents["d_out"], cotangents["d_hn"],
                                            cotangents["d_cn"], **options)
    _assert_ran(plan, runs, problem["x"].shape[1], ("forward", "backward"))

    atol, rtol = _tolerances(dtype, problem["x"].shape[0])
    for name, got, want in (("out", f_out, out), ("h_n", f_hn, h_n), ("c_n", f_cn, c_n)):
        if want is not None:
            np.testing.assert_allclose(got, want, rtol=0, atol=atol, err_msg=name)
    for name, got, want in (("dx", f_dx, dx), ("dh0", f_dh0, dh0), ("dc0", f_dc0, dc0)):
        if want is not None:
            _assert_close(got, want, rtol, name)
    assert set(layer.grads) == set(grads)
    for name, grad in grads.items():
        _assert_close(layer.grads[name], grad, rtol, name)
    if norm is not None:
        assert layer.grad_norm == pytest.approx(norm, rel=rtol)


INFERENCE_CASES = [(cell, plan, lengths, dtype) for cell in CELLS for plan in PLAN_IDS
                   for lengths in LENGTHS for dtype in DTYPES]


@pytest.mark.parametrize("cell, plan_name, lengths_kind, dtype_name", INFERENCE_CASES,
                         ids=[_case_id(case) for case in INFERENCE_CASES])
def test_every_plan_matches_the_reference_under_no_grad(cell, plan_name, lengths_kind,
                                                         dtype_name):
    plan = PLANS[PLAN_IDS.index(plan_name)]
    _needs_threads(plan)
    dtype = DTYPES[dtype_name]
    problem, _, (out, h_n, c_n) = _problem(cell, plan_name, lengths_kind)
    layer = _layer(cell, plan, dtype, problem)
    with _threads.observed_runs() as runs, _threads.forced_plan(
            plan.threads, plan.blocked, plan.blas_threads), fastrnn.no_grad():
        f_out, f_hn, f_cn = layer_forward(layer, problem["x"].astype(dtype), problem["h0"],
                                          problem["c0"], problem["lengths"])
    _assert_ran(plan, runs, problem["x"].shape[1], ("forward",))
    assert not [run for run in runs if run["pass"] == "backward"]
    with pytest.raises(RuntimeError, match="no_grad"):
        layer_backward(layer, np.ones_like(f_out))
    atol, _ = _tolerances(dtype, problem["x"].shape[0])
    for name, got, want in (("out", f_out, out), ("h_n", f_hn, h_n), ("c_n", f_cn, c_n)):
        if want is not None:
            np.testing.assert_allclose(got, want, rtol=0, atol=atol, err_msg=name)


def test_forced_plan_checks_its_arguments_and_does_not_nest():
    limit = numba.config.NUMBA_NUM_THREADS
    for bad, error in ((0, ValueError), (limit + 1, ValueError), (1.5, TypeError),
                       (True, TypeError)):
        with pytest.raises(error, match="threads must be an integer between 1 and"):
            with _threads.forced_plan(threads=bad):
                pass
    with pytest.raises(ValueError, match="blas_threads must be 1"):
        with _threads.forced_plan(threads=2, blas_threads=2):
            pass
    with _threads.forced_plan(threads=1):
        with pytest.raises(RuntimeError, match="already in force"):
            with _threads.forced_plan(threads=1):
                pass
    # released afterwards, also after an error in the body
    with pytest.raises(KeyError):
        with _threads.forced_plan(threads=1):
            raise KeyError("body")
    with _threads.forced_plan(threads=1, blocked=True) as plan:
        assert plan == _threads.Plan(1, True, 1)
