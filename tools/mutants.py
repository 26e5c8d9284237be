"""Mutation testing by hand: every mutant in MUTANTS must be caught by its tests.

Each mutant replaces one snippet of fastrnn's source (which must occur exactly once
in its file, else the mutant is stale and the list must follow the code) in its own
temporary copy of the repository, and runs its tests there with pytest -x: a failure
means caught, a pass means the mutant SURVIVED. The copy is imported through
PYTHONPATH (ahead of any editable install), with a fresh NUMBA_CACHE_DIR per mutant:
numba's on-disk cache does not see a mutated helper that a cached kernel of another
module inlined. At the end the tests that caught mutants run on the unmutated copy,
where they must pass (else they did not catch anything). Exits non-zero unless every
selected mutant was caught.

    python tools/mutants.py                          # all mutants (nox -s mutants)
    python tools/mutants.py lstm-forget-derivative   # some, by id
    python tools/mutants.py --list
    python tools/mutants.py --jobs 2 --timeout 600
"""

from __future__ import annotations

import argparse
import concurrent.futures
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
COPY_EXCLUDES = (".git", ".nox", "__pycache__", ".hypothesis", ".asv", ".pytest_cache",
                 ".ruff_cache")
PYTEST_OPTIONS = ("-q", "-p", "no:cacheprovider", "-rfE")


@dataclass(frozen=True)
class Mutant:
    """One hand-written bug and the tests that must catch it."""

    id: str
    path: str            # relative to the repository root
    original: str        # must occur exactly once in the file
    replacement: str
    description: str
    tests: tuple[str, ...]  # pytest targets (files or node ids), run in this order


# Node ids shared by several mutants.
REFERENCE = "tests/test_layers_reference.py::test_matches_reference"
PADDED = "tests/test_layers_reference.py::test_padded_steps_give_zero_output_and_zero_dx"
CLIP_KEYWORDS = "tests/test_layers_reference.py::test_clipping_keywords_match_reference_clip"
PLANS = "tests/test_plans.py::test_every_plan_matches_the_reference"
PARALLEL = "tests/test_parallel_path.py::test_parallel_kernels_match_serial_kernels"
OPTIM = "tests/test_optim.py::test_matches_numpy_reference"
PROPERTIES = "tests/test_layers_properties.py"
DROPOUT = "tests/test_dropout.py"

MUTANTS = (
    # ---------------------------------------------------------------- Elman cell
    Mutant("elman-tanh-forward-recurrent", "fastrnn/cells/elman.py",
           "h_new = tanh(gates[t, b, j] + recurrent[row, j] + bias[j])",
           "h_new = tanh(gates[t, b, j] + bias[j])",
           "tanh cell forward drops the recurrent term W_hh h_{t-1}",
           (f"{REFERENCE}[rnn_tanh-L1-uni-full-clipNone]",)),
    Mutant("elman-relu-forward-leaky", "fastrnn/cells/elman.py",
           "h_new = pre if (pre > 0.0 or pre != pre) else 0.0",
           "h_new = pre if (pre > 0.0 or pre != pre) else 0.01 * pre",
           "relu cell forward leaks negative pre-activations (leaky relu)",
           (f"{REFERENCE}[rnn_relu-L1-uni-full-clipNone]",)),
    Mutant("elman-tanh-derivative", "fastrnn/cells/elman.py",
           "d_total[row, j] * (one - h_new * h_new)", "d_total[row, j] * (one - h_new)",
           "tanh cell backward: derivative 1 - h instead of 1 - h^2",
           (f"{REFERENCE}[rnn_tanh-L1-uni-full-clipNone]",)),
    Mutant("elman-relu-derivative", "fastrnn/cells/elman.py",
           "d_total[row, j] if gates[t, b, j] > 0.0 else 0.0",
           "d_total[row, j] if gates[t, b, j] >= 0.0 else 0.0",
           "relu cell backward: gradient passes where the unit is off (>= 0)",
           (f"{REFERENCE}[rnn_relu-L1-uni-full-clipNone]",)),
    # ---------------------------------------------------------------- LSTM cell
    Mutant("lstm-forward-forget-gate-index", "fastrnn/cells/lstm.py",
           "c_new = gates[t, b, hidden + j] * c_old", "c_new = gates[t, b, 3 * hidden + j] * c_old",
           "LSTM forward: the output gate, not the forget gate, scales c_{t-1}",
           (f"{REFERENCE}[lstm-L1-uni-full-clipNone]",)),
    Mutant("lstm-forget-derivative", "fastrnn/cells/lstm.py",
           "extra[t, b, j] * f_gate * (one - f_gate)", "extra[t, b, j] * f_gate * (f_gate - one)",
           "LSTM backward: forget-gate derivative f(f-1) instead of f(1-f)",
           (f"{REFERENCE}[lstm-L1-uni-full-clipNone]",)),
    Mutant("lstm-cell-carry", "fastrnn/cells/lstm.py",
           "dc[row, j] = d_total[row, j] * f_gate", "dc[row, j] = d_total[row, j]",
           "LSTM backward: dc_{t-1} not scaled by the forget gate",
           (f"{REFERENCE}[lstm-L1-uni-full-clipNone]",)),
    # ---------------------------------------------------------------- GRU cell
    Mutant("gru-forward-reset", "fastrnn/cells/gru.py",
           "+ b_ih[2 * hidden + j] + gates[t, b, j] * hn)", "+ b_ih[2 * hidden + j] + hn)",
           "GRU forward: the reset gate does not scale W_hn h + b_hn",
           (f"{REFERENCE}[gru-L1-uni-full-clipNone]",)),
    # The forward step's length check (the backward step's reads dh.shape[1] above it).
    Mutant("gru-lengths-off-by-one", "fastrnn/cells/gru.py",
           "hidden = h.shape[1]\n    for row in range(stop - start):\n        b = start + row\n"
           "        if t >= lengths[b]:",
           "hidden = h.shape[1]\n    for row in range(stop - start):\n        b = start + row\n"
           "        if t > lengths[b]:",
           "GRU forward steps one past each sequence's length (h_n one step late)",
           (f"{REFERENCE}[gru-L1-uni-len-clipNone]", f"{PADDED}[gru]")),
    # (The snippet runs on to the line that only the reset-after variant has.)
    Mutant("gru-update-gate-sign", "fastrnn/cells/gru.py",
           "(h_prev[t, b, j] - n_gate) * z_gate * (one - z_gate)\n"
           "            d_gates[t, b, hidden + j] = d_pre_z\n"
           "            d_hidden[row, hidden + j] = d_pre_z\n"
           "            d_gates[t, b, 2 * hidden + j]",
           "(n_gate - h_prev[t, b, j]) * z_gate * (one - z_gate)\n"
           "            d_gates[t, b, hidden + j] = d_pre_z\n"
           "            d_hidden[row, hidden + j] = d_pre_z\n"
           "            d_gates[t, b, 2 * hidden + j]",
           "GRU backward: update-gate gradient with the wrong sign",
           (f"{REFERENCE}[gru-L1-uni-full-clipNone]",)),
    Mutant("gru-hidden-n-gradient", "fastrnn/cells/gru.py",
           "d_gates[t, b, 2 * hidden + j] *= gates[t, b, j]",
           "d_gates[t, b, 2 * hidden + j] *= 1.0",
           "GRU backward: dW_hn, db_hn not scaled by the reset gate",
           (f"{REFERENCE}[gru-L1-uni-full-clipNone]",)),
    Mutant("gru-reset-before-gated-state", "fastrnn/cells/gru.py",
           "gated[row, j] = gates[t, b, j] * h[row, j]", "gated[row, j] = h[row, j]",
           "classic GRU forward: W_hn multiplies h_{t-1}, not r * h_{t-1}",
           ("tests/test_onnx_reference.py::test_gru_layer_matches_onnx_reference"
            "[reset_before-forward]", f"{REFERENCE}[gru_reset_before-L1-uni-full-clipNone]")),
    Mutant("gru-reset-before-direct-path", "fastrnn/cells/gru.py",
           "dh[row, j] += d_gated[row, j] * r_gate", "dh[row, j] += 0.0 * r_gate",
           "classic GRU backward: drops h_{t-1}'s path through r * h_{t-1}",
           (f"{REFERENCE}[gru_reset_before-L1-uni-full-clipNone]",
            "tests/test_single_step.py::test_gradients_match_finite_differences"
            "[gru_reset_before]")),
    # ---------------------------------------------------------------- scale-out
    Mutant("mpi-no-allreduce", "fastrnn/distributed.py",
           'self._allreduce_buffer("the Allreduce of a training step\'s gradients")', "pass",
           "data-parallel step without the Allreduce: each rank trains on its shard alone",
           ("tests/test_distributed.py::test_ranks_stay_identical_and_match_one_process",)),
    Mutant("mpi-equal-weights", "fastrnn/distributed.py",
           "np.multiply(model.flat_grads, count, out=buffer[:n])",
           "np.multiply(model.flat_grads, 1, out=buffer[:n])",
           "every rank's gradient weighted alike, whatever its share of the loss terms",
           ("tests/test_distributed.py::test_ranks_stay_identical_and_match_one_process",)),
    Mutant("mpi-every-rank-writes", "fastrnn/distributed.py",
           "if self.rank == 0:", "if True:",
           "every rank writes the checkpoint, not rank 0 alone",
           ("tests/test_distributed.py::"
            "test_rank_0_alone_writes_the_checkpoint_and_one_rank_resumes_it",)),
    Mutant("dask-model-per-chunk", "fastrnn/dask.py",
           "entry = _cache.get(model_id)", "entry = None",
           "each chunk builds the model again instead of the worker's cached one",
           ("tests/test_dask.py::"
            "test_predictions_equal_local_ones_and_each_worker_builds_the_model_once",)),
    # ---------------------------------------------------------------- the engine
    Mutant("clip-hidden-dropped", "fastrnn/_kernels/engine.py",
           "d_total[row, j] = clamp(dh[row, j] + d_out[t, b, j], bound)",
           "d_total[row, j] = dh[row, j] + d_out[t, b, j]",
           "BPTT ignores clip_hidden (every cell: the clamp is the engine's)",
           (f"{REFERENCE}[gru-L1-uni-full-clip0.05]", f"{REFERENCE}[lstm-L1-uni-full-clip0.05]",
            f"{PROPERTIES}::test_clip_hidden_matches_reference")),
    Mutant("direct-state-path", "fastrnn/_kernels/engine.py",
           "dh[row, j] += recurrent[row, j]", "dh[row, j] = recurrent[row, j]",
           "BPTT drops the GRU's direct path h_{t-1} -> h_t (through z)",
           (f"{REFERENCE}[gru-L1-uni-full-clipNone]",)),
    Mutant("gated-state-weight-gradient", "fastrnn/_kernels/engine.py",
           "extra.reshape(n_steps * batch, hidden), dw_hh[first:]",
           "h_prev_2d, dw_hh[first:]",
           "BPTT takes the classic GRU's dW_hn against h_{t-1}, not r * h_{t-1}",
           (f"{REFERENCE}[gru_reset_before-L1-uni-full-clipNone]",)),
    Mutant("step-gated-state-weight-gradient", "fastrnn/_kernels/engine.py",
           "matmul(d_gates[0][:, first:], extra[0], dw_hh[first:]",
           "matmul(d_gates[0][:, first:], h_kept, dw_hh[first:]",
           "the single-step classic GRU's dW_hn against h, not r * h",
           ("tests/test_single_step.py::test_gradients_match_finite_differences"
            "[gru_reset_before]",)),
    Mutant("padded-steps-drop-d-hn", "fastrnn/_kernels/engine.py",
           "if t < lengths[start + row]:", "if True:",
           "BPTT overwrites dh at padded steps: a shorter sequence loses its d_hn",
           (f"{REFERENCE}[lstm-L1-uni-len-clipNone]",)),
    # ---------------------------------------------------------------- layers, dropout
    Mutant("dropout-backward-mask", "fastrnn/layers.py",
           'd_input *= cache["masks"][layer - 1]', "pass",
           "dropout mask not applied to the gradient in backward",
           (f"{DROPOUT}::test_forward_and_backward_match_the_reference_with_the_same_masks",
            f"{DROPOUT}::test_gradients_match_finite_differences_with_fixed_masks")),
    Mutant("dropout-scaling", "fastrnn/layers.py",
           "keep / (1.0 - self.dropout)", "keep",
           "dropout keeps units unscaled (no 1/(1-p))",
           (f"{DROPOUT}::test_mask_statistics",
            f"{DROPOUT}::test_forward_and_backward_match_the_reference_with_the_same_masks")),
    Mutant("recurrent-weight-transpose", "fastrnn/_cells.py",
           "return np.ascontiguousarray(w_hh.T)", "return np.ascontiguousarray(w_hh)",
           "per-step weight copy (T >= 16, unblocked) is W_hh, not W_hh^T",
           (f"{PLANS}[rnn_tanh-serial-weight-copy-full-noclip-float64]",)),
    # ---------------------------------------------------------------- clipping
    Mutant("clip-value-negative-side", "fastrnn/_kernels/clipping.py",
           "grads[k] = -clip_value", "grads[k] = clip_value",
           "clip_value clips negative gradients to +clip_value",
           (f"{CLIP_KEYWORDS}[rnn_tanh]",
            f"{PROPERTIES}::test_clip_value_only_touches_elements_above_it")),
    Mutant("clip-norm-epsilon", "fastrnn/_kernels/clipping.py",
           "coefficient = max_norm / (norm + 1e-6)", "coefficient = max_norm / norm",
           "max_norm coefficient without torch's 1e-6",
           (f"{CLIP_KEYWORDS}[rnn_tanh]",)),
    Mutant("clip-norm-condition", "fastrnn/_kernels/clipping.py",
           "if coefficient < 1.0:", "if coefficient > 0.0:",
           "max_norm also scales gradients up when their norm is below it",
           ("tests/test_layers_torch_parity.py::test_max_norm_matches_clip_grad_norm[no-clip-rnn_tanh]",
            f"{PROPERTIES}::test_max_norm_above_the_norm_changes_nothing")),
    Mutant("clip-norm-returned", "fastrnn/_kernels/clipping.py",
           "    return norm", "    return min(norm, max_norm)",
           "max_norm clipping returns the post-clip norm",
           (f"{CLIP_KEYWORDS}[rnn_tanh]",)),
    # ---------------------------------------------------------------- optimizers
    Mutant("sgd-weight-decay-sign", "fastrnn/_kernels/optim.py",
           "grad = grad + decay * params[i]\n        if use_momentum:",
           "grad = grad - decay * params[i]\n        if use_momentum:",
           "SGD adds weight decay with the wrong sign",
           (OPTIM,)),
    Mutant("sgd-momentum", "fastrnn/_kernels/optim.py",
           "buf = momentum_buffer[i] * beta + keep * grad",
           "buf = momentum_buffer[i] + keep * grad",
           "SGD momentum buffer not decayed by the momentum",
           (OPTIM,)),
    Mutant("sgd-nesterov", "fastrnn/_kernels/optim.py",
           "grad = grad + beta * buf", "grad = grad + buf",
           "Nesterov step without the momentum factor",
           (OPTIM,)),
    Mutant("adam-bias-correction", "fastrnn/_kernels/optim.py",
           "neg_step_size = cast(-(lr / bias_correction1))", "neg_step_size = cast(-lr)",
           "Adam without the first-moment bias correction",
           (OPTIM,)),
    Mutant("adam-eps-placement", "fastrnn/_kernels/optim.py",
           "denom = np.divide(np.sqrt(v), bias_correction2_sqrt) + eps_",
           "denom = np.divide(np.sqrt(v) + eps_, bias_correction2_sqrt)",
           "Adam adds eps before the second-moment bias correction",
           (OPTIM,)),
    Mutant("adam-amsgrad", "fastrnn/_kernels/optim.py",
           "v = max(max_exp_avg_sq[i], v)", "v = max(exp_avg_sq[i], v)",
           "AMSGrad ignores the running maximum of the second moment",
           (OPTIM,)),
    Mutant("adamw-decay-without-lr", "fastrnn/_kernels/optim.py",
           "shrink = cast(1.0 - lr * weight_decay)", "shrink = cast(1.0 - weight_decay)",
           "AdamW shrinks by 1 - weight_decay, not 1 - lr * weight_decay",
           (OPTIM,)),
    Mutant("adamw-not-decoupled", "fastrnn/optim.py",
           "    _decoupled = True", "    _decoupled = False",
           "AdamW's weight decay is an L2 term (Adam's), not decoupled",
           (OPTIM,)),
    Mutant("optimizer-step-count", "fastrnn/optim.py",
           "self._update(params, grads, self._step + 1)",
           "self._update(params, grads, self._step)",
           "optimizers count steps from 0 (torch's first step is 1)",
           (OPTIM,)),
    Mutant("adagrad-lr-decay", "fastrnn/_kernels/optim.py",
           "(float(step) - 1.0) * lr_decay", "float(step) * lr_decay",
           "Adagrad decays the learning rate one step early",
           (OPTIM,)),
    Mutant("rmsprop-alpha-swapped", "fastrnn/_kernels/optim.py",
           "sq = square_avg[i] * alpha_ + weight * grad * grad",
           "sq = square_avg[i] * weight + alpha_ * grad * grad",
           "RMSprop square average with alpha and 1 - alpha swapped",
           (OPTIM,)),
    Mutant("rmsprop-centered", "fastrnn/_kernels/optim.py",
           "avg = np.sqrt(sq - mean * mean) + eps_", "avg = np.sqrt(sq) + eps_",
           "centered RMSprop does not subtract the squared mean gradient",
           (OPTIM,)),
    # ---------------------------------------------------------------- shared kernels
    Mutant("blocked-product-accumulate", "fastrnn/_kernels/gemm.py",
           "_address(out, n_block * width), ldc, k_block > 0)",
           "_address(out, n_block * width), ldc, False)",
           "blocked product: each K chunk overwrites instead of accumulating",
           ("tests/test_blocked_products.py::test_blocked_layers_match_reference[rnn_tanh-1-2]",
            f"{PLANS}[rnn_tanh-serial-blocked-row-chunks-full-noclip-float64]")),
    Mutant("chunk-bounds", "fastrnn/_kernels/sequence.py",
           "return chunk * rows // n_chunks, (chunk + 1) * rows // n_chunks",
           "return chunk * (rows // n_chunks), (chunk + 1) * (rows // n_chunks)",
           "thread slices floor rows / n first: the last rows of a ragged split are lost",
           (PARALLEL, f"{PLANS}[rnn_tanh-batch3-blocked-uneven-full-noclip-float64]")),
    Mutant("fill-weight-blocks-tile", "fastrnn/_kernels/sequence.py",
           "tile[i, r] = w[row0 + r, col0 + i]", "tile[r, i] = w[row0 + r, col0 + i]",
           "transposed weight-block fill: whole 16 x 16 tiles not transposed",
           ("tests/test_blocked_products.py::test_fill_weight_blocks_matches_numpy",
            f"{PLANS}[rnn_tanh-serial-compiled-weight-fill-full-noclip-float64]")),
    Mutant("weight-major-product", "fastrnn/_kernels/sequence.py",
           "matmul(w_hh, h_t, out_t, False, False, False)",
           "matmul(w_hh, h_t, out_t, True, False, False)",
           "weight-major per-step product computes W_hh^T h^T instead of W_hh h^T",
           ("tests/test_layers_reference.py::"
            "test_small_batch_large_hidden_matches_reference[rnn_tanh]",
            f"{PLANS}[rnn_tanh-serial-weight-major-full-noclip-float64]")),
    Mutant("param-grads-column-split", "fastrnn/_kernels/engine.py",
           "units = (n_gates + 15) // 16", "units = n_gates // 16",
           "weight gradients split by gate columns drop the last partial 16 columns",
           ("tests/test_gemm.py::test_parameter_gradients_accumulate_like_numpy",
            f"{PLANS}[gru-batch2-grads-by-gate-columns-full-noclip-float64]")),
    Mutant("narrow-rows-dot-first-input", "fastrnn/_kernels/sequence.py",
           "            for i in range(1, inputs):", "            for i in range(0, inputs):",
           "the narrow input projection adds the first input's product twice",
           ("tests/test_layers_torch_parity.py::test_matches_torch",)),
    Mutant("narrow-weight-gradient-accumulate", "fastrnn/_kernels/sequence.py",
           "target[g, i] = target[g, i] + sums[i, g] if accumulate else sums[i, g]",
           "target[g, i] = sums[i, g]",
           "the narrow inputs' weight gradient overwrites where it should accumulate",
           ("tests/test_gemm.py::test_parameter_gradients_accumulate_like_numpy",)),
    Mutant("matmul-row-stride", "fastrnn/_kernels/gemm.py",
           "return matrix.strides[0] // matrix.itemsize", "return matrix.shape[1]",
           "matmul takes a column slice's row length for its row stride",
           ("tests/test_gemm.py::test_matmul_matches_numpy",
            "tests/test_blocked_products.py::test_blocked_layers_match_reference[rnn_tanh-1-2]")),
    Mutant("matmul-gemv-transpose", "fastrnn/_kernels/gemm.py",
           "status = _xxgemv(kind, trans_b,", "status = _xxgemv(kind, _NO_TRANSPOSE,",
           "matmul's one-row product ignores a transposed right operand",
           ("tests/test_gemm.py::test_matmul_gemv_paths_match_numpy",)),
    Mutant("matmul-accumulate", "fastrnn/_kernels/gemm.py",
           "beta = _scalar_slot(like, 1.0 if accumulate else 0.0)",
           "beta = _scalar_slot(like, 0.0)",
           "matmul overwrites where it should accumulate",
           ("tests/test_gemm.py::test_matmul_matches_numpy",
            "tests/test_gemm.py::test_parameter_gradients_accumulate_like_numpy")),
)


@dataclass
class Result:
    """What became of one mutant."""

    mutant: Mutant
    status: str                  # caught, SURVIVED, stale, error
    detail: str = ""             # what went wrong
    caught_by: tuple[str, ...] = ()  # node ids of the failing tests
    seconds: float = 0.0
    output: str = ""


def copy_tree(source, destination):
    """Copy a working tree without version control, virtualenvs and caches."""
    shutil.copytree(source, destination, symlinks=True,
                    ignore=shutil.ignore_patterns(*COPY_EXCLUDES))


def environment(repository, numba_cache):
    """os.environ with `repository` first on PYTHONPATH and its own numba cache."""
    env = dict(os.environ, NUMBA_CACHE_DIR=str(numba_cache))
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(repository),
                                                      os.environ.get("PYTHONPATH")]))
    return env


def run_pytest(repository, targets, timeout, stop_first=True):
    """(exit code, or None after a timeout, and output) of pytest on `targets`, run in
    `repository` with a fresh numba cache. The output goes to a file, so that a test's
    lingering child process cannot hold a pipe open after pytest is killed."""
    command = [sys.executable, "-m", "pytest", *(["-x"] if stop_first else []),
               *PYTEST_OPTIONS, *targets]
    with tempfile.TemporaryDirectory(prefix="numba-cache-") as numba_cache:
        log_path = Path(numba_cache) / "pytest.log"
        with open(log_path, "w") as log, subprocess.Popen(
                command, cwd=repository, env=environment(repository, numba_cache),
                stdout=log, stderr=subprocess.STDOUT) as process:
            try:
                code = process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                code = None
        return code, log_path.read_text()


def failed_node_ids(output):
    """Node ids of the FAILED / ERROR lines of pytest's short summary."""
    ids = []
    for line in output.splitlines():
        for prefix in ("FAILED ", "ERROR "):
            if line.startswith(prefix):
                ids.append(line[len(prefix):].split(" - ", 1)[0].strip())
    return tuple(ids)


def problem(mutant, snapshot):
    """A stale or error Result if `mutant` cannot run on the snapshot, else None."""
    path = snapshot / mutant.path
    if not path.is_file():
        return Result(mutant, "stale", f"{mutant.path} does not exist")
    count = path.read_text().count(mutant.original)
    if count != 1:
        return Result(mutant, "stale", f"the original snippet occurs {count} times, not once")
    missing = sorted({target.split("::")[0] for target in mutant.tests
                      if not (snapshot / target.split("::")[0]).exists()})
    if missing:
        return Result(mutant, "error", "missing test file " + ", ".join(missing))
    return None


def run_mutant(mutant, snapshot, timeout):
    """Apply `mutant` in a fresh copy of the snapshot and run its tests there."""
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix=f"mutant-{mutant.id}-") as work:
        repository = Path(work) / "repo"
        copy_tree(snapshot, repository)
        path = repository / mutant.path
        path.write_text(path.read_text().replace(mutant.original, mutant.replacement))
        code, output = run_pytest(repository, mutant.tests, timeout)
    seconds = time.monotonic() - started
    if code == 1:
        return Result(mutant, "caught", caught_by=failed_node_ids(output), seconds=seconds,
                      output=output)
    if code == 0:
        return Result(mutant, "SURVIVED", seconds=seconds, output=output)
    detail = f"timed out after {timeout:g} s" if code is None else f"pytest exit code {code}"
    return Result(mutant, "error", detail, seconds=seconds, output=output)


def run_all(mutants, snapshot, jobs, timeout):
    """Results of `mutants`, `jobs` at a time, each printed as it comes."""
    results = []
    with concurrent.futures.ThreadPoolExecutor(max(1, jobs)) as pool:
        futures = [pool.submit(run_mutant, m, snapshot, timeout) for m in mutants]
        try:
            for done, future in enumerate(concurrent.futures.as_completed(futures), 1):
                result = future.result()
                results.append(result)
                print(f"[{done}/{len(mutants)}] {result.mutant.id}: {result.status} "
                      f"({result.seconds:.0f} s) {result.detail or ' '.join(result.caught_by)}",
                      flush=True)
        except KeyboardInterrupt:  # pytest got the SIGINT too; start no other mutant
            pool.shutdown(cancel_futures=True)
            raise
    return results


def check_import(snapshot):
    """Fail unless the snapshot's fastrnn, not an installed one, is what tests import."""
    with tempfile.TemporaryDirectory(prefix="numba-cache-") as numba_cache:
        found = subprocess.run(
            [sys.executable, "-c", "import fastrnn; print(fastrnn.__file__)"], cwd=snapshot,
            env=environment(snapshot, numba_cache), capture_output=True, text=True, check=True,
        ).stdout.strip()
    if not Path(found).resolve().is_relative_to(snapshot.resolve()):
        sys.exit(f"mutants: the copy imports fastrnn from {found}, not from {snapshot}")


def confirm(results, snapshot, timeout):
    """Rerun the catching tests on the unmutated snapshot: a test that fails there too
    caught nothing, and its mutants become errors."""
    catching = sorted({node for r in results if r.status == "caught" for node in r.caught_by})
    if not catching:
        return
    print(f"confirming that the {len(catching)} catching tests pass without mutations ...",
          flush=True)
    code, output = run_pytest(snapshot, catching, timeout, stop_first=False)
    broken = set(failed_node_ids(output)) if code in (0, 1) else set(catching)
    for result in results:
        if result.status == "caught" and broken.intersection(result.caught_by):
            result.status = "error"
            result.detail = "fails without the mutation too: " + " ".join(result.caught_by)
            result.output = output


def print_table(results):
    """One row per mutant: id, file, description, result, catching tests or detail, time."""
    rows = [("id", "file", "description", "result", "caught by / detail", "time")]
    rows += [(r.mutant.id, r.mutant.path.removeprefix("fastrnn/"), r.mutant.description,
              r.status, r.detail or " ".join(r.caught_by), f"{r.seconds:.0f} s")
             for r in results]
    widths = [max(len(row[k]) for row in rows) for k in range(5)]
    for number, row in enumerate(rows):
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)) + "  " + row[5])
        if number == 0:
            print("  ".join("-" * width for width in widths) + "  ----")


def select(ids):
    """The mutants named by `ids`, in that order; all of them for none."""
    known = {mutant.id: mutant for mutant in MUTANTS}
    unknown = [i for i in ids if i not in known]
    if unknown:
        sys.exit(f"mutants: unknown mutant id(s) {', '.join(unknown)}; see --list")
    return [known[i] for i in ids] if ids else list(MUTANTS)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("ids", nargs="*", help="mutant ids to run (default: all)")
    parser.add_argument("--list", action="store_true", help="list the mutants and exit")
    parser.add_argument("--jobs", type=int, default=1, help="mutants run at once (default 1)")
    parser.add_argument("--timeout", type=float, default=900.0,
                        help="seconds per mutant's tests before it counts as an error")
    args = parser.parse_args(argv)
    mutants = select(args.ids)
    if args.list:
        for m in mutants:
            print(f"{m.id}  ({m.path}): {m.description}\n    tests: {' '.join(m.tests)}")
        return 0
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="mutants-snapshot-") as work:
        # One snapshot of the working tree: every mutant starts from the same code,
        # however the tree changes while they run.
        snapshot = Path(work) / "repo"
        copy_tree(ROOT, snapshot)
        check_import(snapshot)
        results = [r for r in (problem(m, snapshot) for m in mutants) if r is not None]
        runnable = [m for m in mutants if m not in {r.mutant for r in results}]
        results += run_all(runnable, snapshot, args.jobs, args.timeout)
        confirm(results, snapshot, args.timeout)
    results.sort(key=lambda r: mutants.index(r.mutant))
    print()
    print_table(results)
    for result in results:
        if result.status in ("SURVIVED", "error") and result.output:
            tail = "\n    ".join(result.output.strip().splitlines()[-15:])
            print(f"\n{result.mutant.id} ({result.status}), end of pytest's output:\n    {tail}")
    failures = [r for r in results if r.status != "caught"]
    print(f"\n{len(results) - len(failures)} of {len(results)} mutants caught "
          f"in {time.monotonic() - started:.0f} s")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
