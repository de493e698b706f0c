"""The ``gate`` mode of the causal screen (protocol in docs/screen.md).

A learned gate has no fixed hook: each tested set gets its own gates, trained first. For the
candidate's I_excl and for each of its random control sets (the same sets, same seeds and
same per-layer counts as every other mode: the ones
:func:`neurorit_lens.ablation.measure.measure_ablation` draws),
gates start at 1 on that set's neurons and train alone (every model weight frozen) on
noisy-context items of the train questions, with stage 1's loss
(:class:`neurorit_lens.training.trainer.Trainer`: answer-token SFT plus
``penalty * mean |g|``, :class:`neurorit_lens.training.gate.GatePenalty`). The learned gates
then multiply the set's activations on the dev questions, and the change in log p(gold)
(and greedy accuracy) is measured and compared with the random sets by
:func:`neurorit_lens.ablation.measure.measure_ablation` itself, through its ``hooks_for``.

Each set's gates are saved as ``gates/<set>_<seed>.safetensors`` once trained, so a killed
run skips the sets already trained. The model's weights are never changed: the gates are a
separate parameter, removed after each training (``finally``).
"""
from __future__ import annotations

import dataclasses
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from jaxtyping import Float

from neurorit_lens.ablation.measure import build_context_prompts, measure_ablation
from neurorit_lens.ablation.result import AblationResult
from neurorit_lens.config import AblationConfig, DataConfig, TrainConfig
from neurorit_lens.neurons.score_files import read_tensor, write_tensor
from neurorit_lens.neurons.sets import NeuronSet
from neurorit_lens.tl_backend import Model
from neurorit_lens.training.gate import GatePenalty, attach_gates, detach_gates, gate_hooks, gate_masks
from neurorit_lens.training.items import TrainItem, build_train_items
from neurorit_lens.training.trainer import Trainer


@dataclass(frozen=True)
class GateSettings:
    """How the gates of one set are trained (defaults declared in docs/screen.md)."""

    steps: int = 25  # optimizer steps per set
    lr: float = 0.05  # AdamW rate, constant, no warmup, no weight decay
    penalty: float = 0.01  # L1 coefficient (TrainConfig.gate_penalty's default)
    batch_size: int = 4  # items per step
    seed: int = 0  # data order
    clamp: bool = False  # gates clamped to [0, 1] (mode gate01): they can only switch neurons off

    def __post_init__(self) -> None:
        if self.steps < 1 or self.batch_size < 1:
            raise ValueError(f"gate steps and batch size must be >= 1, got {self.steps}, {self.batch_size}")
        if not self.lr > 0 or not self.penalty >= 0:
            raise ValueError(f"gate lr must be > 0 and penalty >= 0, got {self.lr}, {self.penalty}")

    def train_config(self) -> TrainConfig:
        return TrainConfig(steps=self.steps, lr=self.lr, batch_size=self.batch_size, warmup_steps=0,
                           lr_schedule="constant", weight_decay=0.0, gate_penalty=self.penalty, seed=self.seed,
                           eval_every=0, checkpoint_every=0)


def gate_train_items(model: Model, train: list[Any], data_cfg: DataConfig, seed: int = 0) -> list[TrainItem]:
    """Stage 1's noisy-context mix of the train questions (TrainConfig's noise ratios and
    irrelevant-only share, gold targets)."""
    return build_train_items(train, model.tokenizer, TrainConfig(), data_cfg, seed=seed, n_ctx=model.cfg.n_ctx).items


def train_gates(model: Model, neurons: NeuronSet, items: list[TrainItem],
                gs: GateSettings) -> Float[torch.Tensor, "layer d_mlp"]:
    """Gates of ``neurons`` (1 everywhere else) after ``gs.steps`` steps; every weight frozen.

    Returns the learned gates on the CPU; the model is left without them.
    """
    if not neurons:
        raise ValueError("train_gates needs at least one neuron")
    gates = attach_gates(model)
    try:
        Trainer(model, items, gs.train_config(), hooks=gate_hooks(gates, neurons, clamp=gs.clamp),
                param_masks=gate_masks(gates, neurons), penalty=GatePenalty(gates, neurons, gs.penalty),
                progress=False).fit()
        return gates.detach().float().cpu().clone()
    finally:
        detach_gates(model)


class _LearnedGates:
    """``hooks_for`` of :func:`~neurorit_lens.ablation.measure.measure_ablation`: each set's
    gates, trained on first use (or read back from its file) and kept for the other context."""

    def __init__(self, model: Model, items: list[TrainItem], gs: GateSettings, gate_dir: Path, site: str,
                 log: Any) -> None:
        self.model, self.items, self.gs, self.dir, self.site, self.log = model, items, gs, gate_dir, site, log
        self.gates: dict[tuple[str, int | None], torch.Tensor] = {}
        gate_dir.mkdir(parents=True, exist_ok=True)

    def __call__(self, name: str, seed: int | None, ns: NeuronSet) -> list:
        if (name, seed) not in self.gates:
            self.gates[(name, seed)] = self._train_or_read(name, seed, ns)
        return gate_hooks(self.gates[(name, seed)], ns, self.site, clamp=self.gs.clamp)

    def _train_or_read(self, name: str, seed: int | None, ns: NeuronSet) -> torch.Tensor:
        path = self.dir / f"{name}_{'set' if seed is None else seed}.safetensors"
        if path.exists():
            return read_tensor(path)[0]
        t0 = time.time()
        g = train_gates(self.model, ns, self.items, self.gs)
        write_tensor(path, g.contiguous(), {"set": name, "seed": str(seed),
                                            **{k: str(v) for k, v in asdict(self.gs).items()}})
        on = g[ns.to_mask(*g.shape)]
        self.log("gates %s seed %s: %d steps in %.0f s, mean %.3f (min %.3f, max %.3f)", name, seed, self.gs.steps,
                 time.time() - t0, float(on.mean()), float(on.min()), float(on.max()))
        return g


def run_gate_ablation(model: Model, dev: list[Any], sets: dict[str, NeuronSet], cfg: AblationConfig,
                      data_cfg: DataConfig, items: list[TrainItem], gs: GateSettings, gate_dir: Path,
                      meta: dict[str, Any], log: Any) -> AblationResult:
    """:func:`~neurorit_lens.ablation.measure.run_ablation` with learned gates instead of a fixed mode.

    ``cfg.mode``/``cfg.scale`` are ignored (the result's config says ``mode: gate``); the
    random controls are the ones every other mode draws for the same ``cfg``.
    """
    contexts = [build_context_prompts(model, dev, cfg.relevant_setting, "relevant", data_cfg, cfg.max_new_tokens),
                build_context_prompts(model, dev, cfg.noisy_setting, "noisy", data_cfg, cfg.max_new_tokens)]
    fixed = dataclasses.replace(cfg, mode="zero")  # no reference means to compute; the hooks come from the gates
    res = measure_ablation(model, contexts, sets, fixed, show_progress=False, meta={"data": data_cfg.to_dict(), **meta},
                           hooks_for=_LearnedGates(model, items, gs, gate_dir, cfg.site, log))
    res.config = {**cfg.to_dict(), "mode": "gate", "scale": None, "gate": asdict(gs), "n_gate_items": len(items)}
    return res
