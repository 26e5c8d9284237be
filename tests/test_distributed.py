"""fastrnn.distributed: data-parallel training on MPI, run for real with `mpiexec -n 2`
on this machine (loopback, shared memory).

Each test launches this file under mpiexec (`python tests/test_distributed.py
SCENARIO ...`: the scenarios at the bottom run on every rank) and checks what the
ranks wrote against one process training on the whole global batch in pytest's own
process, which never imports mpi4py. A missing mpi4py/mpiexec skips locally and
fails in CI (CI=true), which installs them.
"""

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import time

import numba
import numpy as np
import pytest

import fastrnn

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
T, FEATURES, HIDDEN = 6, 3, 5
STEPS, MORE_STEPS = 4, 3


def _mpiexec():
    """The mpiexec of the MPI that mpi4py loads: the `mpich` wheel puts it beside
    the interpreter; otherwise the one on PATH."""
    beside = os.path.join(os.path.dirname(sys.executable), "mpiexec")
    return beside if os.path.exists(beside) else shutil.which("mpiexec")


if __name__ != "__main__" and (importlib.util.find_spec("mpi4py") is None or _mpiexec() is None):
    if os.environ.get("CI"):  # CI installs the mpi extra: its absence is a failure there
        raise RuntimeError("tests/test_distributed.py needs mpi4py and mpiexec "
                           "(pip install mpich mpi4py)")
    pytest.skip("needs mpi4py and mpiexec (pip install mpich mpi4py)", allow_module_level=True)


def run_mpi(ranks, *args, timeout=300, module=False, threads="1"):
    """`mpiexec -n RANKS python (this file | -m fastrnn) ARGS`, every rank on one
    kernel thread (two ranks fill this 2-core machine), or with threads=None on
    DataParallel's share of the cores. MPICH's launcher needs no flags as root or
    without a network: it starts local ranks with fork and they talk over shared
    memory."""
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.pop("FASTRNN_NUM_THREADS", None)
    if threads is not None:
        env["FASTRNN_NUM_THREADS"] = threads
    target = ["-m", "fastrnn"] if module else [os.path.abspath(__file__)]
    return subprocess.run([_mpiexec(), "-n", str(ranks), sys.executable, *target, *args],
                          capture_output=True, text=True, timeout=timeout, cwd=ROOT, env=env)


# ------------------------------------------------------------ shared by both sides
def make_model(output, seed=0):
    loss = "cross_entropy" if output == "sequence" else "mse"
    return fastrnn.SequenceModel(cell="lstm", input_size=FEATURES, hidden_size=HIDDEN,
                                 output_size=4, output=output, loss=loss, max_norm=0.5,
                                 optimizer=fastrnn.optim.Adam(lr=0.01), dtype=np.float64,
                                 seed=seed)


def global_batches(output, batch, count, seed=1):
    """Ragged batches (random lengths), the same on every rank and in the test."""
    rng = np.random.default_rng(seed)
    batches = []
    for _ in range(count):
        x = rng.standard_normal((T, batch, FEATURES))
        y = rng.integers(0, 4, (T, batch)) if output == "sequence" else \
            rng.standard_normal((batch, 4))
        batches.append((x, y, rng.integers(1, T + 1, batch)))
    return batches


def one_process(output, batch, steps):
    """What one process training on each whole global batch gives."""
    model = make_model(output)
    losses = [model.train_step(x, y, lengths=n) for x, y, n in
              global_batches(output, batch, steps)]
    return model, losses


# ----------------------------------------------------------------------- tests
@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Two ranks trained STEPS steps at an even (6) and an uneven (5) batch."""
    results = {}
    for output, batch in (("sequence", 6), ("last", 5)):
        folder = tmp_path_factory.mktemp(f"{output}{batch}")
        ran = run_mpi(2, "train", str(folder), output, str(batch))
        assert ran.returncode == 0, ran.stdout + ran.stderr
        results[output, batch] = folder
    return results


@pytest.mark.parametrize("output, batch", [("sequence", 6), ("last", 5)],
                         ids=["ragged-even-shards", "uneven-shards"])
def test_ranks_stay_identical_and_match_one_process(trained, output, batch):
    folder = trained[output, batch]
    initial0, initial1 = (np.load(folder / f"initial{r}.npy") for r in (0, 1))
    assert np.array_equal(initial0, initial1)  # an unseeded model starts as rank 0's
    rank0, rank1 = (np.load(folder / f"params{r}.npy") for r in (0, 1))
    assert np.array_equal(rank0, rank1)  # bit-identical: the same update everywhere
    reference, losses = one_process(output, batch, STEPS)
    np.testing.assert_allclose(rank0, reference.flat_params, rtol=1e-10, atol=1e-12)
    report = json.loads((folder / "rank0.json").read_text())
    np.testing.assert_allclose(report["losses"], losses, rtol=1e-10)  # the global loss
    assert report["shard"] == [0, batch // 2]


def test_rank_0_alone_writes_the_checkpoint_and_one_rank_resumes_it(trained):
    folder = trained["last", 5]
    reports = [json.loads((folder / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [report["saves"] for report in reports] == [1, 0]
    assert reports[1]["checkpoint_seen"]  # save returned only once the file was there
    ran = run_mpi(1, "resume", str(folder), "last", "5")
    assert ran.returncode == 0, ran.stdout + ran.stderr
    reference, losses = one_process("last", 5, STEPS + MORE_STEPS)
    np.testing.assert_allclose(np.load(folder / "resumed.npy"), reference.flat_params,
                               rtol=1e-10, atol=1e-12)
    resumed = json.loads((folder / "resumed.json").read_text())
    np.testing.assert_allclose(resumed["losses"], losses[STEPS:], rtol=1e-10)
    assert resumed["optimizer_steps"] == STEPS + MORE_STEPS


def test_an_error_in_one_rank_s_shard_raises_on_every_rank(trained):
    folder = trained["sequence", 6]
    errors = [json.loads((folder / f"rank{r}.json").read_text())["bad_step"] for r in (0, 1)]
    assert errors[0] == "RuntimeError: 1 other rank(s) failed in this training step " \
                        "(their error is on their stderr)"
    assert errors[1].startswith("ValueError: y must lie in [0, 3]")


def test_bad_arguments_are_refused_on_every_rank_with_their_name(trained):
    folder = trained["sequence", 6]
    expected = [
        "ValueError: x must be a batch, time first: (T, B, I) (DataParallel splits it along "
        "B), got shape (6, 6)",
        "ValueError: y must hold the batch's 6 sequences along axis 1 (as "
        "SequenceModel.train_step takes it), got shape (6, 5)",
        "ValueError: lengths must have shape (6,) (one length per sequence), got (5,)",
        "ValueError: batch_size must be at least the number of ranks (2) so that every rank "
        "trains on part of each batch, got 1",
        "ValueError: fit trains next-token models: it needs vocab_size and output='sequence'",
        "TypeError: model must be a fastrnn.SequenceModel, got str",
        "TypeError: comm must be an mpi4py intracommunicator (MPI.COMM_WORLD or one split "
        "from it), got str",
        "ValueError: timeout must be a finite number > 0, got 0.0"]
    for rank in (0, 1):
        assert json.loads((folder / f"rank{rank}.json").read_text())["refused"] == expected


def test_a_model_that_differs_between_ranks_is_refused(trained):
    folder = trained["sequence", 6]
    for rank in (0, 1):
        report = json.loads((folder / f"rank{rank}.json").read_text())
        assert report["mismatch"].startswith("ValueError: model must be the same on every rank")


def test_rank_0_s_clock_stops_every_rank_at_the_same_step(trained):
    folder = trained["sequence", 6]
    for rank in (0, 1):  # rank 1 was given a budget of a day, rank 0 of nothing
        assert json.loads((folder / f"rank{rank}.json").read_text())["budget_steps"] == 1


def test_a_rank_that_leaves_makes_the_other_fail_within_the_timeout(tmp_path):
    ran = run_mpi(2, "leave", str(tmp_path))
    ended = time.time()
    assert ran.returncode != 0
    assert "fastrnn.distributed: rank 0 of 2: the Allreduce of a training step's gradients " \
           "did not complete within timeout=3 s" in ran.stderr, ran.stderr
    left = float((tmp_path / "left").read_text())
    assert ended - left < 30, ended - left  # the 3 s timeout and the abort, not a hang


def test_the_command_line_trains_data_parallel_like_one_process(tmp_path):
    from fastrnn import cli

    corpus = tmp_path / "corpus.txt"
    corpus.write_text("the quick brown fox jumps over the lazy dog. " * 20)
    options = ["--text", str(corpus), "--steps", "3", "--hidden-size", "8", "--window", "8",
               "--batch-size", "5", "--report-every", "0"]
    ran = run_mpi(2, "train", *options, "--out", str(tmp_path / "mpi.fastrnn"), "--mpi",
                  module=True, threads=None)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert ran.stdout.count("saved checkpoint") == 1  # rank 0 alone reports
    # Without FASTRNN_NUM_THREADS, the two ranks of this node share its threads.
    share = max(1, numba.config.NUMBA_NUM_THREADS // 2)
    assert f"data-parallel on 2 MPI ranks, {share} kernel thread(s) each" in ran.stdout
    assert cli.main(["train", *options, "--out", str(tmp_path / "one.fastrnn")]) == 0
    mpi, one = (fastrnn.load(tmp_path / name) for name in ("mpi.fastrnn", "one.fastrnn"))
    np.testing.assert_allclose(mpi.flat_params, one.flat_params, rtol=1e-4, atol=1e-6)
    assert mpi.optimizer.step_count == one.optimizer.step_count == 3


def test_train_step_is_compute_gradients_then_apply_gradients():
    """The two public halves DataParallel puts the Allreduce between."""
    split, whole = make_model("sequence"), make_model("sequence")
    for x, y, n in global_batches("sequence", 4, 2):
        before = split.flat_params.copy()
        loss = split.compute_gradients(x, y, lengths=n)
        assert np.array_equal(split.flat_params, before)  # gradients only
        assert split.apply_gradients(loss) is True
        assert loss == whole.train_step(x, y, lengths=n)
    np.testing.assert_array_equal(split.flat_params, whole.flat_params)
    assert split.apply_gradients(float("nan")) is False  # a non-finite step is skipped
    assert split.skipped_steps == 1


# ------------------------------------------------ the ranks' side (under mpiexec)
def _error_text(call):
    try:
        call()
    except Exception as error:
        return f"{type(error).__name__}: {error}"
    return None


def _scenario_train(folder, output, batch):
    """Train STEPS steps, save, then exercise the failure paths."""
    from mpi4py import MPI

    from fastrnn.distributed import DataParallel

    rank = MPI.COMM_WORLD.Get_rank()
    report = {"mismatch": _error_text(lambda: DataParallel(fastrnn.SequenceModel(
        input_size=FEATURES, hidden_size=HIDDEN + rank, output_size=4)))}
    model = make_model(output, seed=None)  # unseeded: rank 0's weights are broadcast
    saves = []

    def counting_save(path, save=model.save):
        saves.append(path)
        save(path)

    model.save = counting_save
    trainer = DataParallel(model)
    np.save(os.path.join(folder, f"initial{rank}.npy"), model.flat_params)
    report["shard"] = [trainer.shard(batch).start, trainer.shard(batch).stop]
    batches = global_batches(output, batch, STEPS)
    model.load_state_dict(make_model(output).state_dict())  # the test's reference weights
    report["losses"] = [trainer.train_step(x, y, n) for x, y, n in batches]
    np.save(os.path.join(folder, f"params{rank}.npy"), model.flat_params)
    checkpoint = os.path.join(folder, "model.fastrnn")
    trainer.save(checkpoint)
    report["saves"] = len(saves)
    report["checkpoint_seen"] = os.path.exists(checkpoint)
    if output == "sequence":
        x, y, n = batches[0]
        report["refused"] = [_error_text(call) for call in (
            lambda: trainer.train_step(x[:, :, 0], y, n),
            lambda: trainer.train_step(x, y[:, :5], n),
            lambda: trainer.train_step(x, y, n[:5]),
            lambda: trainer.train_step(x[:, :1], y[:, :1], n[:1]),
            lambda: trainer.fit("some text", window=2, batch_size=2),
            lambda: DataParallel("model.fastrnn"),
            lambda: DataParallel(model, comm="COMM_WORLD"),
            lambda: DataParallel(model, timeout=0))]
        y = y.copy()
        y[:, -1] = 99  # a bad class id in rank 1's shard only
        report["bad_step"] = _error_text(lambda: trainer.train_step(x, y, n))
        text_model = fastrnn.SequenceModel(vocab_size=7, output_size=7, hidden_size=4,
                                           dtype=np.float64, seed=0)
        ids = np.arange(400) % 7
        budget = 0.0 if trainer.rank == 0 else 86400.0
        # Were rank 1 to go on alone, it would wait and abort after the 20 s timeout.
        history = DataParallel(text_model, timeout=20).fit(ids, window=5, batch_size=4,
                                                           steps=50, time_budget=budget)
        report["budget_steps"] = len(history["loss"])
    with open(os.path.join(folder, f"rank{rank}.json"), "w") as file:
        json.dump(report, file)


def _scenario_resume(folder, output, batch):
    from fastrnn.distributed import DataParallel

    trainer = DataParallel(fastrnn.load(os.path.join(folder, "model.fastrnn")))
    batches = global_batches(output, batch, STEPS + MORE_STEPS)[STEPS:]
    losses = [trainer.train_step(x, y, n) for x, y, n in batches]
    np.save(os.path.join(folder, "resumed.npy"), trainer.model.flat_params)
    with open(os.path.join(folder, "resumed.json"), "w") as file:
        json.dump({"losses": losses,
                   "optimizer_steps": trainer.model.optimizer.step_count}, file)


def _scenario_leave(folder):
    """Rank 1 leaves the training loop after one step; rank 0 goes on."""
    from fastrnn.distributed import DataParallel

    trainer = DataParallel(make_model("sequence"), timeout=3)
    for step, (x, y, n) in enumerate(global_batches("sequence", 4, 3)):
        if step == 1 and trainer.rank == 1:  # after the first step, which may compile
            with open(os.path.join(folder, "left"), "w") as file:
                file.write(repr(time.time()))
            sys.exit(0)
        trainer.train_step(x, y, n)


if __name__ == "__main__":
    scenario, *arguments = sys.argv[1:]
    folder = arguments[0]
    if scenario == "leave":
        _scenario_leave(folder)
    else:
        output, batch = arguments[1], int(arguments[2])
        {"train": _scenario_train, "resume": _scenario_resume}[scenario](folder, output, batch)
