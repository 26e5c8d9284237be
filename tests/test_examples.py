"""The examples/ scripts run as a user runs them: in a subprocess, in quick mode.

digits.py needs scikit-learn, which is a test dependency: its test fails rather
than skips when scikit-learn is missing, so CI cannot silently stop covering it.
"""

from __future__ import annotations

import math
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


def assert_char_model_learned(out):
    """Training lowered the loss, and the held-out loss beats the uniform guess over the
    vocabulary (ln of the number of distinct characters), with nats and bits agreeing."""
    distinct = int(re.search(r"characters, (\d+) distinct", out).group(1))
    logged = [float(v) for v in re.findall(r"step +\d+  loss (\d+\.\d+) nats/char", out)]
    summary = re.search(r"trained (\d+) steps in .*; final train loss (\d+\.\d+), "
                        r"validation loss (\d+\.\d+) nats/char \((\d+\.\d+) bits/char\)", out)
    assert summary and len(logged) >= 2, out
    steps, final, valid, bits = (int(summary.group(1)), float(summary.group(2)),
                                 float(summary.group(3)), float(summary.group(4)))
    assert steps == 30  # --quick
    assert final == logged[-1] < logged[0]
    assert valid < math.log(distinct), (valid, distinct)
    assert bits == pytest.approx(valid / math.log(2), abs=0.01)


def test_char_rnn_quick(tmp_path):
    checkpoint = tmp_path / "chars.npz"
    out = run_example("char_rnn.py", "--quick", "--seed", "1", "--save", str(checkpoint))
    assert_char_model_learned(out)
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
    assert_char_model_learned(out)


def test_adding_problem_quick(tmp_path):
    plot = tmp_path / "curves.png"
    out = run_example("adding_problem.py", "--quick", "--plot", str(plot))
    trivial = re.search(r"predicting 1\.0 scores MSE (0\.1\d+)", out)
    assert trivial, out
    trivial = float(trivial.group(1))
    # The sum of two U(0, 1) numbers has variance 1/6: predicting its mean 1.0 scores that,
    # up to the sampling error of 200 test sequences (sd of the estimate ~0.011).
    assert abs(trivial - 1 / 6) < 0.05
    steps = int(re.search(r"(\d+) steps per model", out).group(1))
    for cell in ("RNN", "LSTM"):
        match = re.search(rf"{cell}: MSE < 0\.01 (after (\d+) steps|not reached in (\d+) "
                          r"steps); final test MSE (\d+\.\d+) \((\d+\.\d+)% of trivial\)", out)
        assert match, out
        if match.group(2):
            assert 1 <= int(match.group(2)) <= steps
        else:
            assert int(match.group(3)) == steps
        mse, percent = float(match.group(4)), float(match.group(5))
        assert percent == pytest.approx(100 * mse / trivial, abs=0.1)
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
    n_test = int(re.search(r"(\d+) test images", out).group(1))
    match = re.search(r"train accuracy (\d+\.\d+)%, test accuracy (\d+\.\d+)% "
                      r"\((\d+)/(\d+) correct\)", out.split("\n\n")[-1])
    assert match, out
    train, test = float(match.group(1)), float(match.group(2))
    correct, total = int(match.group(3)), int(match.group(4))
    assert total == n_test
    assert test == pytest.approx(100 * correct / total, abs=0.005)
    # Two small epochs are far above chance (10%).
    assert train > 30.0 and test > 30.0


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
    ratio = re.search(r"model / baseline:\s+(\d+\.\d+) \((better|worse) than the baseline\)",
                      out)
    assert model and naive and ratio, out
    model, naive = float(model.group(1)), float(naive.group(1))
    # 1000 samples, the last quarter for testing: windows of 48 + 1 leave 202 forecasts.
    assert "test RMSE over 202 forecasts" in out
    # 150 quick steps already beat the naive forecast clearly (0.34-0.44 of its RMSE
    # for seeds 0-5, 0.39 at the default seed 0).
    assert model < 0.7 * naive, out
    assert float(ratio.group(1)) == pytest.approx(model / naive, abs=0.002)
    assert ratio.group(2) == "better"
