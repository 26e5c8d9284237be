"""The asv suite (benchmarks/bench_layers.py) and `fastrnn bench` define and time the
same workloads: the same bench.make_workload calls, the same shapes, and asv's
samples taken by bench.sample_seconds with bench.calibrate's numbers. Also the
asv configuration and the added workloads (single-step cells, SequenceModel).

No timing assertions: a virtual clock or a recorded call stands in for the machine.
"""

import argparse
import gc
import json
import os
import re
import subprocess
import sys
import timeit
import types

import numpy as np
import pytest
from helpers import load_asv_suite

import fastrnn
from fastrnn import bench

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def suite():
    """A fresh copy of the suite each test: its per-process caches start empty."""
    return load_asv_suite()


@pytest.fixture
def recorded_workloads(monkeypatch):
    """bench.make_workload replaced by a recorder of its arguments (cheap callables)."""
    calls = []

    def make_workload(framework, cell, mode, shape, seed=0):
        calls.append((framework, cell, mode, shape, seed))
        return lambda: None

    monkeypatch.setattr(bench, "make_workload", make_workload)
    monkeypatch.setattr(bench, "peer_installed", lambda peer: True)
    monkeypatch.setattr(bench, "set_threads", lambda threads: lambda: None)
    return calls


def bench_run_workloads(recorded, monkeypatch, capsys, cell, mode, shape):
    """The make_workload calls of `fastrnn bench --cells CELL --mode MODE --shape SHAPE`."""
    monkeypatch.setattr(bench, "gemm_gflops", lambda threads=None: 100.0)
    monkeypatch.setattr(bench, "median_ms", lambda workloads, repeats: dict.fromkeys(workloads, 1.0))
    monkeypatch.setattr(bench, "_installed_peers",
                        lambda threads: {peer: "1" for peer in bench.PEERS})
    parser = bench.add_arguments(argparse.ArgumentParser())
    recorded.clear()
    bench.run(parser.parse_args(["--cells", cell, "--mode", mode, "--shape", shape,
                                 "--repeats", "1", "--threads", "1"]))
    capsys.readouterr()
    calls = list(recorded)
    recorded.clear()
    return calls


# ------------------------------------------------------------ the same workloads
def test_shapes_are_bench_named_shapes_in_order_labelled_as_in_its_table(suite):
    assert list(suite.SHAPE_SIZES) == list(bench.NAMED_SHAPES)
    for name, shape in bench.NAMED_SHAPES.items():
        assert bench.Shape(name, *suite.SHAPE_SIZES[name]) == shape
    assert suite.SHAPES == [str(shape) for shape in bench.NAMED_SHAPES.values()]
    assert suite.SHAPES[0] == "tiny (100,1,64,64)"
    for label, name in suite.SHAPE_NAMES.items():
        assert suite.bench_shape("train", label) == suite.bench_shape("train", name) \
            == bench.parse_shape(name)
    assert suite.bench_shape("stream") == bench.STREAM_SHAPE
    assert suite.CELLS == list(bench.CELLS)


@pytest.mark.parametrize("cell, shape", [("rnn", "tiny"), ("gru", "b1h300"), ("lstm", "mid")])
def test_layer_benchmarks_build_what_fastrnn_bench_builds(suite, recorded_workloads, monkeypatch,
                                                          capsys, cell, shape):
    label = str(bench.NAMED_SHAPES[shape])
    for mode, benchmark in (("train", suite.TrainStep()), ("forward", suite.Forward())):
        expected = bench_run_workloads(recorded_workloads, monkeypatch, capsys, cell, mode, shape)
        assert ("fastrnn", cell, mode, bench.NAMED_SHAPES[shape], 0) in expected
        benchmark.setup(cell, label)
        assert recorded_workloads == [call for call in expected if call[0] == "fastrnn"]
        recorded_workloads.clear()
        # every peer row of bench has its speed-up benchmark, building the same pair
        for peer, speedup_class in (("torch", suite.SpeedupVsTorch), ("jax", suite.SpeedupVsJax),
                                    ("onnxruntime", suite.SpeedupVsOnnxruntime)):
            pair = [call for call in expected if call[0] in ("fastrnn", peer)]
            if mode not in speedup_class.params[1]:
                assert len(pair) == 1   # onnxruntime: inference only, in bench too
                continue
            suite.bench_workload.cache_clear()
            speedup = speedup_class()
            speedup.setup(cell, mode, label)
            speedup.teardown(cell, mode, label)
            assert recorded_workloads == pair
            recorded_workloads.clear()
        suite.bench_workload.cache_clear()


def test_stream_benchmarks_build_what_fastrnn_bench_builds(suite, recorded_workloads, monkeypatch,
                                                           capsys):
    expected = bench_run_workloads(recorded_workloads, monkeypatch, capsys, "gru", "stream", "tiny")
    suite.StreamStep().setup("gru")
    assert recorded_workloads == [call for call in expected if call[0] == "fastrnn"]
    assert recorded_workloads[0][3] == bench.STREAM_SHAPE
    for peer, speedup_class in (("torch", suite.StreamSpeedupVsTorch),
                                ("jax", suite.StreamSpeedupVsJax),
                                ("onnxruntime", suite.StreamSpeedupVsOnnxruntime)):
        recorded_workloads.clear()
        suite.bench_workload.cache_clear()
        speedup_class().setup("gru")
        assert recorded_workloads == [call for call in expected if call[0] in ("fastrnn", peer)]


# ---------------------------------------------------------------- the same timing
@pytest.fixture
def recorded_sampling(monkeypatch):
    """bench.calibrate and bench.sample_seconds replaced by recorders."""
    record = types.SimpleNamespace(calibrated=[], sampled=[], gc_enabled=[])

    def calibrate(workload):
        record.calibrated.append(workload)
        return 3, 7

    def sample_seconds(workload, number, settle):
        record.sampled.append((workload, number, settle))
        record.gc_enabled.append(gc.isenabled())
        return 0.25

    monkeypatch.setattr(bench, "calibrate", calibrate)
    monkeypatch.setattr(bench, "sample_seconds", sample_seconds)
    return record


def asv_time(benchmark_instance, method_name, *params, number=1):
    """What asv_runner's TimeBenchmark does with a benchmark that has a setup: a
    timeit.Timer over the method, with the `timer` attribute read from the instance."""
    method = getattr(benchmark_instance, method_name)
    timer = timeit.Timer(stmt=lambda: method(*params), timer=benchmark_instance.timer)
    return timer.timeit(number) / number


@pytest.mark.parametrize("benchmark, method, params", [
    ("TrainStep", "time_train_step", ("lstm", "tiny (100,1,64,64)")),
    ("Forward", "time_forward", ("rnn", "long (1000,8,32,64)")),
    ("StreamStep", "time_stream_step", ("gru",)),
])
def test_each_asv_sample_is_one_bench_sample(suite, recorded_workloads, recorded_sampling,
                                             benchmark, method, params):
    """asv's time_ benchmarks report bench.sample_seconds' seconds per call, with the
    numbers bench.calibrate gave for the warm workload: asv's timer is a clock
    that only those samples advance, however many calls asv makes."""
    instance = getattr(suite, benchmark)()
    instance.setup(*params)
    (workload,) = recorded_sampling.calibrated
    assert asv_time(instance, method, *params) == 0.25
    assert asv_time(instance, method, *params, number=4) == 0.25
    assert recorded_sampling.sampled == [(workload, 3, 7)] * 5
    instance.setup(*params)   # asv re-runs setup between samples: nothing is redone
    assert len(recorded_sampling.calibrated) == 1 and len(recorded_workloads) == 1


def test_samples_run_with_the_garbage_collector_on_as_in_bench(suite, recorded_workloads,
                                                               recorded_sampling):
    benchmark = suite.TrainStep()
    benchmark.setup("rnn", "tiny")
    gc.disable()   # as asv's timeit does around the timed call
    try:
        benchmark.time_train_step("rnn", "tiny")
        assert not gc.isenabled()
    finally:
        gc.enable()
    benchmark.time_train_step("rnn", "tiny")
    assert recorded_sampling.gc_enabled == [True, True]
    assert gc.isenabled()


def test_fallback_sampling_for_older_commits_matches_bench(suite, monkeypatch):
    """asv runs this suite against commits whose bench has no calibrate/sample_seconds
    yet: the suite's fallback makes the same calls and returns the same numbers."""
    tick = 2.0 ** -10   # a virtual clock: each call lasts one tick
    clock = types.SimpleNamespace(now=0.0)
    monkeypatch.setattr(bench, "time", types.SimpleNamespace(perf_counter=lambda: clock.now))
    monkeypatch.setattr(bench, "MIN_SAMPLE_SECONDS", 3 * tick)
    monkeypatch.setattr(bench, "SETTLE_SECONDS", 5 * tick)
    calls = []

    def workload():
        calls.append(clock.now)
        clock.now += tick

    def run():
        calls.clear()
        numbers = suite.calibrate(workload)
        return numbers, suite.sample_seconds(workload, *numbers), len(calls)

    with_bench = run()
    assert with_bench == ((3, 5), tick, 1 + 2 + 5 + 3)
    monkeypatch.delattr(bench, "calibrate")
    monkeypatch.delattr(bench, "sample_seconds")
    assert run() == with_bench


def test_calibrate_warms_the_allocator_before_the_first_call(monkeypatch):
    events = []
    monkeypatch.setattr(bench, "warm_allocator", lambda: events.append("warm"))
    bench.calibrate(lambda: events.append("call"))
    assert events == ["warm", "call", "call", "call"]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc, Linux's counters")
def test_the_warm_allocator_stops_the_page_faults_of_a_training_step():
    """In a new process whose import of fastrnn left malloc alone
    (FASTRNN_MALLOC_WARMUP=0), the LSTM mid training step faults its temporaries
    back in on every call (glibc hands freed memory back to the OS); after
    bench.warm_allocator, the state bench and the asv suite time in, it does
    not, and neither after a plain `import fastrnn`."""
    code = """if True:
        import resource, sys
        from fastrnn import bench
        if sys.argv[1] == "warmed by bench":
            bench.warm_allocator()
        step = bench.make_workload("fastrnn", "lstm", "train", bench.GRID["mid"])
        for _ in range(3):
            step()
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        for _ in range(5):
            step()
        print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 5)
    """
    faults = {}
    for state, warmup in (("new", "0"), ("warmed by bench", "0"), ("imported", None)):
        env = {name: value for name, value in os.environ.items()
               if name != "FASTRNN_MALLOC_WARMUP"}
        if warmup is not None:
            env["FASTRNN_MALLOC_WARMUP"] = warmup
        result = subprocess.run([sys.executable, "-c", code, state], capture_output=True,
                                text=True, timeout=600, check=True, env=env)
        faults[state] = float(result.stdout.split()[-1])
    if faults["new"] < 200:
        pytest.skip(f"this malloc does not give the memory back between calls ({faults})")
    assert faults["warmed by bench"] < 0.1 * faults["new"], faults
    assert faults["imported"] < 0.1 * faults["new"], faults


@pytest.mark.parametrize("value", ["2", "no", "off"])
def test_a_malloc_warmup_setting_other_than_0_or_1_is_an_error(value):
    result = subprocess.run([sys.executable, "-c", "import fastrnn"], capture_output=True,
                            text=True, timeout=120,
                            env=dict(os.environ, FASTRNN_MALLOC_WARMUP=value))
    assert result.returncode != 0
    assert f"FASTRNN_MALLOC_WARMUP must be 0 or 1, got {value!r}" in result.stderr


def test_median_ms_is_made_of_calibrate_and_sample_seconds(monkeypatch, recorded_sampling):
    """`fastrnn bench`'s medians come from the same two functions the asv suite calls."""
    def a():
        pass

    def b():
        pass

    assert bench.median_ms({"a": a, "b": b}, repeats=2) == {"a": 250.0, "b": 250.0}
    assert recorded_sampling.calibrated == [a, b]
    assert recorded_sampling.sampled == [(a, 3, 7), (b, 3, 7)] * 2


def test_time_benchmarks_leave_warm_up_to_setup_and_have_sane_limits(suite):
    timed = [cls for cls in vars(suite).values()
             if isinstance(cls, type) and any(name.startswith("time_") for name in vars(cls))]
    assert {cls.__name__ for cls in timed} >= {
        "TrainStep", "Forward", "StreamStep", "CellStep", "SequenceModelTrainStep"}
    for cls in timed:
        assert cls.timer is suite.sample_clock
        assert cls.warmup_time == 0
        assert cls.timeout <= 300
        assert 1 <= cls.repeat[0] <= cls.repeat[1] <= 10 and cls.repeat[2] <= 10


def test_parameters_read_well(suite):
    """Every parameterised class names each parameter with a word; the values are
    words or bench's shape labels ("tiny (100,1,64,64)": T,B,I,H), and no parameter
    has one value but the onnxruntime one (inference only, which it says)."""
    for cls in vars(suite).values():
        if not isinstance(cls, type) or not hasattr(cls, "params"):
            continue
        assert len(cls.params) == len(cls.param_names), cls.__name__
        for name, values in zip(cls.param_names, cls.params):
            assert re.fullmatch(r"[a-z]+", name), (cls.__name__, name)
            assert len(values) > 1 or cls.__name__ == "SpeedupVsOnnxruntime", (cls.__name__, name)


# ------------------------------------------------------------ the added workloads
@pytest.mark.parametrize("cell", bench.CELLS)
def test_cell_step_benchmark_runs_both_modes(suite, cell):
    for mode in suite.CELL_STEP_MODES:
        benchmark = suite.CellStep()
        benchmark.setup(cell, mode)
        before = suite.sample_clock()
        benchmark.time_cell_step(cell, mode)
        assert suite.sample_clock() > before


def test_cell_step_workload_is_one_b1_call_of_the_cell_carrying_the_state(suite, monkeypatch):
    import fastrnn

    seen = []
    original = fastrnn.LSTMCell.__call__

    def call(self, x, state=None):
        seen.append((x.shape, self.hidden_size, state is None))
        return original(self, x, state)

    monkeypatch.setattr(fastrnn.LSTMCell, "__call__", call)
    step = suite.cell_step_workload("lstm", "inference")
    step()
    step()
    assert seen == [((1, 128), 128, True), ((1, 128), 128, False)]
    with pytest.raises(ValueError, match="mode"):
        suite.cell_step_workload("lstm", "backward")


def test_sequence_model_benchmark_trains_the_adding_problem_model(suite):
    step = suite.adding_problem_workload()
    model = step.model
    assert model.config["cell"] == "lstm" and model.config["hidden_size"] == 64
    assert model.config["output"] == "last" and model.config["loss"] == "mse"
    assert model.config["max_norm"] == 1.0
    assert type(model.optimizer).__name__ == "Adam"
    before = model.state_dict()["head.weight"].copy()
    losses = [step() for _ in range(3)]
    assert all(np.isfinite(losses))
    assert not np.array_equal(before, model.state_dict()["head.weight"])   # Adam updated it

    benchmark = suite.SequenceModelTrainStep()
    benchmark.setup()
    before = suite.sample_clock()
    benchmark.time_train_step()
    assert suite.sample_clock() > before


def test_cold_start_benchmark_code_runs_in_a_fresh_interpreter(suite):
    """ImportAndFirstStep's timed statement, run as asv's timeraw runs it: a fresh
    interpreter with the benchmark's env."""
    benchmark = suite.ImportAndFirstStep()
    benchmark.setup("gru")
    code = benchmark.timeraw_import_and_first_step("gru")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=600, env={**os.environ, **suite.ImportAndFirstStep.env})
    assert result.returncode == 0, result.stderr


# --------------------------------------------------------------- asv.conf.json
def load_asv_conf():
    with open(os.path.join(REPO_ROOT, "asv.conf.json")) as file:
        text = file.read()
    # asv reads JSON with // comments; drop whole-line ones (no string here holds //)
    return json.loads(re.sub(r"^\s*//.*$", "", text, flags=re.MULTILINE))


def test_asv_conf_builds_commits_in_a_virtualenv_with_the_cpu_torch():
    conf = load_asv_conf()
    assert conf["environment_type"] == "virtualenv"
    assert conf["repo"] == "." and conf["branches"] == ["main"]
    requirements = conf["matrix"]["req"]
    # any other torch spec may pull a multi-GB CUDA build
    assert requirements["torch"] == "2.13.0"
    assert {"numba", "numpy", "scipy", "jax", "onnx", "onnxruntime"} <= set(requirements)
    assert os.path.isdir(os.path.join(REPO_ROOT, conf["benchmark_dir"]))
    for key in ("env_dir", "results_dir", "html_dir"):
        assert conf[key].startswith(".asv/")   # .gitignore'd
    assert any("{wheel_file}" in command for command in conf["install_command"])


# ------------------------------------------------------------------- cell options
def test_classic_gru_benchmark_builds_bench_workload_of_that_cell(suite, recorded_workloads):
    assert suite.CLASSIC_GRU in set(fastrnn.layers.CELL_NAMES) - set(bench.CELLS)
    label = suite.CELL_OPTION_SHAPES[1]
    for mode in suite.SEQUENCE_MODES:
        suite.ClassicGRU().setup(mode, label)
    assert recorded_workloads == [("fastrnn", "gru_reset_before", mode, bench.GRID["small"], 0)
                                  for mode in suite.SEQUENCE_MODES]


def test_classic_gru_benchmark_is_skipped_where_the_commit_lacks_the_cell(suite, monkeypatch):
    monkeypatch.setattr(fastrnn.layers, "CELL_NAMES", ("rnn", "lstm", "gru"))
    with pytest.raises(NotImplementedError, match="gru_reset_before"):
        suite.ClassicGRU().setup("train", "tiny")


def test_bench_workload_runs_fastrnn_cells_without_a_peer_counterpart():
    shape = bench.Shape("", 3, 2, 4, 5)
    bench.make_workload("fastrnn", "gru_reset_before", "train", shape)()
    with pytest.raises(ValueError, match="cell"):
        bench.make_workload("torch", "gru_reset_before", "train", shape)
    assert bench.flop_count("gru_reset_before", shape) == bench.flop_count("gru", shape)
