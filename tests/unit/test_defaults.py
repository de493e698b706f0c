"""One source of defaults: a public function's keyword that mirrors a config field defaults to that field's default.

Checked for every function in ``neurorit_lens.__all__`` and every public function of the stage
modules (data, models, neurons, ablation, training, evaluation). A parameter mirrors a field
when it has the field's name (or a name in ``RENAMED``); the field is looked up in the config of
the function's stage (``STAGE_CONFIG``), else in the configs that have such a field (which must
then agree).
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import pkgutil

import pytest

import neurorit_lens
from neurorit_lens.config import AblationConfig, DataConfig, EvalConfig, MiningConfig, TrainConfig

CONFIGS = (DataConfig, EvalConfig, MiningConfig, AblationConfig, TrainConfig)
STAGE_CONFIG = {"neurorit_lens.data": DataConfig, "neurorit_lens.models": EvalConfig,
                "neurorit_lens.neurons": MiningConfig, "neurorit_lens.ablation": AblationConfig,
                "neurorit_lens.hooks": AblationConfig, "neurorit_lens.training": TrainConfig,
                "neurorit_lens.evaluation": EvalConfig}
STAGES = ("data", "models", "neurons", "ablation", "training", "evaluation")
# The harness's own statistics (2000 resamples), not a stage's.
SKIPPED_MODULES = ("neurorit_lens.evaluation.comparison",)
# (function, parameter) -> the config field it mirrors under another name.
RENAMED = {("select", "rule"): "selection", ("generate_greedy", "backend"): "generation_backend",
           ("generate_greedy_ids", "backend"): "generation_backend"}
# (function, parameter) with a field's name but another meaning -> what it means.
OTHER_MEANING = {
    ("aggregate", "template"): "a label for the result table",
    ("baseline_target", "layers"): "the layers zeroed (none: F of the model as is)",
    ("contrast_baseline_target", "layers"): "the layers patched (none: F of the noisy run)",
    ("build_prompts", "n_passages"): "none = each setting's own passage count",
    ("build_prompts", "seed"): "none = the data config's seed",
    ("add_distractors", "method"): "the distractor miner (DataConfig.distractors)",
    ("add_distractors_within_splits", "method"): "the distractor miner (DataConfig.distractors)",
    ("build_train_items", "seed"): "none = the train config's seed",
    ("run_plan", "lr"): "none = the plan's learning rate",
    ("evaluate_dev", "batch_size"): "the dev-loss batch, not the training micro-batch",
    ("save_trained_model", "sets"): "the mined sets to store (none = no sets)",
    ("wrong_answers", "max_new_tokens"): "mining's distracted definition: the wrong answer's length",
    ("neuron_page", "sets"): "the mined sets to show membership in (none = none)",
    ("neuron_pages", "sets"): "the mined sets to show membership in (none = none)",
    ("neuron_page", "limit"): "passages read for the page, not questions of a split",
    ("neuron_pages", "limit"): "passages read for the pages, not questions of a split",
    ("attribute", "precision"): "the resolved precision (fp32 or bf16); mine resolves MiningConfig's auto",
    ("contrast_attribute", "precision"): "the resolved precision (fp32 or bf16); mine resolves MiningConfig's auto",
}


def _default(cfg: type, name: str):
    f = {f.name: f for f in dataclasses.fields(cfg)}[name]
    return f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]


def _config_for(module: str, fn: str, param: str) -> tuple[type, str] | None:
    field = RENAMED.get((fn, param), param)
    having = [c for c in CONFIGS if field in {f.name for f in dataclasses.fields(c)}]
    if not having:
        return None
    own = next((c for prefix, c in STAGE_CONFIG.items() if module == prefix or module.startswith(prefix + ".")), None)
    if own in having:
        return own, field
    assert len({repr(_default(c, field)) for c in having}) == 1, \
        f"{module}.{fn}({param}): in {[c.__name__ for c in having]}; say which in STAGE_CONFIG"
    return having[0], field


def _public_functions():
    seen = {}
    for name in neurorit_lens.__all__:
        obj = getattr(neurorit_lens, name)
        if inspect.isfunction(obj):
            seen[(obj.__module__, obj.__name__)] = obj
    for stage in STAGES:
        pkg = importlib.import_module(f"neurorit_lens.{stage}")
        for info in pkgutil.walk_packages(pkg.__path__, f"{pkg.__name__}."):
            mod = importlib.import_module(info.name)
            for name, obj in vars(mod).items():
                if not name.startswith("_") and inspect.isfunction(obj) and obj.__module__ == mod.__name__:
                    seen[(obj.__module__, name)] = obj
    return {k: v for k, v in seen.items() if k[0] not in SKIPPED_MODULES}


FUNCTIONS = _public_functions()


def _mirrored(key, fn):
    module, name = key
    for p in inspect.signature(fn).parameters.values():
        if p.default is inspect.Parameter.empty or (name, p.name) in OTHER_MEANING:
            continue
        found = _config_for(module, name, p.name)
        if found is not None:
            yield p, found


@pytest.mark.parametrize("key", sorted(FUNCTIONS), ids=lambda k: f"{k[0]}.{k[1]}")
def test_function_defaults_equal_the_config_defaults(key):
    for p, (cfg, field) in _mirrored(key, FUNCTIONS[key]):
        want = _default(cfg, field)
        assert p.default == want, f"{key[0]}.{key[1]}({p.name}={p.default!r}): {cfg.__name__}.{field} is {want!r}"


def test_the_check_covers_the_functions_the_configs_feed():
    checked = {(k[1], p.name) for k, fn in FUNCTIONS.items() for p, _ in _mirrored(k, fn)}
    assert {("attribute", "method"), ("attribute", "steps"), ("completeness_gap", "method"),
            ("contrast_attribute", "method"), ("generate_greedy", "max_new_tokens"),
            ("generate_greedy_ids", "max_new_tokens"), ("generate_greedy", "backend"),
            ("select", "rule"), ("load_examples", "n_distractors"), ("ablation_hooks", "mode")} <= checked
    named = {(fn, p) for fn, p in OTHER_MEANING} | set(RENAMED)
    params = {(k[1], p) for k, fn in FUNCTIONS.items() for p in inspect.signature(fn).parameters}
    assert named <= params, f"stale entries: {named - params}"
