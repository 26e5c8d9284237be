"""The multi-threaded kernels (batch slices per thread, row-split GEMMs; the "batch"
strategy) agree with the single-threaded ones, and the strategy is chosen as
documented. Small shapes and the "blas" strategy take the single-threaded
kernels, so these tests force each path."""

import contextlib

import numpy as np
import pytest
from helpers import layer_backward, layer_forward, make_layer, max_rel_error
from reference import CELLS

import fastrnn
from fastrnn import _threads


def _run(cell, force_parallel, monkeypatch, threads):
    """Forward + backward with the strategy forced; returns the results and the
    thread counts the calls' plans ran."""
    monkeypatch.setattr(_threads, "SERIAL_WORK", 0 if force_parallel else 1 << 60)
    monkeypatch.setattr(_threads, "SINGLE_THREAD_WORK", 0)
    monkeypatch.setattr(_threads, "STEP_SPLIT_WORK", 0)
    monkeypatch.setattr(_threads, "STRATEGY", "batch" if force_parallel else "blas")
    fastrnn.set_num_threads(threads)
    layer = make_layer(cell, 3, 5, num_layers=2, bidirectional=True, seed=4)
    rng = np.random.default_rng(7)
    x = rng.standard_normal((9, 5, 3))
    h0 = rng.standard_normal((4, 5, 5))
    c0 = h0 * 0.5 if cell == "lstm" else None
    lengths = np.array([9, 4, 1, 9, 6])
    with _threads.observed_runs() as runs:
        out, h_n, c_n = layer_forward(layer, x, h0, c0, lengths)
        d_out = rng.standard_normal(out.shape)
        dx, dh0, _ = layer_backward(layer, d_out, rng.standard_normal(h_n.shape),
                                    None if c_n is None else np.ones_like(c_n), max_norm=2.0,
                                    clip_hidden=1.5)
    results = [out, h_n, dx, dh0, np.concatenate([g.ravel() for g in layer.grads.values()]),
               np.array(layer.grad_norm)]
    return results, {run["threads"] for run in runs}


@pytest.mark.parametrize("threads", [2, 3])
@pytest.mark.parametrize("cell", CELLS)
def test_parallel_kernels_match_serial_kernels(cell, threads, monkeypatch):
    if threads > _threads.max_threads():
        # tests/conftest.py raises NUMBA_NUM_THREADS to 3 unless the user set it lower
        pytest.skip(f"NUMBA_NUM_THREADS is below {threads}")
    threads_before = fastrnn.get_num_threads()
    try:
        serial, serial_threads = _run(cell, False, monkeypatch, threads)
        parallel, parallel_threads = _run(cell, True, monkeypatch, threads)
    finally:
        fastrnn.set_num_threads(threads_before)
    assert serial_threads == {1} and parallel_threads == {threads}
    for got, want in zip(parallel, serial):
        assert max_rel_error(got, want) <= 1e-13


@pytest.mark.parametrize("work, step_work, blas_threads", [
    (_threads.SINGLE_THREAD_WORK - 1, _threads.STEP_SPLIT_WORK, 1),
    (_threads.SINGLE_THREAD_WORK, _threads.STEP_SPLIT_WORK - 1, 1),
    (_threads.SINGLE_THREAD_WORK, _threads.STEP_SPLIT_WORK, 2),
])
def test_blas_threads_follow_problem_size(work, step_work, blas_threads, monkeypatch):
    from fastrnn import _blas

    if not _blas.controllable or _threads.max_threads() < 2:
        pytest.skip("needs a controllable BLAS and two cores")
    monkeypatch.setattr(_threads, "STRATEGY", "blas")
    threads_before = fastrnn.get_num_threads()
    blas_before = _blas._get_threads()
    fastrnn.set_num_threads(2)
    try:
        with _threads.kernel_threads(work, step_work) as kernel_threads:
            assert kernel_threads.threads == 1
            assert _blas._get_threads() == blas_threads
    finally:
        fastrnn.set_num_threads(threads_before)
    assert _blas._get_threads() == blas_before


@pytest.mark.parametrize("value, ok", [("auto", True), ("batch", True), ("blas", True),
                                       ("threads", False)])
def test_strategy_environment_variable(value, ok):
    import os
    import subprocess
    import sys

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, FASTRNN_STRATEGY=value,
               PYTHONPATH=root + os.pathsep + os.environ.get("PYTHONPATH", ""))
    code = "import fastrnn._threads as t; print(t.STRATEGY)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            env=env, timeout=120)
    assert (result.returncode == 0) == ok
    if ok:
        assert result.stdout.strip() == value
    else:
        assert "FASTRNN_STRATEGY must be 'auto', 'blas' or 'batch'" in result.stderr


@pytest.mark.parametrize("small_kernels, layer, batch, split", [
    (True, "omp", 64, 2), (True, "tbb", 64, 2), (True, "omp", 1, 1),
    (True, "workqueue", 64, 1), (False, "omp", 64, 1),
])
def test_auto_strategy_splits_the_batch_where_products_run_blocked(
        small_kernels, layer, batch, split, monkeypatch):
    """"auto" splits the batch (BLAS on one thread, blocked products) only with
    small-matrix BLAS kernels and a threading layer that starts regions cheaply."""
    from fastrnn import _blas

    if not _blas.controllable or _threads.max_threads() < 2:
        pytest.skip("needs a controllable BLAS and two cores")
    monkeypatch.setattr(_threads, "STRATEGY", "auto")
    monkeypatch.setattr(_blas, "small_matrix_kernels", small_kernels)
    monkeypatch.setattr(_threads, "_layer", lambda: layer)
    monkeypatch.setattr(_threads, "_serialised", contextlib.nullcontext)
    threads_before = fastrnn.get_num_threads()
    fastrnn.set_num_threads(2)
    try:
        big = _threads.SINGLE_THREAD_WORK
        with _threads.kernel_threads(big, _threads.STEP_SPLIT_WORK, batch) as plan:
            assert plan.threads == split
            assert plan.blocked == (split == 2)
            assert _blas._get_threads() == (1 if split == 2 else 2)
    finally:
        fastrnn.set_num_threads(threads_before)


def test_forked_child_of_an_openmp_parent_runs_single_threaded(monkeypatch):
    """GNU OpenMP aborts a forked child that starts a parallel region: such a child
    gets the single-threaded kernels, whatever the strategy."""
    monkeypatch.setattr(_threads, "_forked_after_openmp", True)
    for strategy in ("auto", "batch"):
        monkeypatch.setattr(_threads, "STRATEGY", strategy)
        assert _threads._batch_split(64) == 1
    monkeypatch.setattr(_threads, "_layer_name", "omp")
    monkeypatch.setattr(_threads, "_forked_after_openmp", False)
    _threads._after_fork_in_child()
    assert _threads._forked_after_openmp
