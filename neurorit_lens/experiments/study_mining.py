"""The component study's shared mining: per-data-set folders pooled into the sets each arm trains with.

``benchmarks/study_mine.sh`` writes one ``neurorit mine`` folder per set and data set,
``<mining>/<set>/<data set>/``. A folder is *complete* once its merge pass wrote
``neurons.json`` and the score tensors (``scores_R/I.safetensors``); shard runs and an
interrupted merge leave only per-example score files under ``scores/`` (*incomplete*).

:func:`pooled_set` loads the data sets' folders of one set, checks that they were mined as
the configuration declares (model, estimator, positions, prompts; a mismatch is an error
naming the folder and the flag) and pools them with
:func:`~neurorit_lens.neurons.pooling.pool_results`, selecting over every example with the
declared selection (threshold and frequency, or top-k). :func:`write_arm_sets` writes the
``neurons.json`` an arm trains with (``I_excl`` taken from another set for ``i_excl_from``)
and the split-half stability of the pooled sets.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from neurorit_lens.experiments.study_config import SET_DATA_KEYS, Arm, StudyConfig
from neurorit_lens.io import atomic_write_json, read_json, sha256_file

__all__ = ["MINE_COMMAND", "FolderStatus", "arm_sets_key", "folder_mismatches", "load_runs", "mining_status",
           "pooled_set", "require_mining", "sources_fingerprint", "write_arm_sets"]

MINE_COMMAND = "bash benchmarks/study_mine.sh"
COMPLETE_FILES = ("neurons.json", "scores_R.safetensors", "scores_I.safetensors")


@dataclass(frozen=True)
class FolderStatus:
    """One mining folder: ``complete``, ``incomplete`` or ``missing``, and its per-example score files."""

    path: Path
    state: str
    n_scores: dict[str, int]

    def describe(self) -> str:
        if self.state == "complete":
            return f"{self.path}: complete"
        if self.state == "missing":
            return f"{self.path}: missing"
        return (f"{self.path}: incomplete (no {', '.join(f for f in COMPLETE_FILES if not (self.path / f).exists())}; "
                f"score files so far: R {self.n_scores['R']}, I {self.n_scores['I']})")


def folder_status(path: Path) -> FolderStatus:
    """Whether ``path`` holds a finished mining run (only file names are read)."""
    n = {c: sum(1 for _ in (path / "scores" / c).glob("*.safetensors")) if (path / "scores" / c).is_dir() else 0
         for c in ("R", "I")}
    if not path.is_dir():
        return FolderStatus(path, "missing", n)
    return FolderStatus(path, "complete" if all((path / f).exists() for f in COMPLETE_FILES) else "incomplete", n)


def arm_sets_key(arm: Arm) -> str:
    """The name of the neuron sets an arm trains with (``ig``, ``ig+I_excl=contrast``)."""
    return arm.sets if arm.i_excl_from is None else f"{arm.sets}+I_excl={arm.i_excl_from}"


def sets_needed(arm: Arm) -> list[str]:
    return [arm.sets] + ([arm.i_excl_from] if arm.i_excl_from else [])


def mining_status(cfg: StudyConfig, mining: Path, names: Iterable[str]) -> dict[str, dict[str, FolderStatus]]:
    """``{set: {data set: status}}`` of the folders the sets ``names`` pool."""
    return {s: {d: folder_status(mining / s / d) for d in cfg.datasets} for s in dict.fromkeys(names)}


def require_mining(cfg: StudyConfig, mining: Path, names: Iterable[str]) -> None:
    """``FileNotFoundError`` naming every missing or incomplete folder and the command that makes it."""
    bad = [st.describe() for by in mining_status(cfg, mining, names).values() for st in by.values()
           if st.state != "complete"]
    if bad:
        raise FileNotFoundError("mining not finished: " + "; ".join(bad) + f". Run `{MINE_COMMAND} {mining}` "
                                "(resumable) and wait for its merge passes")


def sources_fingerprint(cfg: StudyConfig, mining: Path, names: Iterable[str]) -> dict[str, str]:
    """Per folder, a hash of what its merge pass wrote (``neurons.json``): the input of a sets unit."""
    return {f"{s}/{d}": sha256_file(mining / s / d / "neurons.json")[:16] for s in dict.fromkeys(names)
            for d in cfg.datasets}


def _same(got: Any, want: Any) -> bool:
    if isinstance(got, (list, tuple)) and isinstance(want, (list, tuple)):
        return list(got) == list(want)
    return got == want


def _auto_precisions(method: str | None) -> tuple[str, ...]:
    """What ``precision="auto"`` may resolve to for ``method`` (None: MiningConfig's default)."""
    from neurorit_lens.config import MiningConfig
    from neurorit_lens.precision import BF16_METHODS

    return ("fp32", "bf16") if (method or MiningConfig.method) in BF16_METHODS else ("fp32",)


def mismatches(cfg: StudyConfig, name: str, model_name: str, mined: Mapping[str, Any], data: Mapping[str, Any]
               ) -> list[str]:
    """How a folder's recorded model, MiningConfig (``mined``) and DataConfig (``data``) differ from what
    the set declares (selection flags excepted: the pooled selection applies them)."""
    from neurorit_lens.neurons.mining import SELECTION_FIELDS

    bad = [] if model_name == cfg.model else [f"model={model_name!r} (declared {cfg.model!r})"]
    for k, v in cfg.set_spec(name).items():
        if k in SELECTION_FIELDS:
            continue
        got = data.get(k) if k in SET_DATA_KEYS else mined.get(k)
        if k == "precision" and v == "auto" and got in _auto_precisions(cfg.set_spec(name).get("method")):
            continue  # recorded resolved
        if (k not in SET_DATA_KEYS or got is not None) and not _same(got, v):
            bad.append(f"{k}={got!r} (declared {v!r})")
    return bad


def folder_mismatches(cfg: StudyConfig, folder: Path, name: str) -> list[str]:
    """:func:`mismatches` of a complete folder, read from its ``neurons.json`` meta and ``mining.json`` (no tensor)."""
    from neurorit_lens.neuron_sets import read_neurons_file

    _, meta = read_neurons_file(folder / "neurons.json")
    info = read_json(folder / "mining.json").get("info", {}) if (folder / "mining.json").exists() else {}
    return mismatches(cfg, name, meta.model, meta.config or {}, info.get("data", {}))


def check_mined(res: Any, folder: Path, cfg: StudyConfig, name: str) -> None:
    """``ValueError`` unless ``res`` (a ``MiningResult``) was mined with the model and flags the set declares."""
    bad = mismatches(cfg, name, res.model_name, res.config.to_dict(), res.info.get("data", {}))
    if bad:
        raise ValueError(f"{folder}: mined with {', '.join(bad)}; the study declares mining.sets.{name}. Mine it "
                         f"again into a fresh folder (`{MINE_COMMAND}`) or pass the right --mining folder")


def load_runs(cfg: StudyConfig, mining: Path, name: str, model: Any = None) -> list[Any]:
    """Each data set's ``MiningResult`` of set ``name``, checked against the declared flags."""
    from neurorit_lens.neurons.mining import MiningResult

    require_mining(cfg, mining, [name])
    runs = []
    for d in cfg.datasets:
        res = MiningResult.load(mining / name / d, model)
        check_mined(res, mining / name / d, cfg, name)
        runs.append(res)
    return runs


def selection_of(cfg: StudyConfig, name: str) -> dict[str, Any]:
    """The selection flags the set declares (those left out stay as mined)."""
    from neurorit_lens.neurons.mining import SELECTION_FIELDS

    return {k: v for k, v in cfg.set_spec(name).items() if k in SELECTION_FIELDS}


def pooled_set(cfg: StudyConfig, mining: Path, name: str, model: Any = None) -> Any:
    """The set ``name`` pooled over every data set's folder, selected as declared (a ``MiningResult``)."""
    from neurorit_lens.neurons.pooling import pool_results

    return pool_results(load_runs(cfg, mining, name, model), **selection_of(cfg, name))


def write_arm_sets(cfg: StudyConfig, mining: Path, arm: Arm, folder: Path, model: Any = None) -> None:
    """``folder/neurons.json`` (the sets ``arm`` trains with) and ``folder/stability.json`` (the split-half
    Jaccard index of each pooled set, :func:`~neurorit_lens.neurons.pooling.split_half_stability`)."""
    from neurorit_lens.experiments.results import _clean
    from neurorit_lens.neuron_sets import SET_NAMES, save_neuron_sets
    from neurorit_lens.neurons.pooling import pool_results, split_half_stability

    pooled, stability = {}, {}
    for name in sets_needed(arm):
        runs = load_runs(cfg, mining, name, model)
        pooled[name] = pool_results(runs, **selection_of(cfg, name))
        stability[name] = split_half_stability(runs, **selection_of(cfg, name))
    main = pooled[arm.sets]
    sets, meta = dict(main.sets), main.meta()
    if arm.i_excl_from is not None:
        other = pooled[arm.i_excl_from]
        sets["I_excl"] = other.sets["I_excl"]
        meta["counts"]["I_excl"] = {str(k): c for k, c in other.sets["I_excl"].counts_per_layer().items()}
        meta["totals"]["I_excl"] = len(other.sets["I_excl"])
        meta["layer_mass"]["I_excl"] = other.layer_mass()["I_excl"]
    meta["study"] = {"sets": arm.sets, "i_excl_from": arm.i_excl_from,
                     "pooled_from": [str(mining / s / d) for s in sets_needed(arm) for d in cfg.datasets],
                     "selection": {s: selection_of(cfg, s) for s in sets_needed(arm)}}
    save_neuron_sets(folder / "neurons.json", {n: sets[n] for n in SET_NAMES}, meta)
    atomic_write_json(folder / "stability.json", _clean(stability))
