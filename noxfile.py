"""Sessions: tests (default), lint, demo, bench, fuzz, mutants. Each installs what it needs."""

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
