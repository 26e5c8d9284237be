"""tools/mutants.py keeps up with the code: every mutant's snippet occurs exactly
once in its file (else `nox -s mutants` stops on it as stale) and its tests exist.
Running the mutants themselves takes minutes: `nox -s mutants`."""

import importlib.util
import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _mutants():
    spec = importlib.util.spec_from_file_location("mutants", os.path.join(ROOT, "tools",
                                                                          "mutants.py"))
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("mutants", module)  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module.MUTANTS


@pytest.mark.parametrize("mutant", _mutants(), ids=lambda mutant: mutant.id)
def test_mutant_applies_once_and_names_existing_tests(mutant):
    with open(os.path.join(ROOT, mutant.path)) as source:
        assert source.read().count(mutant.original) == 1, "stale: snippet not found once"
    assert mutant.original != mutant.replacement
    for target in mutant.tests:
        assert os.path.isfile(os.path.join(ROOT, target.split("::")[0])), target
