"""The command line: every subcommand runs, and bad input exits 2 with one clear line."""

import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def fastrnn(*args, timeout=240):
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, "-m", "fastrnn", *args], capture_output=True,
                          text=True, timeout=timeout, cwd=ROOT, env=env)


@pytest.fixture
def corpus(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_text("the quick brown fox jumps over the lazy dog. " * 40)
    return path


@pytest.mark.parametrize("command", ["demo", "train", "sample", "gradcheck", "bench"])
def test_every_command_has_help(command):
    result = fastrnn(command, "--help")
    assert result.returncode == 0
    assert "usage: fastrnn " + command in result.stdout


def test_gradcheck_passes_and_fails_with_the_right_exit_code():
    passed = fastrnn("gradcheck", "--cell", "gru", "--layers", "2", "--bidirectional",
                     "--lengths")
    assert passed.returncode == 0, passed.stderr
    assert "gradcheck PASSED" in passed.stdout and "weight_hh_l1_reverse" in passed.stdout
    # Zero tolerance cannot be met by finite differences: the command must say so.
    failed = fastrnn("gradcheck", "--cell", "lstm", "--atol", "0", "--rtol", "0")
    assert failed.returncode == 1
    assert "gradcheck FAILED" in failed.stdout


def test_train_then_sample_from_the_checkpoint(corpus, tmp_path):
    checkpoint = tmp_path / "model.fastrnn"
    trained = fastrnn("train", "--text", str(corpus), "--steps", "3", "--out", str(checkpoint),
                      "--hidden-size", "16", "--window", "16", "--batch-size", "4")
    assert trained.returncode == 0, trained.stderr
    assert checkpoint.is_file()
    sampled = fastrnn("sample", str(checkpoint), "-n", "40", "--prime", "the ", "--seed", "3")
    assert sampled.returncode == 0, sampled.stderr
    assert sampled.stdout.startswith("the ") and len(sampled.stdout.rstrip("\n")) == 44
    again = fastrnn("sample", str(checkpoint), "-n", "40", "--prime", "the ", "--seed", "3")
    assert again.stdout == sampled.stdout  # seeded sampling is reproducible
    resumed = fastrnn("train", "--text", str(corpus), "--steps", "2", "--out",
                      str(checkpoint), "--resume", str(checkpoint), "--window", "16",
                      "--batch-size", "4")
    assert resumed.returncode == 0, resumed.stderr


def test_demo_runs_on_a_given_corpus(corpus):
    result = fastrnn("demo", "--text", str(corpus), "--seconds", "1", "--hidden-size", "16",
                     "--window", "16", "--batch-size", "4", "-n", "20")
    assert result.returncode == 0, result.stderr
    assert "step" in result.stdout and "sample, temperature" in result.stdout


def test_bench_prints_a_table():
    result = fastrnn("bench", "--shape", "5,2,3,4", "--cells", "rnn", "--mode", "forward",
                     "--repeats", "1")
    assert result.returncode == 0, result.stderr
    assert "fastrnn ms" in result.stdout and "5,2,3,4" in result.stdout


@pytest.mark.parametrize("args, message", [
    (["train", "--text", "no/such/file.txt", "--out", "x.fastrnn"], "no/such/file.txt"),
    (["sample", "no/such/model.fastrnn"], "no checkpoint file"),
    (["train", "--text", "{corpus}", "--out", "{tmp}/missing/dir/m.fastrnn", "--steps", "1",
      "--window", "8", "--batch-size", "2"], "does not exist"),
    (["train", "--text", "{corpus}", "--out", "{tmp}/m.fastrnn", "--steps", "0"], "steps"),
    (["train", "--text", "{corpus}", "--out", "{tmp}/m.fastrnn", "--hidden-size", "0"],
     "hidden_size"),
    (["sample", "{corpus}"], "not a fastrnn checkpoint"),
    (["sample", "{tmp}/m.fastrnn", "--temperature", "0"], None),
    (["gradcheck", "--steps", "0"], "time step"),
    (["bench", "--shape", "1,2,3"], "shape"),
])
def test_bad_input_exits_2_with_one_clear_line(args, message, corpus, tmp_path):
    args = [a.format(corpus=corpus, tmp=tmp_path) for a in args]
    if args[:2] == ["sample", f"{tmp_path}/m.fastrnn"]:
        made = fastrnn("train", "--text", str(corpus), "--out", args[1], "--steps", "1",
                       "--hidden-size", "8", "--window", "8", "--batch-size", "2")
        assert made.returncode == 0, made.stderr
        message = "temperature"
    result = fastrnn(*args)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert message in result.stderr
    assert not os.path.exists(tmp_path / "missing")
