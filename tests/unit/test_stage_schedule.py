"""neurorit's stage schedule and data order, and the targets of irrelevant-only training items."""

from __future__ import annotations

import math

import pytest

from neurorit_lens.config import DataConfig, TrainConfig
from neurorit_lens.models import tiny_model, tiny_tokenizer
from neurorit_lens.training.items import TrainItem, build_train_items
from neurorit_lens.training.methods import train
from neurorit_lens.training.plans import plan_method, schedule_mass
from neurorit_lens.training.trainer import Trainer
from tests.helpers import BAD_CHOICE, make_examples
from tests.unit.test_training import I_EXCL, ITEMS, R_EXCL

SETS = {"R_excl": R_EXCL, "I_excl": I_EXCL}


def _cfg(**kw) -> TrainConfig:
    base = dict(steps=10, batch_size=2, lr=1e-2, warmup_steps=3, checkpoint_every=0, eval_every=0, seed=0,
                n_target_layers=1)
    base.update(kw)
    return TrainConfig(**base)


def naive_cosine_mass(total: int, warmup: int) -> float:
    """Sum over ``total`` steps of the warmup + cosine multiplier, written out independently."""
    mass = 0.0
    for s in range(total):
        if s < warmup:
            mass += (s + 1) / warmup
        else:
            mass += 0.5 * (1 + math.cos(math.pi * (s - warmup) / (total - warmup)))
    return mass


def _logged_mass(res, base_lr: dict[str, float]) -> dict[str, float]:
    out: dict[str, float] = {}
    for o in res.log:
        out[o.stage] = out.get(o.stage, 0.0) + o.lr / base_lr[o.stage]
    return out


def test_continuous_schedule_gives_neurorit_the_schedule_mass_of_layers():
    cfg = _cfg(stage_schedule="continuous", stage1_lr=5e-2, stage1_steps=4)
    runs = {}
    for method in ("neurorit", "layers"):
        runs[method] = train(tiny_model(seed=3), ITEMS, None, SETS, None, cfg.replace(method=method),
                             progress=False, save_model=False)
    neuro = _logged_mass(runs["neurorit"], {"stage1": 5e-2, "stage2": 1e-2})
    layers = _logged_mass(runs["layers"], {"layers": 1e-2})
    want = naive_cosine_mass(10, 3)
    assert neuro["stage1"] + neuro["stage2"] == pytest.approx(want, abs=1e-9)
    assert layers["layers"] == pytest.approx(want, abs=1e-9)
    assert runs["neurorit"].stage_steps == {"stage1": 4, "stage2": 6}
    # stage 1 trains at its own rate, stage 2 at --lr; the warmup happens once
    lrs = [o.lr for o in runs["neurorit"].log]
    assert lrs[:3] == pytest.approx([5e-2 / 3, 2 * 5e-2 / 3, 5e-2])
    assert lrs[4] == pytest.approx(1e-2 * 0.5 * (1 + math.cos(math.pi * 1 / 7)))
    plan = plan_method(tiny_model(), "neurorit", SETS, None, cfg)
    assert sum(schedule_mass(plan, cfg).values()) == pytest.approx(want, abs=1e-9)


def test_per_stage_schedule_is_the_default_and_warms_up_twice():
    cfg = _cfg()
    assert TrainConfig().stage_schedule == "per_stage" and TrainConfig().stage1_lr is None
    plan = plan_method(tiny_model(), "neurorit", SETS, None, cfg)
    assert [(s.steps, s.lr, s.continue_from) for s in plan.stages] == [(5, None, None), (5, None, None)]
    mass = schedule_mass(plan, cfg)
    assert mass["stage1"] == pytest.approx(naive_cosine_mass(5, 3))
    assert mass["stage2"] == pytest.approx(naive_cosine_mass(5, 3))
    res = train(tiny_model(seed=3), ITEMS, None, SETS, None, cfg, progress=False, save_model=False)
    assert [o.lr for o in res.log[5:8]] == pytest.approx([1e-2 / 3, 2e-2 / 3, 1e-2])


def test_continuous_stage2_continues_the_data_order():
    cfg = _cfg(steps=6)
    whole = Trainer(tiny_model(), ITEMS, cfg, progress=False)
    part = Trainer(tiny_model(), ITEMS, cfg, steps=2, continue_from=(4, 6), progress=False)
    assert [part.batch_indices(s) for s in range(2)] == [whole.batch_indices(s) for s in (4, 5)]
    with pytest.raises(ValueError, match="continue_from"):
        Trainer(tiny_model(), ITEMS, cfg, steps=3, continue_from=(4, 6), progress=False)


ITEMS12 = [TrainItem(f"Question: Who founded Quorn{i}? Answer:", f" Tamsel{i}", id=f"f{i}") for i in range(12)]


def _logged_items(res) -> list[list[int]]:
    return [o.items for o in res.log]


def test_stage2_continues_the_data_order_by_default():
    """No item is read twice before every item was read once, and neurorit reads layers' items in layers' order."""
    cfg = _cfg(steps=6, stage1_steps=2)  # 6 steps x 2 items = the 12 items once
    assert TrainConfig().stage2_data == "continue"
    neuro = train(tiny_model(seed=3), ITEMS12, None, SETS, None, cfg, progress=False, save_model=False)
    layers = train(tiny_model(seed=3), ITEMS12, None, SETS, None, cfg.replace(method="layers"), progress=False,
                   save_model=False)
    seen = [i for step in _logged_items(neuro) for i in step]
    assert sorted(seen) == list(range(12))
    assert _logged_items(neuro) == _logged_items(layers)
    assert [o.stage for o in neuro.log] == ["stage1"] * 2 + ["stage2"] * 4


def test_stage2_data_restart_rereads_stage1_items():
    cfg = _cfg(steps=6, stage1_steps=2, stage2_data="restart")
    res = train(tiny_model(seed=3), ITEMS12, None, SETS, None, cfg, progress=False, save_model=False)
    logged = _logged_items(res)
    assert logged[2:4] == logged[0:2]  # stage 2's first batches are stage 1's
    with pytest.raises(BAD_CHOICE, match="continue"):
        TrainConfig(stage2_data="again")


def test_stage1_extra_gives_stage2_exactly_the_layers_run():
    cfg = _cfg(stage_schedule="stage1_extra", stage1_steps=4, stage1_lr=5e-2)
    neuro = train(tiny_model(seed=3), ITEMS12, None, SETS, None, cfg, progress=False, save_model=False)
    layers = train(tiny_model(seed=3), ITEMS12, None, SETS, None, cfg.replace(method="layers"), progress=False,
                   save_model=False)
    matched = train(tiny_model(seed=3), ITEMS12, None, SETS, None, cfg.replace(method="layers", steps=14),
                    progress=False, save_model=False)
    assert neuro.stage_steps == {"stage1": 4, "stage2": 10} and neuro.steps == 14
    stage2 = [o for o in neuro.log if o.stage == "stage2"]
    # stage 2 has layers' steps, warmup and decay, at layers' rate
    assert [o.lr for o in stage2] == pytest.approx([o.lr for o in layers.log], abs=0)
    assert _logged_mass(neuro, {"stage1": 5e-2, "stage2": 1e-2})["stage2"] == pytest.approx(naive_cosine_mass(10, 3))
    # stage 1 is a run of its own before it: 4 steps with their own warmup
    assert [o.lr for o in neuro.log[:3]] == pytest.approx([5e-2 / 3, 2 * 5e-2 / 3, 5e-2])
    # the compute-matched control reads the same items in the same order
    assert _logged_items(neuro) == _logged_items(matched)
    plan = plan_method(tiny_model(), "neurorit", SETS, None, cfg)
    assert schedule_mass(plan, cfg)["stage2"] == pytest.approx(naive_cosine_mass(10, 3))
    frac = plan_method(tiny_model(), "neurorit", SETS, None, cfg.replace(stage1_steps=None, stage1_fraction=0.25))
    assert [s.steps for s in frac.stages] == [round(10 * 0.25), 10]


def test_stage1_neurons_random_keeps_counts_and_target_layers():
    cfg = _cfg()
    real = plan_method(tiny_model(), "neurorit", SETS, None, cfg)
    rand = plan_method(tiny_model(), "neurorit", SETS, None, cfg.replace(stage1_neurons="random"))
    assert rand.trained_neurons.counts_per_layer() == R_EXCL.counts_per_layer()
    assert not (rand.trained_neurons & (R_EXCL | I_EXCL))
    assert rand.target_layers == real.target_layers and rand.trainable_params == real.trainable_params
    assert rand.deactivated == real.deactivated
    with pytest.raises(BAD_CHOICE, match="r_excl"):
        TrainConfig(stage1_neurons="all")


def test_stage1_steps_and_bad_values():
    plan = plan_method(tiny_model(), "neurorit", SETS, None, _cfg(stage1_steps=7))
    assert [s.steps for s in plan.stages] == [7, 3]
    with pytest.raises(ValueError, match="stage1_steps=10 leaves no step"):
        plan_method(tiny_model(), "neurorit", SETS, None, _cfg(stage1_steps=10))
    with pytest.raises(ValueError, match="stage1_steps"):
        TrainConfig(stage1_steps=0)
    with pytest.raises(ValueError, match="stage1_lr"):
        TrainConfig(stage1_lr=0.0)
    with pytest.raises(BAD_CHOICE, match="per_stage"):
        TrainConfig(stage_schedule="both")
    with pytest.raises(BAD_CHOICE, match="abstain"):
        TrainConfig(irrelevant_target="guess")
    with pytest.raises(ValueError, match="abstain_answer"):
        TrainConfig(abstain_answer="  ")


# --- targets of irrelevant-only items ---------------------------------------------------------
DATA = DataConfig(n_passages=4, template="plain")


@pytest.mark.parametrize("target", ["gold", "abstain", "drop"])
def test_irrelevant_target_builds_the_right_items(target):
    exs = make_examples(10, n_irrelevant=3)
    cfg = TrainConfig(noise_ratios=(0.0, 0.8), irrelevant_only_fraction=0.2, irrelevant_target=target,
                      abstain_answer="No idea.")
    td = build_train_items(exs, tiny_tokenizer(), cfg, DATA)
    gold_td = build_train_items(exs, tiny_tokenizer(), cfg.replace(irrelevant_target="gold"), DATA)
    noisy = [it for it in td.items if it.setting != "irrelevant"]
    irr = [it for it in td.items if it.setting == "irrelevant"]
    # the noisy items are the same whatever the target
    assert noisy == [it for it in gold_td.items if it.setting != "irrelevant"] and len(noisy) == 10
    for it in noisy:
        assert it.answer == " " + exs[int(it.id[1:])].answer
    if target == "drop":
        assert irr == [] and td.n_dropped == 2 and "irrelevant" not in td.settings
        assert td.to_dict()["n_dropped"] == 2
        return
    assert len(irr) == 2 and td.settings["irrelevant"] == 2 and td.n_dropped == 0
    gold_irr = [it for it in gold_td.items if it.setting == "irrelevant"]
    assert [it.prompt for it in irr] == [it.prompt for it in gold_irr]
    for it in irr:
        assert it.answer == (" No idea." if target == "abstain" else " " + exs[int(it.id[1:])].answer)


def test_drop_with_only_irrelevant_items_is_a_clear_error():
    cfg = TrainConfig(irrelevant_only_fraction=1.0, irrelevant_target="drop")
    with pytest.raises(ValueError, match="irrelevant_target='drop'"):
        build_train_items(make_examples(4), tiny_tokenizer(), cfg, DATA)


def test_abstain_items_train_end_to_end():
    cfg = _cfg(method="layers", steps=2, irrelevant_target="abstain", irrelevant_only_fraction=0.5)
    res = train(tiny_model(seed=1), make_examples(4), make_examples(2), SETS, None, cfg, DATA,
                progress=False, save_model=False)
    assert res.data["train"]["settings"]["irrelevant"] == 4 and len(res.log) == 2
