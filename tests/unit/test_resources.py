"""A batch that would not fit in memory is split with a warning, with identical results."""

from __future__ import annotations

import logging

import pytest

from neurorit_lens.models import resources
from neurorit_lens.models.generation import generate_greedy
from neurorit_lens.models.resources import fit_batch_size, generation_bytes_per_row
from tests.helpers import cached_tiny_model


def test_fit_batch_size_splits_with_warning(caplog):
    with caplog.at_level(logging.WARNING):
        assert fit_batch_size(8, bytes_per_row=100, budget=350) == 3
    assert "split into batches of 3" in caplog.text
    assert fit_batch_size(8, bytes_per_row=100, budget=10_000) == 8
    assert fit_batch_size(8, bytes_per_row=10**12, budget=10) == 1
    with pytest.raises(ValueError):
        fit_batch_size(0, 1)


def test_generation_bytes_grow_with_length():
    cfg = cached_tiny_model().cfg
    assert 0 < generation_bytes_per_row(cfg, 10) < generation_bytes_per_row(cfg, 100)


def test_generation_under_a_tiny_memory_budget_splits_and_matches(monkeypatch, caplog):
    model = cached_tiny_model()
    prompts = ["Question: capital of Zarnia?", "Who wrote the report?", "Trains in Brindle", "The river Quell"]
    ref = generate_greedy(model, prompts, max_new_tokens=4, batch_size=4, show_progress=False)
    monkeypatch.setattr(resources, "available_bytes", lambda device="cpu": 2 * generation_bytes_per_row(model.cfg, 20))
    with caplog.at_level(logging.WARNING):
        got = generate_greedy(model, prompts, max_new_tokens=4, batch_size=4, show_progress=False)
    assert "split into batches" in caplog.text
    assert got == ref
