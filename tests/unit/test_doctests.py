"""The ``>>>`` examples in neurorit_lens's docstrings run as tests (with the suite's run-time
type checker on, see conftest), so the examples a reader copies stay true."""

from __future__ import annotations

import doctest
import importlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
MODULES = sorted(
    ".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
    for p in (ROOT / "neurorit_lens").rglob("*.py")
    if ">>>" in p.read_text(encoding="utf-8")
)


def _doctests(name: str) -> list[doctest.DocTest]:
    """The module's doctests; functions wrapped by the type checker are unwrapped to be found."""
    mod = importlib.import_module(name)
    finder = doctest.DocTestFinder()
    tests = {t.name: t for t in finder.find(mod, name)}
    for attr, val in vars(mod).items():
        inner = getattr(val, "__wrapped__", None)
        if inner is not None and getattr(val, "__module__", None) == name and val.__doc__:
            while getattr(inner, "__wrapped__", None) is not None:
                inner = inner.__wrapped__
            for t in finder.find(inner, f"{name}.{attr}", module=mod, globs=vars(mod)):
                tests.setdefault(t.name, t)
    return [t for t in tests.values() if t.examples]


def test_modules_found():
    assert "neurorit_lens.hooks" in MODULES and "neurorit_lens.models" in MODULES


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    tests = _doctests(name)
    assert tests, f"{name} has '>>>' but no doctest was found"
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    report: list[str] = []
    for t in sorted(tests, key=lambda t: t.name):
        runner.run(t, out=report.append)
    result = runner.summarize(verbose=False)
    assert result.failed == 0, "".join(report)
