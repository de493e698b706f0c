"""The causal screens of the definitions of I (protocols and selection rule in docs/screen.md).

For one data set: mine every candidate definition of I on train questions, then deactivate each
candidate's I_excl in each of its modes on dev questions against 5 random sets of the same
per-layer counts, under gold-only and noisy contexts (teacher-forced log p(gold); greedy accuracy
in the second screen). Resumable: mining reuses its per-example score files, each finished
ablation mode is a JSON file, and each set's learned gates (the ablation mode ``gate``,
:mod:`neurorit_lens.ablation.gate`) are a file.

The first screen (``--screen 1``, the default) writes ``<results>/<name>/ablation_*.json``; the
second (``--screen 2``) writes ``<results>/<name>/screen2/ablation_*.json``, so neither touches the
other's files. A candidate that only changes the selection (sign consistency, normalised scores)
reuses its base candidate's mining folder. The summary tables are
:mod:`neurorit_lens.experiments.screen_report`.

    neurorit screen --data embedded:500 --name embedded --threads 1
    neurorit screen --screen 2 --data embedded:500 --name embedded --threads 1
    neurorit screen --summarize embedded,nq
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from neurorit_lens.config import ConfigBase

log = logging.getLogger(__name__)

RESULTS = Path("benchmarks") / "results" / "screen"  # the default root of the results, from the checkout

# name -> how the candidate's sets are made: {"mine": MiningConfig changes} (its own mining folder)
# or {"base": candidate, "select": selection changes} (the base's scores, selected again)
CANDIDATES: dict[str, dict] = {
    "gold": {"mine": {"irrelevant_definition": "gold"}},
    "negative": {"mine": {"irrelevant_definition": "negative"}},
    "negative_paired": {"mine": {"irrelevant_definition": "negative", "paired": True}},
    "distracted": {"mine": {"irrelevant_definition": "distracted"}},
    "contrast": {"mine": {"irrelevant_definition": "contrast"}},
    "negative_paired_sign0.7": {"base": "negative_paired", "select": {"sign_consistency": 0.7}},
    "negative_paired_norm": {"base": "negative_paired", "select": {"normalize": True}},
}
# (candidate, mode, scale) of each screen, in the order they run; written in docs/screen.md before the run
SCREENS: dict[int, list[tuple[str, str, float]]] = {
    1: [
        ("negative_paired", "scale", 0.5),
        ("distracted", "scale", 0.5),
        ("gold", "zero", 0.0),
        ("negative_paired", "constant", 0.0),
        ("negative", "scale", 0.5),
    ],
    2: [
        ("negative_paired_sign0.7", "scale", 0.5),
        ("negative_paired_norm", "scale", 0.5),
        ("contrast", "scale", 0.5),
        ("negative_paired", "gate", 0.0),
        ("contrast", "gate", 0.0),
    ],
    # the format-tuned checkpoint (issue 12 item 6): run with --model <clean checkpoint> --data embedded:1000
    3: [
        ("negative_paired", "scale", 0.5),
        ("contrast", "scale", 0.5),
        ("negative_paired_norm", "scale", 0.5),
    ],
}
COMBOS = SCREENS[1]  # the first screen's list (kept under its old name)
MODES = ("zero", "mean", "scale", "constant", "gate", "gate01")  # gate01: learned gates clamped to [0, 1]
GOLD_LIMIT = 0.2  # nats: |delta - random| under gold-only contexts must stay below this


def mode_key(mode: str, scale: float) -> str:
    return f"{mode}{scale:g}" if mode == "scale" else mode


def parse_combo(spec: str) -> tuple[str, str, float]:
    """``candidate:mode`` (``negative_paired:scale0.5``, ``contrast:gate``) -> ``(candidate, mode, scale)``."""
    cand, sep, key = spec.strip().partition(":")
    if not sep or cand not in CANDIDATES:
        raise ValueError(f"bad combo {spec!r}: need candidate:mode with a candidate of {sorted(CANDIDATES)}")
    if key.startswith("scale"):
        try:
            return cand, "scale", float(key[len("scale"):])
        except ValueError as e:
            raise ValueError(f"bad combo {spec!r}: scale needs a number, e.g. scale0.5") from e
    if key not in MODES:
        raise ValueError(f"bad combo {spec!r}: mode must be one of {MODES} (scale as scale<factor>)")
    return cand, key, 0.0


def base_of(cand: str) -> str:
    """The candidate whose mining folder ``cand`` uses."""
    return CANDIDATES[cand].get("base", cand)


@dataclass
class ScreenConfig(ConfigBase):
    """One data set's causal screen: which combos, on which data, model and questions."""

    screen: int = 1  # Which screen's combos to run (1, 2 or 3; docs/screen.md).
    # Run these candidate:mode combos instead (comma-separated, e.g. negative_paired:scale0.5,contrast:gate);
    # files go to --screen's folder.
    combos: tuple[str, ...] = ()
    results: str = str(RESULTS)  # Root of the results folders.
    data: str = "embedded:500"  # Which QA data (path, embedded:N or hf:NAME).
    name: str = "embedded"  # The data set's folder under --results.
    model: str = "smollm2-135m-instruct"  # Model name or local checkpoint folder.
    train_limit: int = 64  # Train questions mined (and the gates' train items).
    dev_limit: int = 100  # Dev questions ablated.
    top_k: int = 40  # Neurons per set (top-k selection).
    noisy: str = "noise=0.8"  # Noise setting of the noisy contexts.
    batch_size: int = 8  # Sequences per forward pass.
    threads: int = 2  # Torch CPU threads.
    # Also measure Δ greedy accuracy (auto: off in screen 1, on in screens 2 and 3).
    accuracy: Literal["auto", "on", "off"] = "auto"
    accuracy_limit: int | None = None  # Accuracy on the first N dev questions only (none = all).
    gate_steps: int = 25  # Gate training steps per set (modes gate, gate01).
    gate_lr: float = 0.05  # Gate learning rate (constant, AdamW).
    gate_penalty: float = 0.01  # L1 coefficient on the mean |gate|.
    gate_batch_size: int = 4  # Gate training items per step.

    def __post_init__(self) -> None:
        self.combos = tuple(c.strip() for c in self.combos.split(",")) if isinstance(self.combos, str) \
            else tuple(self.combos)
        if self.screen not in SCREENS:
            raise ValueError(f"screen must be one of {sorted(SCREENS)}, got {self.screen}")
        for c in self.combos:
            parse_combo(c)
        for key in ("train_limit", "dev_limit", "top_k", "batch_size", "threads", "gate_steps", "gate_batch_size"):
            if getattr(self, key) < 1:
                raise ValueError(f"{key} must be >= 1, got {getattr(self, key)}")
        if self.accuracy not in ("auto", "on", "off"):
            raise ValueError(f"accuracy must be auto, on or off, got {self.accuracy!r}")
        if self.accuracy_limit is not None and self.accuracy_limit < 1:
            raise ValueError(f"accuracy_limit must be >= 1, got {self.accuracy_limit}")

    @property
    def measures_accuracy(self) -> bool:
        return self.screen >= 2 if self.accuracy == "auto" else self.accuracy == "on"

    def combo_list(self) -> list[tuple[str, str, float]]:
        return [parse_combo(c) for c in self.combos] if self.combos else SCREENS[self.screen]


def mine_candidates(model, train, data_cfg, out: Path, cfg: ScreenConfig, combos) -> dict:
    """Mine every base candidate the combos need (resumed from score files); results by base name."""
    from neurorit_lens.config import MiningConfig
    from neurorit_lens.neurons.mining import mine

    results, first = {}, None
    needed = {base_of(c) for c, _, _ in combos}
    for name, spec in CANDIDATES.items():
        if name not in needed:
            continue
        mcfg = MiningConfig(method="grad_x_act", selection="topk", top_k=cfg.top_k, noisy_setting=cfg.noisy,
                            answer_means=True, normalize=True, **spec["mine"])
        d = out / f"mine_{name}"
        if first is None:
            first = next((p for p in sorted(out.glob("mine_*")) if (p / "scores" / "R").is_dir()), None)
        if first is not None and first != d and not (d / "scores" / "R").exists():
            shutil.copytree(first / "scores" / "R", d / "scores" / "R")  # R prompts are the same for all
        t0 = time.time()
        res = mine(model, train, mcfg, data_cfg, out_dir=d, show_progress=True)
        res = res.reselect(normalize=False)  # raw scores select; act_scale kept for the normalised variant
        res.save(d)
        log.info("mined %s in %.0f s: I_excl %d neurons, excluded %s", name, time.time() - t0,
                 len(res.sets["I_excl"]), res.excluded)
        results[name] = res
        first = first or d
    return results


def candidate_result(mined: dict, cand: str):
    """The :class:`MiningResult` of ``cand``: its base's, selected again with the candidate's changes."""
    res = mined[base_of(cand)]
    return res.reselect(**CANDIDATES[cand]["select"]) if "select" in CANDIDATES[cand] else res


def screen_dir(out: Path, screen: int) -> Path:
    return out if screen == 1 else out / f"screen{screen}"


def combo_path(out: Path, cand: str, mode: str, scale: float, screen: int = 1) -> Path:
    return screen_dir(out, screen) / f"ablation_{cand}_{mode_key(mode, scale)}.json"


def _write_json(path: Path, d: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(d, indent=1))
    os.replace(tmp, path)


def ablation_config(cand: str, mode: str, scale: float, cfg: ScreenConfig):
    """The :class:`AblationConfig` of one combo (``gate01``: mode ``gate`` with clamped gates)."""
    from neurorit_lens.config import AblationConfig

    return AblationConfig(sets=(cand,), mode="gate" if mode.startswith("gate") else mode, scale=scale, n_random=5,
                          relevant_setting="gold", noisy_setting=cfg.noisy, measure_accuracy=cfg.measures_accuracy,
                          accuracy_limit=cfg.accuracy_limit, batch_size=cfg.batch_size, gate_steps=cfg.gate_steps,
                          gate_lr=cfg.gate_lr, gate_penalty=cfg.gate_penalty, gate_batch_size=cfg.gate_batch_size,
                          gate_clamp=mode == "gate01")


def ablate_combo(model, dev, train, mined: dict, data_cfg, cand: str, mode: str, scale: float, out: Path,
                 cfg: ScreenConfig, screen: int = 1) -> dict:
    """One candidate x mode against its random controls; one JSON file, skipped when it exists."""
    from neurorit_lens.ablation.measure import run_ablation

    key = mode_key(mode, scale)
    path = combo_path(out, cand, mode, scale, screen)
    if path.exists():
        return json.loads(path.read_text())
    res = candidate_result(mined, cand)
    sets = {cand: res.sets["I_excl"]}
    meta = {"screen": cfg.name, "screen_no": screen, "candidate": cand, "mode_key": key, "n_dev": len(dev),
            "selection": res.config.to_dict()}
    if not sets[cand]:
        log.warning("%s: I_excl is empty, nothing to ablate", cand)
        _write_json(path, {"rows": [], "empty": True, "meta": meta})
        return json.loads(path.read_text())
    acfg = ablation_config(cand, mode, scale, cfg)
    t0 = time.time()
    gates = screen_dir(out, screen) / f"{'gates' if mode == 'gate' else 'gates01'}_{cand}"
    result = run_ablation(model, dev, sets, acfg, data_cfg, means=res.answer_means if mode == "constant" else None,
                          meta=meta, train_examples=train if mode.startswith("gate") else None, gate_dir=gates)
    d = result.to_dict()
    d["wall_s"] = time.time() - t0
    _write_json(path, d)
    log.info("ablation %s %s done in %.0f s", cand, key, d["wall_s"])
    return d


def run_screen(cfg: ScreenConfig) -> dict[str, Any]:
    """Mine the candidates and run every combo of ``cfg`` (each skipped when its file exists)."""
    import torch

    from neurorit_lens.config import DataConfig
    from neurorit_lens.data.splits import load_splits
    from neurorit_lens.models.registry import load_model

    torch.set_num_threads(cfg.threads)
    out = Path(cfg.results) / cfg.name
    out.mkdir(parents=True, exist_ok=True)
    combos = cfg.combo_list()
    data_cfg = DataConfig(data=cfg.data, n_passages=5, max_prompt_tokens=512, seed=0)
    _, splits = load_splits(data_cfg)
    train, dev = splits["train"][: cfg.train_limit], splits["dev"][: cfg.dev_limit]
    log.info("%s: %d train, %d dev questions; screen %d: %s", cfg.name, len(train), len(dev), cfg.screen,
             [f"{c}:{mode_key(m, s)}" for c, m, s in combos])
    model = load_model(cfg.model)
    mined = mine_candidates(model, train, data_cfg, out, cfg, combos)
    done = {f"{c}:{mode_key(m, s)}": ablate_combo(model, dev, train, mined, data_cfg, c, m, s, out, cfg, cfg.screen)
            for c, m, s in combos}
    _write_json(screen_dir(out, cfg.screen) / "config.json", {
        **dataclasses.asdict(cfg), "accuracy": cfg.measures_accuracy, "train": len(train), "dev": len(dev),
        "combos": combos, "load_avg_end": list(os.getloadavg())})
    return done
