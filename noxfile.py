"""Sessions: tests (default), lint, demo, bench, bench_compare, fuzz, mutants. Each
installs what it needs."""

import os
import subprocess
import tempfile

import nox

nox.options.sessions = ["tests"]
nox.options.reuse_existing_virtualenvs = True

# The CPU build of torch, the parity peer (any other spec may pull a CUDA build),
# and JAX (CPU), the other benchmark peer, whose cell the bench tests check.
TORCH = "torch==2.13.0"
JAX = "jax>=0.4.30"


@nox.session
def tests(session):
    """The test suite, torch parity tests included."""
    session.install("-e", ".[test]", TORCH, JAX)
    session.run("python", "-m", "pytest", *session.posargs)


@nox.session
def lint(session):
    session.install("ruff")
    session.run("ruff", "check", ".")


@nox.session
def demo(session):
    """Train a character model on Python's own standard-library source and generate."""
    session.install(".")
    session.run("fastrnn", "demo", *session.posargs)


@nox.session
def bench(session):
    """The asv suite on the installed package (asv's existing-environment mode)."""
    session.install(".[bench]", TORCH, JAX)
    session.run("asv", "machine", "--yes")
    session.run("asv", "run", "--environment", "existing:python", "--quick",
                "--show-stderr", *session.posargs)


# Benchmark commands run with these unset (DESIGN.md: else numpy's BLAS runs an older kernel).
BENCH_ENV_UNSET = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
WORKING_TREE_REF = "refs/bench-compare/working-tree"
# What bench_compare compares: the timings. asv reads a rise of any benchmark as a
# regression, and the track_ ones (GFLOP/s, speed-up over a peer) rise when fastrnn
# gets faster; peakmem_ is the whole process's peak, which moves by 40-80 MB with
# whether numba compiled in that process (each commit's first benchmarks do).
TIMINGS = r"\.(time|timeraw)_"
# Processes per commit and benchmark (asv's rounds, interleaved between the two
# commits): the same code ran up to 1.4x apart from one process to the next on the
# 2-core VM, and with asv's default of 2 an identical copy of a commit was flagged
# at 1.26x; with 4 the same check passed (0.85-1.18x).
COMPARE_ROUNDS = 4


@nox.session
def bench_compare(session):
    """`asv continuous` between BASE and the working tree (uncommitted and untracked
    changes included); fails when a benchmark got slower by more than the factor.

    `nox -s bench_compare -- BASE [--factor F] [--bench REGEX ...] [asv options]`
    (default factor 1.2). Only the timings (time_, timeraw_) are compared; --bench
    narrows them further (several: any of them). Each commit runs each benchmark in
    COMPARE_ROUNDS processes unless `-a rounds=N` is given.
    Timings are noisy: not part of CI. Run it with OPENBLAS_CORETYPE and
    OPENBLAS_L2_SIZE unset (it unsets them for asv too).
    """
    base, factor, benches, rest = _bench_compare_args(session)
    if not any("rounds=" in item for item in rest):
        rest = ["--attribute", f"rounds={COMPARE_ROUNDS}", *rest]
    session.install("asv>=0.6", "virtualenv")
    tree = _working_tree_commit(session)
    env = {name: None for name in BENCH_ENV_UNSET}   # nox removes a variable set to None
    session.run("asv", "machine", "--yes", env=env)
    session.run("asv", "continuous", "--factor", factor, "--show-stderr",
                "--bench", _timings(benches), *rest, base, tree, env=env)


def _bench_compare_args(session):
    args = list(session.posargs)
    usage = "usage: nox -s bench_compare -- BASE [--factor F] [--bench REGEX ...] [asv options]"
    if not args or args[0].startswith("-"):
        session.error(usage)
    base, rest, factor, benches = args[0], [], "1.2", []
    items = iter(args[1:])
    for item in items:
        if item in ("--factor", "-f", "--bench", "-b"):
            value = next(items, None)
            if value is None:
                session.error(f"{item} needs a value; {usage}")
            if item in ("--factor", "-f"):
                factor = value
            else:
                benches.append(value)
        elif item.startswith("--factor="):
            factor = item.split("=", 1)[1]
        elif item.startswith("--bench="):
            benches.append(item.split("=", 1)[1])
        else:
            rest.append(item)
    try:
        if float(factor) <= 1:
            raise ValueError
    except ValueError:
        session.error(f"--factor must be a number above 1, got {factor!r}")
    return base, factor, benches, rest


def _timings(benches):
    """One asv --bench regex: the timings matching any of `benches`.

    asv matches it (re.search) against "name(param, ...)"."""
    wanted = "|".join(f"(?:{regex})" for regex in benches) or ""
    return f"^(?=.*(?:{wanted}))(?=.*{TIMINGS})"


def _working_tree_commit(session):
    """A commit of the working tree as it is (untracked files included, ignored ones
    not), made through a temporary index: the branch, the index and the files stay
    as they were. It is kept under WORKING_TREE_REF, so that asv's clone finds it.
    HEAD itself when nothing differs from it."""
    def git(*args, env=None):
        return subprocess.run(["git", *args], check=True, capture_output=True, text=True,
                              env=None if env is None else {**os.environ, **env}).stdout.strip()

    head = git("rev-parse", "HEAD")
    with tempfile.TemporaryDirectory() as folder:
        index = {"GIT_INDEX_FILE": os.path.join(folder, "index")}
        git("read-tree", "HEAD", env=index)
        git("add", "--all", ".", env=index)
        tree = git("write-tree", env=index)
    if tree == git("rev-parse", "HEAD^{tree}"):
        session.log(f"working tree = HEAD ({head[:8]})")
        return head
    identity = {f"GIT_{role}_{field}": value for role in ("AUTHOR", "COMMITTER")
                for field, value in (("NAME", "bench_compare"), ("EMAIL", "bench-compare@localhost"))}
    commit = git("commit-tree", tree, "-p", head, "-m", "bench_compare: the working tree",
                 env=identity)
    git("update-ref", WORKING_TREE_REF, commit)
    session.log(f"working tree = {commit[:8]} ({WORKING_TREE_REF}, HEAD {head[:8]} + changes)")
    return commit


@nox.session
def fuzz(session):
    """Run the fuzz test many times, each in its own process, so a crash is reported.

    `nox -s fuzz -- 20` sets the number of runs (default 10).
    """
    session.install("-e", ".[test]")
    runs = int(session.posargs[0]) if session.posargs else 10
    for seed in range(runs):
        session.run("python", "-m", "pytest", "-q", "-p", "no:cacheprovider",
                    "tests/test_fuzz.py", f"--hypothesis-seed={seed}",
                    env={"HYPOTHESIS_PROFILE": "fuzz"})


@nox.session
def mutants(session):
    """Hand-written mutants of the kernels and layers (tools/mutants.py), each in its
    own copy of the repository: every one must make its tests fail.

    `nox -s mutants -- ID ...` runs some, `-- --list` lists them, `-- --jobs 2`.
    """
    session.install("-e", ".[test]", TORCH, JAX)
    session.run("python", "tools/mutants.py", *session.posargs)
