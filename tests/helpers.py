"""Builders with tiny defaults for tests."""

from __future__ import annotations

import functools
import inspect
import os
from pathlib import Path

import jaxtyping

from neurorit_lens.data.schema import Label, Passage, QAExample
from neurorit_lens.models.tiny import tiny_model

# The real data sets, read in place from ../shared/data next to the checkout (never copied);
# NEURORIT_SHARED_DATA points elsewhere.
SHARED_DATA = Path(os.environ.get("NEURORIT_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


@functools.lru_cache(maxsize=8)
def cached_tiny_model(n_layers: int = 2, d_mlp: int = 64, gated: bool = False, seed: int = 0):
    """A shared tiny model (do not mutate it; use ``tiny_model`` for a fresh one)."""
    return tiny_model(n_layers=n_layers, d_mlp=d_mlp, gated=gated, seed=seed)


def make_example(i: int = 0, n_irrelevant: int = 3, counterfactual: bool = False) -> QAExample:
    passages = [Passage(f"The capital of Zarnia{i} is Velmor{i}.", title=f"Zarnia{i}", label=Label.RELEVANT,
                        has_answer=True)]
    passages += [Passage(f"Trains in Brindle{j} run on time every day.", title=f"Brindle{j}", label=Label.IRRELEVANT,
                         has_answer=False) for j in range(n_irrelevant)]
    if counterfactual:
        passages.append(Passage(f"The capital of Zarnia{i} is Quell{i}.", label=Label.COUNTERFACTUAL, has_answer=False))
    return QAExample(id=f"q{i}", question=f"What is the capital of Zarnia{i}?", answers=[f"Velmor{i}"],
                     passages=passages, source="test")


def make_examples(n: int = 6, **kw) -> list[QAExample]:
    return [make_example(i, **kw) for i in range(n)]


def unchecked(fn):
    """``fn`` without the test suite's run-time type checker (tests/conftest.py), to test the
    function's own ValueError on an input of the wrong type, as a user without the checker meets it."""
    return inspect.unwrap(fn)


# A config field typed as a Literal rejects a value outside it twice over: the run-time type checker
# the suite installs (tests/conftest.py) raises TypeCheckError first; without it (as users run),
# ``__post_init__`` raises ValueError naming the allowed values.
BAD_CHOICE = (ValueError, jaxtyping.TypeCheckError)
