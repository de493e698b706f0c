"""The one prompt path: every stage builds the same prompt for the same example and setting."""

from __future__ import annotations

import pytest

import neurorit_lens.evaluation.evaluate as evaluation
from neurorit_lens.ablation.measure import build_context_prompts
from neurorit_lens.config import DataConfig, EvalConfig, TrainConfig
from neurorit_lens.data import build_instances
from neurorit_lens.data.build import build_prompts, prompt_budget
from neurorit_lens.neurons.mining import _condition_items
from neurorit_lens.training.items import build_train_items
from neurorit_lens.viz.views import answer_text, passage_prompt
from tests.helpers import cached_tiny_model, make_examples

SETTINGS = ("gold", "gold+2", "noise=0.8", "irrelevant")
DATA = DataConfig(n_passages=3, max_prompt_tokens=180)  # gold fits, gold+2 and irrelevant are cut


def _eval_prompts(model, examples, setting, monkeypatch) -> dict[str, str]:
    """The prompts ``evaluate`` hands to generation (captured, nothing generated)."""
    seen: dict[str, str] = {}

    def capture(model, instances, prompts, cfg, show_progress=True):
        seen.update({inst.id: p for inst, p in zip(instances, prompts, strict=True)})
        return []

    monkeypatch.setattr(evaluation, "evaluate_prompts", capture)
    evaluation.evaluate(model, examples, EvalConfig(settings=(setting,)), DATA, show_progress=False)
    return seen


@pytest.mark.parametrize("setting", SETTINGS)
def test_every_stage_builds_the_same_prompt(setting, monkeypatch):
    model = cached_tiny_model()
    examples = make_examples(6, n_irrelevant=4)
    want = _eval_prompts(model, examples, setting, monkeypatch)
    assert len(want) == 6
    ref = build_prompts(examples, setting, model.tokenizer, DATA)
    assert dict(zip(ref.ids, ref.prompts, strict=True)) == want
    conts = dict(zip(ref.ids, ref.continuations, strict=True))
    if setting != "gold":
        assert ref.n_truncated == 6  # the budget rule was exercised
    # ablation (it generates max_new_tokens too: same reserve as evaluation)
    ctx = build_context_prompts(model, examples, setting, "noisy", DATA, reserve_tokens=16)
    assert dict(zip(ctx.ids, ctx.prompts, strict=True)) == want
    assert dict(zip(ctx.ids, ctx.continuations, strict=True)) == conts
    # mining
    items, excluded, _ = _condition_items(model, examples, setting, DATA)
    assert excluded["n"] == 0
    assert {it.id: it.prompt for it in items} == want and {it.id: it.answer for it in items} == conts
    # views: the instance's passages, in order, through passage_prompt
    for inst in build_instances(examples, setting, DATA.n_passages, DATA.seed).instances:
        got = passage_prompt(model, inst.example, inst.passages, DATA.template, DATA.max_prompt_tokens)
        assert got == want[inst.id]
        assert answer_text(model, inst.example.answer, DATA.template) == conts[inst.id]


@pytest.mark.parametrize("cfg", [TrainConfig(noise_ratios=(0.8,), irrelevant_only_fraction=0.0, seed=DATA.seed),
                                 TrainConfig(irrelevant_only_fraction=1.0, seed=DATA.seed)])
def test_training_items_use_the_same_prompts(cfg, monkeypatch):
    model = cached_tiny_model()
    examples = make_examples(6, n_irrelevant=4)
    td = build_train_items(examples, model.tokenizer, cfg, DATA)
    settings = {it.setting for it in td.items}
    assert len(td) == 6 and len(settings) == 1  # one group: its seed is cfg.seed * 1000 + 0 == DATA.seed
    want = _eval_prompts(model, examples, settings.pop(), monkeypatch)
    assert {it.id: it.prompt for it in td.items} == want
    # with the model's context passed, the budget is the same while it fits
    assert build_train_items(examples, model.tokenizer, cfg, DATA, n_ctx=model.cfg.n_ctx).items == td.items


def test_budget_rule_caps_at_context_minus_generated_tokens():
    assert prompt_budget(512, 2048, 16) == 512
    assert prompt_budget(512, 300, 16) == 284
    assert prompt_budget(512, None, 16) == 512
    with pytest.raises(ValueError, match="reserve_tokens"):
        prompt_budget(512, 300, -1)
    model = cached_tiny_model()
    ps = build_prompts(make_examples(2, n_irrelevant=4), "gold+2", model.tokenizer, DataConfig(n_passages=3),
                       n_ctx=200, reserve_tokens=16)
    assert ps.budget == 184 and max(ps.n_tokens) <= 184 and ps.n_truncated == 2


def test_skipped_examples_are_counted():
    model = cached_tiny_model()
    ps = build_prompts(make_examples(3, n_irrelevant=1), "gold+2", model.tokenizer, DATA)
    assert len(ps) == 0 and ps.n_skipped == 3 and ps.skipped_reasons == {"not_enough_irrelevant": 3}
    assert ps.template == "chat" and ps.setting == "gold+2"
