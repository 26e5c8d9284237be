"""`fastrnn bench` and the asv suite: they run, report missing peers, count FLOPs right.

No timing assertions: the numbers depend on the machine and its load.
"""

import argparse
import os
import subprocess
import sys
import types

import numpy as np
import pytest
from helpers import load_asv_suite, load_benchmark_script

import fastrnn
from fastrnn import bench

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY_ARGS = ["--shape", "3,2,4,5", "--cells", "rnn", "--mode", "forward", "--repeats", "1",
             "--threads", "1"]


def run_bench(argv):
    parser = bench.add_arguments(argparse.ArgumentParser(prog="fastrnn bench"))
    return bench.run(parser.parse_args(argv))


@pytest.fixture(autouse=True)
def _keep_xla_flags(monkeypatch):
    # import_jax(threads=1) sets XLA_FLAGS for a JAX import; keep it inside the test.
    if "XLA_FLAGS" in os.environ:
        monkeypatch.setenv("XLA_FLAGS", os.environ["XLA_FLAGS"])
    else:
        monkeypatch.delenv("XLA_FLAGS", raising=False)


@pytest.fixture
def fast_gemm_peak(monkeypatch):
    monkeypatch.setattr(bench, "gemm_gflops", lambda threads=None: 100.0)


@pytest.fixture
def no_peers(monkeypatch):
    """Make the peers' imports fail, as when they are not installed."""
    for name in bench.PEERS:
        monkeypatch.setitem(sys.modules, name, None)


# ------------------------------------------------------------------ FLOP counting
def test_flop_count_matches_hand_computed_lstm():
    shape = bench.Shape("", T=2, B=3, I=5, H=7)
    # 2 * T * B * gates * H * (I + H) = 2 * 2 * 3 * 4 * 7 * 12
    assert bench.flop_count("lstm", shape, "forward") == 4032
    assert bench.flop_count("lstm", shape, "train") == 3 * 4032


def test_flop_count_per_cell_and_stream():
    shape = bench.STREAM_SHAPE   # T = B = 1, I = H = 128
    assert bench.flop_count("rnn", shape, "stream") == 2 * 1 * 128 * 256
    assert bench.flop_count("gru", shape, "stream") == 2 * 3 * 128 * 256


def test_flop_count_rejects_unknown_cell_and_mode():
    with pytest.raises(ValueError, match="cell"):
        bench.flop_count("transformer", bench.GRID["tiny"])
    with pytest.raises(ValueError, match="mode"):
        bench.flop_count("rnn", bench.GRID["tiny"], "backward")


def test_gemm_gflops_measures_a_positive_rate():
    assert bench.gemm_gflops(threads=1, size=64, repeats=2) > 0


# ------------------------------------------------------------------ the command
def test_run_prints_a_table_with_a_fastrnn_column(capsys, fast_gemm_peak):
    assert run_bench(TINY_ARGS) == 0
    out = capsys.readouterr().out
    header = next(line for line in out.splitlines() if line.startswith("cell"))
    for column in ("fastrnn ms", "torch ms", "vs torch", "jax ms", "ort ms", "vs ort", "GFLOP/s",
                   "%peak"):
        assert column in header
    row = next(line for line in out.splitlines() if "3,2,4,5" in line)
    assert row.split()[:2] == ["rnn", "forward"]
    assert "GEMM peak" in out


def test_run_reports_missing_peers_and_still_measures_fastrnn(capsys, fast_gemm_peak, no_peers):
    for peer in bench.PEERS:
        assert not bench.peer_installed(peer)
    assert run_bench(TINY_ARGS + ["--mode", "stream"]) == 0
    out = capsys.readouterr().out
    assert all(f"{peer} not installed" in out for peer in bench.PEERS)
    row = next(line for line in out.splitlines() if line.startswith("rnn"))
    assert row.count("not installed") == len(bench.PEERS)
    fastrnn_ms = float(row.split()[4])   # cell, mode, "stream", "(1,1,128,128)", ms
    assert fastrnn_ms > 0


def test_make_workload_raises_for_a_missing_peer(no_peers):
    with pytest.raises(bench.PeerNotInstalled):
        bench.make_workload("torch", "rnn", "forward", bench.Shape("", 2, 1, 3, 4))


def test_run_restores_the_thread_count(fast_gemm_peak, capsys):
    before = fastrnn.get_num_threads()
    run_bench(TINY_ARGS)
    assert fastrnn.get_num_threads() == before


@pytest.mark.parametrize("text", ["1,2,3", "a,b,c,d", "0,1,2,3", "huge"])
def test_bad_shape_is_a_clear_error(text):
    with pytest.raises(ValueError, match="--shape"):
        bench.parse_shape(text)


def test_shape_accepts_grid_names_and_sizes():
    assert bench.parse_shape("mid") == bench.GRID["mid"]
    assert (bench.parse_shape("7,2,3,4").T, bench.parse_shape("7,2,3,4").H) == (7, 4)


def test_bad_cells_is_a_clear_error():
    with pytest.raises(ValueError, match="--cells"):
        bench.parse_cells("rnn,transformer")


def test_importing_fastrnn_bench_imports_no_peer():
    code = ("import sys, fastrnn, fastrnn.bench; "
            "assert 'torch' not in sys.modules and 'jax' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO_ROOT,
                   env=dict(os.environ, PYTHONPATH=os.pathsep.join(
                       filter(None, [REPO_ROOT, os.environ.get("PYTHONPATH")]))))


# ------------------------------------------------------------------ the asv suite
@pytest.fixture(scope="module")
def suite():
    return load_asv_suite()


def test_asv_fastrnn_benchmarks_set_up_and_run_on_tiny(suite):
    train = suite.TrainStep()
    train.setup("gru", "tiny")
    train.time_train_step("gru", "tiny")
    train.peakmem_train_step("gru", "tiny")
    assert train.track_gflops("gru", "tiny") > 0

    forward = suite.Forward()
    forward.setup("lstm", "tiny")
    forward.time_forward("lstm", "tiny")

    stream = suite.StreamStep()
    stream.setup("rnn")
    stream.time_stream_step("rnn")


def test_asv_speedup_is_skipped_without_the_peer(suite, no_peers):
    for speedup in (suite.SpeedupVsTorch(), suite.SpeedupVsJax()):
        with pytest.raises(NotImplementedError, match="not installed"):
            speedup.setup("rnn", "forward", "tiny")
        speedup.teardown("rnn", "forward", "tiny")   # asv tears down skipped ones too


def test_asv_speedup_vs_torch_runs_and_restores_threads(suite):
    pytest.importorskip("torch")
    before = fastrnn.get_num_threads()
    speedup = suite.SpeedupVsTorch()
    speedup.setup("rnn", "forward", "tiny")
    try:
        assert speedup.track_speedup_vs_torch("rnn", "forward", "tiny") > 0
    finally:
        speedup.teardown("rnn", "forward", "tiny")
    assert fastrnn.get_num_threads() == before


def test_asv_import_benchmark_returns_code_and_warms_the_cache(suite):
    benchmark = suite.ImportAndFirstStep()
    benchmark.setup("lstm")
    code = benchmark.timeraw_import_and_first_step("lstm")
    assert "import fastrnn" in code and "backward" in code


@pytest.mark.parametrize("cell", bench.CELLS)
def test_jax_peer_computes_the_same_layer_as_fastrnn(cell):
    jax = pytest.importorskip("jax")
    layer = {"rnn": fastrnn.RNN, "lstm": fastrnn.LSTM, "gru": fastrnn.GRU}[cell](
        3, 4, dtype=np.float64, seed=0)
    x = np.random.default_rng(1).standard_normal((5, 2, 3))
    expected, _ = layer(x)
    params = {name.removesuffix("_l0"): jax.numpy.asarray(value, dtype=jax.numpy.float32)
              for name, value in layer.params.items()}
    zeros = jax.numpy.zeros((2, 4), jax.numpy.float32)
    step = bench._jax_cell(cell, jax)
    _, out = jax.lax.scan(lambda state, x_t: step(params, state, x_t),
                          (zeros, zeros) if cell == "lstm" else zeros,
                          jax.numpy.asarray(x, dtype=jax.numpy.float32))
    np.testing.assert_allclose(np.asarray(out), expected, atol=1e-5)


@pytest.mark.parametrize("cell", bench.CELLS)
def test_onnxruntime_peer_computes_the_same_layer_as_fastrnn(cell):
    """The onnxruntime workload's node holds the fastrnn workload's weights in
    ONNX's gate order: the same outputs and final state."""
    pytest.importorskip("onnxruntime")
    shape = bench.Shape("", 5, 2, 3, 4)
    layer = fastrnn.layers.layer_for_cell(cell, shape.I, shape.H, dtype=np.float32, seed=3)
    session = bench.onnxruntime_session(layer, cell, shape.T, shape.B, threads=1)
    x = bench.make_inputs(shape, seed=1)
    h0 = np.random.default_rng(2).standard_normal((1, shape.B, shape.H)).astype(np.float32)
    states = [h0, 0.5 * h0] if layer.has_cell_state else [h0]
    feeds = {"X": x, **{f"initial_{s}": v for s, v in zip("hc", states)}}
    y, *final = session.run(None, feeds)
    out, h_n, c_n = layer.forward_states(x, *states)
    np.testing.assert_allclose(y[:, 0], out, atol=2e-6)
    np.testing.assert_allclose(final[0], h_n, atol=2e-6)
    if layer.has_cell_state:
        np.testing.assert_allclose(final[1], c_n, atol=2e-6)


def test_onnxruntime_runs_inference_rows_only(fast_gemm_peak, capsys):
    pytest.importorskip("onnxruntime")
    with pytest.raises(ValueError, match="inference only"):
        bench.make_workload("onnxruntime", "rnn", "train", bench.GRID["tiny"])
    run_bench(["--shape", "3,2,4,5", "--cells", "gru", "--repeats", "1", "--threads", "1"])
    rows = {line.split()[1]: line for line in capsys.readouterr().out.splitlines()
            if line.startswith("gru ")}
    assert set(rows) == {"train", "forward", "stream"}
    assert rows["train"].split()[-4:-2] == ["-", "-"]  # the ort columns
    for mode in ("forward", "stream"):
        assert rows[mode].split()[-3].endswith("x"), rows[mode]


def test_each_sample_follows_a_quiet_wait_and_a_settling_run_of_the_same_workload(
        monkeypatch):
    """Samples alternate between workloads; before each timed sample the process
    sleeps QUIET_SECONDS (the previous workload's spinning threads go idle), then
    the same workload runs untimed for SETTLE_SECONDS (one call at least)."""
    # A virtual clock (each call lasts exactly one tick, a power of two so the
    # arithmetic is exact) keeps the call counts independent of the machine's load.
    tick = 2.0 ** -10
    clock = types.SimpleNamespace(now=0.0)
    calls = []

    def sleep(seconds):
        calls.append(("sleep", seconds))
        clock.now += seconds

    monkeypatch.setattr(bench, "time", types.SimpleNamespace(perf_counter=lambda: clock.now,
                                                             sleep=sleep))
    monkeypatch.setattr(bench, "MIN_SAMPLE_SECONDS", 2 * tick)
    monkeypatch.setattr(bench, "SETTLE_SECONDS", 4 * tick)
    monkeypatch.setattr(bench, "QUIET_SECONDS", 8 * tick)

    def workload(name):
        def call():
            calls.append(name)
            clock.now += tick
        return call

    medians = bench.median_ms({"a": workload("a"), "b": workload("b")}, repeats=3)
    assert medians == {"a": 1e3 * tick, "b": 1e3 * tick}  # the sleeps are not timed
    runs = []  # consecutive calls of one workload, or a sleep
    for event in calls:
        if runs and runs[-1][0] == event and event != ("sleep", 8 * tick):
            runs[-1][1] += 1
        else:
            runs.append([event, 1])
    calibration, alternating = runs[:2], runs[2:]
    assert [name for name, _ in calibration] == ["a", "b"]
    # each sample: the quiet wait, 4 settling calls, then the timed sample of 2 calls
    assert alternating == [[("sleep", 8 * tick), 1], ["a", 6],
                           [("sleep", 8 * tick), 1], ["b", 6]] * 3


# ------------------------------------------------------------ benchmarks/memory.py
@pytest.mark.skipif(not os.path.exists("/proc/self/clear_refs"), reason="Linux only")
def test_memory_script_reports_at_least_the_activations_a_step_keeps():
    """An LSTM step keeps the activated gates (T, B, 4H) and four (T, B, H) arrays,
    then BPTT allocates gate gradients (T, B, 4H): the step must add that much."""
    n_steps, batch, size = 400, 16, 64
    script = os.path.join(REPO_ROOT, "benchmarks", "memory.py")
    result = subprocess.run(
        [sys.executable, script, "--cells", "lstm", "--frameworks", "fastrnn",
         "--shapes", f"{n_steps},{batch},{size},{size}", "--threads", "1"],
        capture_output=True, text=True, timeout=600, check=True)
    row = result.stdout.strip().splitlines()[-1].split()
    assert row[:2] == ["lstm", f"{n_steps},{batch},{size},{size}"]
    step_mb = float(row[2])
    kept_mb = (2 * 4 + 4) * n_steps * batch * size * 4 / 2 ** 20
    # Resident-memory figures move by a few pages with the allocator: a margin.
    assert step_mb >= 0.9 * kept_mb


# ------------------------------------------------------------ benchmarks/ab.py
@pytest.mark.parametrize("arguments, message", [
    (["--modes", "forward,strem"], "--modes: unknown strem"),
    (["--cells", "lstm,rnm"], "--cells: unknown rnm"),
    (["--shape", "h20"], "--shape: expected a name"),
    (["--shape", "10,2,3"], "--shape: expected a name"),
    (["--shape", "10,0,3,4"], "--shape: expected a name"),
])
def test_ab_script_refuses_what_it_would_not_measure(arguments, message):
    """An unknown mode once ran as a training step under the mode's name."""
    script = os.path.join(REPO_ROOT, "benchmarks", "ab.py")
    result = subprocess.run([sys.executable, script, "HEAD", *arguments], capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 2
    assert message in result.stderr


# ------------------------------------------------------ benchmarks/model_loop.py
def test_model_loop_times_the_same_training_step_in_fastrnn_and_torch(capsys):
    """Both sides start from the same weights and batch (the script checks their
    first losses agree before timing) and the row gives the ratio."""
    model_loop = load_benchmark_script("model_loop")
    model_loop.main(["--cells", "rnn", "--repeats", "1", "--threads", "1"])
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("rnn ")]
    assert len(rows) == 1 and rows[0].split()[-1].endswith("x"), rows


# ----------------------------------------------------------- benchmarks/cells.py
def test_cells_times_each_cell_and_mode_against_torch(capsys):
    """One row per size, cell and mode, each with the ratio; the script checks
    that torch's cell and fastrnn's give the same first step before timing."""
    cells = load_benchmark_script("cells")
    cells.main(["--sizes", "8,16", "--cells", "lstm,gru", "--repeats", "1", "--threads", "1"])
    rows = [line.split() for line in capsys.readouterr().out.splitlines()
            if line.startswith(("lstm ", "gru "))]
    assert [(row[0], row[1], row[2]) for row in rows] == [
        (cell, mode, f"H={size}") for size in (8, 16) for cell in ("lstm", "gru")
        for mode in ("inference", "train")]
    assert all(row[-1].endswith("x") and float(row[-1][:-1]) > 0 for row in rows)


@pytest.mark.parametrize("arguments, message", [
    (["--cells", "lstm,lsmt"], "--cells must be a comma-separated subset"),
    (["--modes", "infer"], "--modes: unknown infer"),
    (["--sizes", "64,x"], "--sizes must be comma-separated integers"),
    (["--sizes", "0"], "--sizes must be positive"), (["--repeats", "0"], "at least 1")])
def test_cells_refuses_what_it_would_not_measure(arguments, message, capsys):
    cells = load_benchmark_script("cells")
    with pytest.raises(SystemExit):
        cells.main(arguments)
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("arguments, message", [
    (["--cells", "lstm,lsmt"], "--cells: unknown lsmt"), (["--repeats", "0"], "at least 1")])
def test_model_loop_refuses_what_it_would_not_measure(arguments, message, capsys):
    model_loop = load_benchmark_script("model_loop")
    with pytest.raises(SystemExit):
        model_loop.main(arguments)
    assert message in capsys.readouterr().err
