"""Cold start: `fastrnn compile` fills the kernel cache so that a new process compiles
nothing, and the CLI and fit say "compiling kernels" exactly when they compile."""

import json
import os
import re
import subprocess
import sys

import numba
import numpy as np
import pytest

from fastrnn import _compile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

pytestmark = pytest.mark.skipif(numba.config.DISABLE_JIT,
                                reason="nothing compiles under NUMBA_DISABLE_JIT")

# Production calls of an Elman RNN in float64, in a new process: a one-step layer
# call, a small model's long sequence, the benchmark's mid shape, a large recurrent
# weight, one long sequence of a large layer (its inference splits the hidden units
# where there are two threads), a single-step cell, a SequenceModel's training step
# and prediction. It prints the fastrnn kernels numba compiled (from numba's compile
# events) and, from every fastrnn dispatcher's statistics, its cache misses and hits.
_PRODUCTION_CALLS = """
import json, sys
import numpy as np
from numba.core import event
from numba.core.dispatcher import Dispatcher

compiled = []

class Compiles(event.Listener):
    def on_start(self, compile_event):
        function = compile_event.data["dispatcher"].py_func
        if function.__module__.startswith("fastrnn."):
            compiled.append(function.__module__ + "." + function.__qualname__)

    def on_end(self, compile_event):
        pass

with event.install_listener("numba:compile", Compiles()):
    import fastrnn

    rng = np.random.default_rng(1)
    for n_steps, batch, inputs, hidden in [(1, 1, 8, 16), (20, 2, 8, 16), (50, 32, 64, 128),
                                           (17, 4, 16, 512), (20, 1, 8, 512)]:
        layer = fastrnn.RNN(inputs, hidden, dtype=np.float64, seed=0)
        x = rng.standard_normal((n_steps, batch, inputs))
        with fastrnn.no_grad():
            layer(x)
        out, _ = layer(x)
        layer.backward(np.ones_like(out), max_norm=5.0)
    cell = fastrnn.RNNCell(8, 16, dtype=np.float64, seed=0)
    h1 = cell(rng.standard_normal((1, 8)))
    cell.backward(np.ones_like(h1), max_norm=5.0)
    model = fastrnn.SequenceModel("rnn", input_size=4, hidden_size=8, output_size=3,
                                  dtype=np.float64, max_norm=1.0,
                                  optimizer=fastrnn.optim.SGD(lr=0.1, momentum=0.9))
    x = rng.standard_normal((10, 2, 4))
    model.train_step(x, rng.integers(0, 3, (10, 2)))
    model.predict(x)

dispatchers = [value for name, module in list(sys.modules.items())
               if name.startswith("fastrnn.") for value in vars(module).values()
               if isinstance(value, Dispatcher)]
print(json.dumps({
    "compiled": compiled,
    "cache_misses": sum(sum(d.stats.cache_misses.values()) for d in dispatchers),
    "cache_hits": sum(sum(d.stats.cache_hits.values()) for d in dispatchers)}))
"""


def _environment(cache_dir, **extra):
    env = dict(os.environ, NUMBA_CACHE_DIR=str(cache_dir), **extra)
    env["PYTHONPATH"] = ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")
    return env


def _python(args, env, timeout=600):
    result = subprocess.run([sys.executable, *args], capture_output=True, text=True,
                            timeout=timeout, cwd=ROOT, env=env)
    assert result.returncode == 0, result.stderr
    return result


def _production_run(env):
    return json.loads(_python(["-c", _PRODUCTION_CALLS], env).stdout.strip().splitlines()[-1])


TINY_GRADCHECK = ("-m", "fastrnn", "gradcheck", "--cell", "rnn", "--steps", "2", "--batch", "1",
                  "--input-size", "2", "--hidden-size", "2")


def test_compile_has_help_and_refuses_unknown_names(tmp_path):
    env = _environment(tmp_path / "cache")
    assert "usage: fastrnn compile" in _python(["-m", "fastrnn", "compile", "--help"], env).stdout
    for option, value in (("--cells", "rnn,elman"), ("--dtypes", "float16")):
        refused = subprocess.run([sys.executable, "-m", "fastrnn", "compile", option, value],
                                 capture_output=True, text=True, timeout=120, cwd=ROOT, env=env)
        assert refused.returncode == 2
        assert f"argument {option}: choose from" in refused.stderr


@pytest.mark.slow
def test_compile_fills_the_cache_so_that_a_new_process_compiles_nothing(tmp_path):
    env = _environment(tmp_path / "cache")
    filled = _python(["-m", "fastrnn", "compile", "--cells", "rnn", "--dtypes", "float64"], env)
    assert re.search(r"^  rnn +float64  compiled [1-9]", filled.stdout, re.M), filled.stdout
    assert "done in" in filled.stdout
    again = _python(["-m", "fastrnn", "compile", "--cells", "rnn", "--dtypes", "float64"], env)
    assert re.search(r"^  rnn +float64  all kernels already cached", again.stdout, re.M), \
        again.stdout
    # "auto" runs the machine's own plans; "batch" makes the larger calls split the
    # batch across threads, which "auto" leaves to BLAS on some CPUs.
    for strategy in ("auto", "batch"):
        run = _production_run(dict(env, FASTRNN_STRATEGY=strategy))
        assert run["compiled"] == [], strategy
        assert run["cache_misses"] == 0, strategy
        assert run["cache_hits"] > 0, strategy  # the calls did load their kernels
    warm = _python(TINY_GRADCHECK, env)
    assert _compile.NOTICE not in warm.stderr


@pytest.mark.slow
def test_the_cli_and_fit_say_when_they_compile_and_only_then(tmp_path):
    env = _environment(tmp_path / "cache")
    cold = _python(TINY_GRADCHECK, env)
    assert cold.stderr.count(_compile.NOTICE) == 1
    assert _compile.NOTICE not in cold.stdout
    assert _compile.NOTICE not in _python(TINY_GRADCHECK, env).stderr
    # The layer's kernels are cached now, the model's head, loss and optimizer not yet.
    fit = ("-c", "import fastrnn; text = 'abcabd' * 20; "
                 "model = fastrnn.SequenceModel.from_text(text, cell='rnn', hidden_size=2, "
                 "dtype='float64'); model.fit(text, window=4, batch_size=2, steps=2)")
    first_fit = _python(fit, env)
    assert first_fit.stderr.count(_compile.NOTICE) == 1
    assert first_fit.stderr.index(_compile.NOTICE) < first_fit.stderr.index("step 1/2")
    assert _compile.NOTICE not in _python(fit, env).stderr


def _probe(name):
    """A numba function that seems to live in fastrnn's package (the notice
    listens to fastrnn's kernels only); compiles when first called."""
    def double(x):
        return 2 * x

    double.__module__ = name
    return numba.njit(double)


class _Stream:
    def __init__(self):
        self.text = ""

    def write(self, text):
        self.text += text

    def flush(self):
        pass


def test_the_notice_comes_once_per_block_and_only_for_compiles_of_fastrnn_kernels():
    kernel, other = _probe("fastrnn._probe"), _probe("elsewhere")
    stream = _Stream()
    with _compile.announce_compilation(stream):
        other(1.0)
    assert stream.text == ""
    with _compile.announce_compilation(stream):
        kernel(1.0)  # compiles
        kernel(1)  # compiles a second specialisation
    assert stream.text == _compile.NOTICE + "\n"
    with _compile.announce_compilation(stream):
        kernel(2.0)  # already compiled
    assert stream.text == _compile.NOTICE + "\n"
    with _compile.announce_compilation(None):
        kernel(np.float32(1.0))
    assert stream.text == _compile.NOTICE + "\n"
    with _compile.recording_compilations() as compiled:
        kernel(1j)
        other(1j)
        kernel(3j)
    assert compiled == ["fastrnn._probe._probe.<locals>.double"]
