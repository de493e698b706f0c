"""The ``gate`` ablation mode: each tested set deactivated by gates learned for it.

A learned gate has no fixed hook: each set gets its own gates, trained first. For a tested
set and for each of its random control sets (the sets, seeds and per-layer counts every
mode draws: :func:`neurorit_lens.ablation.measure.measure_ablation`), gates start at 1 on
that set's neurons and train alone (every model weight frozen) on noisy-context items of
train questions, with stage 1's loss (:class:`neurorit_lens.training.trainer.Trainer`:
answer-token SFT plus ``gate_penalty * mean |g|``,
:class:`neurorit_lens.training.gate.GatePenalty`). The learned gates then multiply the
set's activations on the held-out questions, and the change in log p(gold) (and greedy
accuracy) is measured against the random sets by ``measure_ablation`` itself, through
its ``hooks_for``.

With a ``gate_dir``, each set's gates are saved as ``<set>_<seed>.safetensors`` once
trained, so a killed run skips the sets already trained. The model's weights are never
changed: the gates are a separate parameter, removed after each training (``finally``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from jaxtyping import Float

from neurorit_lens.config import AblationConfig, DataConfig, TrainConfig
from neurorit_lens.hooks import FwdHook
from neurorit_lens.neuron_sets import NeuronSet
from neurorit_lens.neurons.score_files import read_tensor, write_tensor
from neurorit_lens.tl_backend import Model
from neurorit_lens.training.gate import GatePenalty, attach_gates, detach_gates, gate_hooks, gate_masks
from neurorit_lens.training.items import TrainItem, build_train_items
from neurorit_lens.training.trainer import Trainer

log = logging.getLogger(__name__)
GATE_FIELDS = ("gate_steps", "gate_lr", "gate_penalty", "gate_batch_size", "gate_clamp")


def gate_train_config(cfg: AblationConfig) -> TrainConfig:
    """The trainer settings of one set's gates (``cfg.gate_*``; ``cfg.seed`` orders the data)."""
    return TrainConfig(steps=cfg.gate_steps, lr=cfg.gate_lr, batch_size=cfg.gate_batch_size, warmup_steps=0,
                       lr_schedule="constant", weight_decay=0.0, gate_penalty=cfg.gate_penalty, seed=cfg.seed,
                       eval_every=0, checkpoint_every=0)


def gate_train_items(model: Model, train: Sequence[Any], data_cfg: DataConfig, seed: int = 0) -> list[TrainItem]:
    """Stage 1's noisy-context mix of the train questions (TrainConfig's noise ratios and
    irrelevant-only share, gold targets)."""
    return build_train_items(list(train), model.tokenizer, TrainConfig(), data_cfg, seed=seed,
                             n_ctx=model.cfg.n_ctx).items


def train_gates(model: Model, neurons: NeuronSet, items: list[TrainItem],
                cfg: AblationConfig) -> Float[torch.Tensor, "layer d_mlp"]:
    """Gates of ``neurons`` (1 everywhere else) after ``cfg.gate_steps`` steps; every weight frozen.

    Returns the learned gates on the CPU; the model is left without them.
    """
    if not neurons:
        raise ValueError("train_gates needs at least one neuron")
    gates = attach_gates(model)
    try:
        Trainer(model, items, gate_train_config(cfg), hooks=gate_hooks(gates, neurons, clamp=cfg.gate_clamp),
                param_masks=gate_masks(gates, neurons), penalty=GatePenalty(gates, neurons, cfg.gate_penalty),
                progress=False).fit()
        return gates.detach().float().cpu().clone()
    finally:
        detach_gates(model)


class LearnedGates:
    """``hooks_for`` of :func:`~neurorit_lens.ablation.measure.measure_ablation`: each set's
    gates, trained on first use (or read back from ``gate_dir``) and kept for the other context."""

    def __init__(self, model: Model, items: list[TrainItem], cfg: AblationConfig,
                 gate_dir: str | Path | None = None) -> None:
        if not items:
            raise ValueError("mode 'gate' needs train items to learn the gates on")
        self.model, self.items, self.cfg = model, items, cfg
        self.dir = Path(gate_dir) if gate_dir is not None else None
        self.gates: dict[tuple[str, int | None], torch.Tensor] = {}
        if self.dir is not None:
            self.dir.mkdir(parents=True, exist_ok=True)

    def __call__(self, name: str, seed: int | None, ns: NeuronSet) -> list[FwdHook]:
        if (name, seed) not in self.gates:
            self.gates[(name, seed)] = self._train_or_read(name, seed, ns)
        return gate_hooks(self.gates[(name, seed)], ns, self.cfg.site, clamp=self.cfg.gate_clamp)

    def _train_or_read(self, name: str, seed: int | None, ns: NeuronSet) -> torch.Tensor:
        path = self.dir / f"{name}_{'set' if seed is None else seed}.safetensors" if self.dir else None
        if path is not None and path.exists():
            return read_tensor(path)[0]
        t0 = time.time()
        g = train_gates(self.model, ns, self.items, self.cfg)
        if path is not None:
            write_tensor(path, g.contiguous(), {"set": name, "seed": str(seed),
                                                **{k: str(getattr(self.cfg, k)) for k in GATE_FIELDS}})
        on = g[ns.to_mask(*g.shape)]
        log.info("gates %s seed %s: %d steps in %.0f s, mean %.3f (min %.3f, max %.3f)", name, seed,
                 self.cfg.gate_steps, time.time() - t0, float(on.mean()), float(on.min()), float(on.max()))
        return g
