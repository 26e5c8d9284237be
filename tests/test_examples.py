"""The examples/ scripts run as a user runs them: in a subprocess, in quick mode.

digits.py needs scikit-learn, which is a test dependency: its test fails rather
than skips when scikit-learn is missing, so CI cannot silently stop covering it.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLES_DIR = os.path.join(REPO_ROOT, "examples")
# Generous: a cold numba cache compiles every kernel the example touches.
TIMEOUT_S = 600


def run_python(args):
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [REPO_ROOT, env.get("PYTHONPATH")]))
    return subprocess.run([sys.executable, *args], cwd=REPO_ROOT, env=env, capture_output=True,
                          text=True, timeout=TIMEOUT_S)


def run_example(name, *args):
    result = run_python([os.path.join(EXAMPLES_DIR, name), *args])
    assert result.returncode == 0, (
        f"{name} {' '.join(args)} exited {result.returncode}\n"
        f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}")
    return result.stdout


EXAMPLES = ["char_rnn.py", "adding_problem.py", "digits.py", "forecast.py"]


@pytest.mark.parametrize("name", EXAMPLES)
def test_help(name):
    out = run_example(name, "--help")
    assert out.startswith("usage:")
    for flag in ("--quick", "--seed"):
        assert flag in out


def test_char_rnn_quick(tmp_path):
    checkpoint = tmp_path / "chars.npz"
    out = run_example("char_rnn.py", "--quick", "--seed", "1", "--save", str(checkpoint))
    assert re.search(r"trained \d+ steps in .* validation loss \d+\.\d+ nats/char", out)
    assert "--- sample at temperature 0.7 ---" in out
    assert "--- sample at temperature 1.0 ---" in out
    assert "fastrnn.load reproduces the sample: yes" in out
    assert checkpoint.is_file()


def test_char_rnn_reads_a_text_file(tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("the quick brown fox jumps over the lazy dog. " * 400, encoding="utf-8")
    out = run_example("char_rnn.py", "--quick", "--text", str(corpus), "--prime", "the ")
    assert f"corpus: {corpus}: 18,000 characters, 28 distinct" in out
    assert "--- sample at temperature 0.7 ---\nthe " in out


def test_adding_problem_quick(tmp_path):
    plot = tmp_path / "curves.png"
    out = run_example("adding_problem.py", "--quick", "--plot", str(plot))
    assert re.search(r"predicting 1\.0 scores MSE 0\.1\d+", out)
    for cell in ("RNN", "LSTM"):
        assert re.search(rf"{cell}: MSE < 0\.01 (after \d+ steps|not reached in \d+ steps); "
                         r"final test MSE \d+\.\d+", out), out
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        assert "matplotlib is not installed: skipping the plot" in out
        assert not plot.exists()
    else:
        assert f"saved loss curves to {plot}" in out
        assert plot.read_bytes().startswith(b"\x89PNG")


def test_digits_quick():
    out = run_example("digits.py", "--quick")
    match = re.search(r"test accuracy (\d+\.\d+)%", out.split("\n\n")[-1])
    assert match, out
    # Two small epochs are far above chance (10%).
    assert float(match.group(1)) > 30.0


def test_digits_without_scikit_learn_says_how_to_install_it():
    # sys.modules[name] = None makes `import sklearn` raise ImportError.
    script = os.path.join(EXAMPLES_DIR, "digits.py")
    result = run_python(["-c", "import runpy, sys; sys.modules['sklearn'] = None; "
                               f"sys.argv = [{script!r}, '--quick']; "
                               f"runpy.run_path({script!r}, run_name='__main__')"])
    assert result.returncode == 2
    assert "pip install scikit-learn" in result.stderr


def test_forecast_quick():
    out = run_example("forecast.py", "--quick")
    model = re.search(r"LSTM model:\s+(\d+\.\d+)", out)
    naive = re.search(r"naive last-value baseline:\s+(\d+\.\d+)", out)
    assert model and naive, out
    assert "test RMSE over" in out
