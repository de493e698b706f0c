"""The declared protocol of the method comparison (``neurorit compare``): configuration checks and amendments.

:func:`load_config` reads and checks one JSON configuration. :func:`check_protocol` writes
``protocol.json`` on the first run and refuses a changed configuration afterwards, except
for an *amendment* (``--amend``): a rerun may ADD ``prompted`` variants, the ``prompted``
method, ``cross_test`` sets, contrasts that name a method added by amendment, and
evaluation settings (appended to the global ``settings`` list or to a data set's own
``settings``; see :func:`amendment`).
``protocol.json`` keeps the configuration first declared (``config``, unchanged) and lists
each amendment (``amendments``: UTC time, the added keys, the configuration after it).
Contrasts added by amendment are exploratory (outside the Holm family of the declared
ones); so is every contrast row of a ``cross_test`` set added by amendment, and every row
at a setting added by amendment (:func:`amended_settings`).
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from neurorit_lens.config import DataConfig, EvalConfig
from neurorit_lens.data.settings import parse_setting
from neurorit_lens.experiments.config import CompareConfig, read_config_file
from neurorit_lens.experiments.grid import RULE_GRID, UNTRAINED, check_train_grid, trained
from neurorit_lens.io import atomic_write_json, read_json
from neurorit_lens.training.plans import METHODS

ROOT = Path(__file__).resolve().parents[2]  # the checkout, when run from one
REQUIRED = ("name", "model", "datasets", "settings", "methods", "contrasts", "seeds", "lr_grid", "train", "selection")
OPTIONAL = ("description", "device", "split_fractions", "data_seed", "n_passages", "max_prompt_tokens", "template",
            "n_distractors", "train_limit", "dev_limit", "test_limit", "extra_seeds", "mining", "mine_limit", "eval",
            "logprob", "n_bootstrap", "planning_discordance", "keep_checkpoints", "prompted_variants", "cross_test",
            "train_grid", "dev_only")
RULE = ("for each trained method, at the first seed: the LR of its grid with the highest accuracy on the dev "
        "questions of every data set pooled, at the selection settings; ties: the smaller LR; later seeds reuse it")
PROMPTED_RULE = ("the prompted variant (untuned base model) with the highest accuracy on the dev questions of every "
                 "data set pooled, at the selection settings; ties: the first declared (one variant: no dev pass)")
VARIANT_KEYS = ("name", "instruction", "system_prompt", "template", "max_new_tokens", "stop_at_newline")
VARIANT_DATA = ("instruction", "system_prompt", "template")  # DataConfig fields a variant may set
VARIANT_EVAL = ("max_new_tokens", "stop_at_newline")  # EvalConfig fields a variant may set
CROSS_KEYS = ("data", "format", "settings")
AMENDABLE = ("prompted_variants", "cross_test", "settings", "datasets.<name>.settings")
_NAME = re.compile(r"^[A-Za-z0-9_.+=-]+$")


def shared_data() -> Path:
    """The shared data folder: $NEURORIT_SHARED_DATA, else ``../shared/data`` beside the checkout."""
    return Path(os.environ.get("NEURORIT_SHARED_DATA", ROOT.parent / "shared" / "data"))


def run_name(method: str, lr: float | None = None, seed: int | None = None, variant: str | None = None) -> str:
    """``base``, or ``<method>/lr=<lr>/seed=<seed>`` (``lr=<lr>+<variant>`` for a ``train_grid`` variant)."""
    if method == "base":
        return "base"
    return f"{method}/lr={lr:g}/seed={seed}" if variant is None else f"{method}/lr={lr:g}+{variant}/seed={seed}"


def chosen_run(sel: Mapping[str, Any], seed: int) -> str:
    """The run of a trained method's dev choice (``selection/<method>.json``) at ``seed``."""
    return run_name(sel["method"], sel["chosen_lr"], seed, sel.get("chosen_variant"))


def dataset_settings(cfg: Mapping[str, Any], name: str) -> list[str]:
    """The settings of training data set ``name``: its own ``settings`` list, else the global one."""
    return list(cfg["datasets"][name].get("settings") or cfg["settings"])


def declared_settings(cfg: Mapping[str, Any]) -> list[str]:
    """Every setting the configuration declares (global, then per data set), first occurrence kept."""
    out: list[str] = []
    for s in [*cfg["settings"], *(s for d in cfg["datasets"].values() for s in d.get("settings", []))]:
        if s not in out:
            out.append(s)
    return out


def _check_variants(path: Any, cfg: Mapping[str, Any]) -> None:
    variants = cfg.get("prompted_variants")
    if ("prompted" in cfg["methods"]) != bool(variants):
        raise ValueError(f"{path}: method 'prompted' and a non-empty 'prompted_variants' list go together")
    names = []
    for v in variants or []:
        if not isinstance(v, dict) or not _NAME.match(str(v.get("name", ""))):
            raise ValueError(f"{path}: each prompted variant needs a 'name' of letters, digits and _.+=-, got {v!r}")
        unknown = sorted(set(v) - set(VARIANT_KEYS))
        if unknown:
            raise ValueError(f"{path}: prompted variant {v['name']!r}: unknown key(s) {unknown}; allowed: "
                             f"{list(VARIANT_KEYS)}")
        names.append(v["name"])
        DataConfig(**{k: v[k] for k in VARIANT_DATA if k in v})
        EvalConfig.from_dict({**cfg.get("eval", {}), **{k: v[k] for k in VARIANT_EVAL if k in v}})
    if len(set(names)) != len(names):
        raise ValueError(f"{path}: prompted variant names must be unique, got {names}")


def _check_cross(path: Any, cfg: Mapping[str, Any]) -> None:
    cross = cfg.get("cross_test", {})
    if not isinstance(cross, dict):
        raise ValueError(f"{path}: 'cross_test' must be a dict {{name: {{'data', 'format'?, 'settings'?}}}}")
    for name, spec in cross.items():
        if name in cfg["datasets"] or name == "pooled" or not _NAME.match(name):
            raise ValueError(f"{path}: cross_test set {name!r} needs a name of its own (not a training data set, "
                             "not 'pooled', letters, digits and _.+=-)")
        if not isinstance(spec, dict) or "data" not in spec or set(spec) - set(CROSS_KEYS):
            raise ValueError(f"{path}: cross_test set {name!r} must be {{'data', 'format'?, 'settings'?}}, "
                             f"got {spec!r}")
        for s in spec.get("settings", []):
            parse_setting(s)


def load_compare_config(path: str | os.PathLike) -> CompareConfig:
    """Read (JSON or TOML) and check a comparison configuration (see ``docs/evaluation.md``):
    every key's type and value (:class:`~neurorit_lens.experiments.config.CompareConfig`), then
    what ties keys together (methods, contrasts, grids, settings, variants, cross sets).
    ``.declared`` is the configuration as written, with the selection rule in words added.

    Raises:
        ValueError: the first problem, naming the key.
    """
    raw = read_config_file(path)
    try:
        typed = CompareConfig.from_dict(raw)
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from e
    cfg = typed.declared
    allowed = (*UNTRAINED, *METHODS)
    bad = [m for m in cfg["methods"] if m not in allowed]
    if bad:
        raise ValueError(f"{path}: methods: unknown method(s) {bad}; choose from {allowed}")
    for a, b in cfg["contrasts"]:
        if a not in cfg["methods"] or b not in cfg["methods"]:
            raise ValueError(f"{path}: contrasts: contrast {a} vs {b} names a method not in 'methods'")
    for m in trained(cfg):
        if not cfg["lr_grid"].get(m, cfg["lr_grid"].get("default")):
            raise ValueError(f"{path}: lr_grid: no lr_grid for method {m!r} (and no 'default')")
    for s in [*cfg["settings"], *cfg["selection"]["settings"]] + [s for d in cfg["datasets"].values()
                                                                  for s in d.get("settings", [])]:
        try:
            parse_setting(s)
        except ValueError as e:
            raise ValueError(f"{path}: settings: {e}") from e
    if not cfg["seeds"]:
        raise ValueError(f"{path}: 'seeds' is empty")
    _check_variants(path, cfg)
    _check_cross(path, cfg)
    check_train_grid(path, cfg, lambda n: bool(_NAME.match(n)))
    if cfg.get("dev_only") and (cfg.get("extra_seeds") or "prompted" in cfg["methods"] or cfg.get("cross_test")):
        raise ValueError(f"{path}: a dev_only run chooses on dev only; it takes no 'extra_seeds', 'prompted' "
                         "method or 'cross_test' sets")
    cfg["selection"]["rule"] = RULE_GRID if cfg.get("train_grid") else RULE
    try:
        EvalConfig.from_dict({**cfg.get("eval", {}), "settings": cfg["settings"]})
    except ValueError as e:
        raise ValueError(f"{path}: eval: {e}") from e
    return typed


def load_config(path: str | os.PathLike) -> dict[str, Any]:
    """The declared configuration (a dict, as ``protocol.json`` records it) of
    :func:`load_compare_config`."""
    return load_compare_config(path).declared


# --- protocol and amendments -----------------------------------------------------------------
def utc_now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def effective_config(protocol: Mapping[str, Any]) -> dict[str, Any]:
    """The configuration in force: the last amendment's, else the one first declared."""
    amendments = protocol.get("amendments") or []
    return amendments[-1]["config"] if amendments else protocol["config"]


def _added_list(key: str, old: list | None, new: list | None, problems: list[str]) -> list:
    old = old or []
    if new is None or new[: len(old)] != old:
        problems.append(f"{key!r}: existing entries changed or removed (additions go at the end)")
        return []
    return new[len(old):]


def _added_settings(key: str, old: list | None, new: list | None, problems: list[str]) -> list:
    """Settings appended to a list (the existing ones first, in order; no setting twice)."""
    extra = _added_list(key, old, new, problems)
    twice = sorted({s for s in new or [] if (new or []).count(s) > 1})
    if twice:
        problems.append(f"{key!r}: setting(s) {twice} listed twice")
    return extra


def _amend_datasets(old: Mapping[str, Any], new: Mapping[str, Any], problems: list[str]) -> dict[str, list]:
    """Settings added to each training data set's own list (``{"datasets.<name>.settings": [...]}``).

    Only a data set's ``settings`` may change: the settings it had before (its own list, or
    the global one when it had none) must stay first, in order; a data set's own list is
    never removed. Data sets themselves are never added, removed or renamed."""
    a_sets, b_sets = old["datasets"], new["datasets"]
    if list(a_sets) != list(b_sets):
        problems.append("'datasets': data sets added, removed or reordered")
        return {}
    added: dict[str, list] = {}
    for name in a_sets:
        a, b = a_sets[name], b_sets[name]
        key = f"datasets.{name}.settings"
        if {k: v for k, v in a.items() if k != "settings"} != {k: v for k, v in b.items() if k != "settings"}:
            problems.append(f"'datasets.{name}': changed (only its 'settings' may be appended to)")
        elif "settings" in a and "settings" not in b:
            problems.append(f"{key!r} removed")
        elif a.get("settings") != b.get("settings"):
            before = dataset_settings(old, name)
            extra = _added_settings(key, before, dataset_settings(new, name), problems)
            if extra:
                added[key] = extra
    return added


def amendment(old: Mapping[str, Any], new: Mapping[str, Any], original_methods: Sequence[str]) -> dict[str, list]:
    """What ``new`` adds to ``old`` (``{key: added names}``).

    Raises:
        ValueError: any change other than an allowed addition, each one named.
    """
    added: dict[str, list] = {}
    problems: list[str] = []
    for k in sorted(set(old) | set(new)):
        a, b = old.get(k), new.get(k)
        if a == b:
            continue
        if k == "methods":
            extra = [m for m in b if m not in a]
            if [m for m in b if m in a] != list(a) or not set(extra) <= {"prompted"}:
                problems.append("'methods': only 'prompted' may be added, the others kept in order")
            added[k] = extra
        elif k == "contrasts":
            extra = _added_list(k, a, b, problems)
            bad = [c for c in extra if not set(c) - set(original_methods)]
            if bad:
                problems.append(f"'contrasts': {bad} name no method added by amendment")
            added[k] = extra
        elif k == "prompted_variants":
            added[k] = [v.get("name") for v in _added_list(k, a, b, problems)]
        elif k == "settings":
            added[k] = _added_settings(k, a, b, problems)
        elif k == "datasets":
            added.update(_amend_datasets(old, new, problems))
        elif k == "cross_test":
            a = a or {}
            if b is None or any(b.get(n) != spec for n, spec in a.items()):
                problems.append("'cross_test': existing sets changed or removed")
            added[k] = [n for n in (b or {}) if n not in a]
        else:
            problems.append(f"{k!r} changed")
    if problems:
        raise ValueError("the declared protocol differs in ways --amend cannot add: " + "; ".join(problems) +
                         f" (--amend may add {list(AMENDABLE)}, the 'prompted' method and contrasts naming it; "
                         "settings only at the end of a list)")
    return added


def _without_prose(cfg: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in cfg.items() if k != "description"}


def check_protocol(path: Path, cfg: Mapping[str, Any], amend: bool = False,
                   environment: Callable[[], Any] = dict, write: bool = True) -> dict[str, Any]:
    """Write ``protocol.json`` on the first run; afterwards accept only the configuration in
    force, or (``amend``) one that adds to it, recorded as an amendment. ``write=False``
    checks without writing (``--plan``). Returns the protocol."""
    now = json.loads(json.dumps(cfg))
    if not path.exists():
        proto = {"config": now, "declared_at": utc_now(), "environment": environment()}
        if write:
            atomic_write_json(path, proto)
        return proto
    proto = read_json(path)
    current = effective_config(proto)
    if _without_prose(current) == _without_prose(now):  # a reworded description decides nothing
        return proto
    if not amend:
        raise ValueError(f"{path}: the declared protocol differs from this configuration; use a new --out "
                         "(or --amend to add prompted variants, the prompted method, cross_test sets or settings)")
    added = amendment(current, now, proto["config"]["methods"])
    proto.setdefault("amendments", []).append({"at": utc_now(), "added": added, "config": now})
    if write:
        atomic_write_json(path, proto)
    return proto


def amended_settings(proto: Mapping[str, Any]) -> dict[str, list[str]]:
    """``{data set: settings added by amendment}`` (empty lists left out): the exploratory settings."""
    first, now = proto["config"], effective_config(proto)
    out = {d: [s for s in dataset_settings(now, d) if s not in dataset_settings(first, d)] for d in now["datasets"]}
    return {d: v for d, v in out.items() if v}


def amended_parts(proto: Mapping[str, Any]) -> tuple[list[list[str]], list[str]]:
    """(contrasts added by amendment, cross_test sets added by amendment): the exploratory ones."""
    first, now = proto["config"], effective_config(proto)
    contrasts = [list(c) for c in now["contrasts"] if list(c) not in [list(x) for x in first["contrasts"]]]
    cross = [n for n in now.get("cross_test", {}) if n not in first.get("cross_test", {})]
    return contrasts, cross
