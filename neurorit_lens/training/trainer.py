"""The trainer: masked SFT of a HookedTransformer with hooks active, resumable after a kill.

Both Neuro-RIT stages and every baseline are configurations of one loop
(:mod:`neurorit_lens.training.methods` builds them):

- **loss**: supervised fine-tuning on the answer tokens only: prompt + gold answer + EOS
  are tokenised (:func:`neurorit_lens.objective.tokenize_with_answers`) and the mean
  cross-entropy over answer tokens is minimised (:func:`neurorit_lens.objective.sft_loss`).
  With gradient accumulation each micro-batch is weighted by its share of the answer
  tokens, so ``batch_size=4, grad_accum=1`` and ``batch_size=2, grad_accum=2`` take the
  same step.
- **hooks** (e.g. stage 1's zero-ablation of ``I_excl``) stay on for every forward pass,
  training and dev evaluation alike, and are removed in ``finally``.
- **what trains**: a :data:`neurorit_lens.training.masks.ParamMasks` mapping. Parameters not in it
  get ``requires_grad=False``; masked gradient entries are zeroed after backward, before
  clipping, so clipping and Adam's moments only see trainable entries; Adam's update of an
  entry whose gradient was always exactly 0 is exactly 0.
- **optimiser**: AdamW with *decoupled weight decay applied through the mask*
  (``p -= lr * wd * p * mask``, then the Adam step with ``weight_decay=0``): PyTorch's
  AdamW would shrink masked entries too. Gradient-norm clipping, linear warmup followed
  by cosine / linear / constant decay (:func:`lr_factor`).
- **determinism**: the data order is a pure function of ``(seed, position)`` (one seeded
  permutation per epoch), so resuming needs only the step count.
- **checkpoints**: every ``checkpoint_every`` steps and at the end, one file written
  atomically with the trainable tensors, optimiser and scheduler state, RNG states, step,
  data position and the log so far. A killed run restarted with the same arguments
  continues from it and ends with the same parameters and the same log as an
  uninterrupted run (tested, including a SIGKILLed subprocess).

>>> from neurorit_lens.models import tiny_model
>>> from neurorit_lens.config import TrainConfig
>>> from neurorit_lens.training.items import TrainItem
>>> m = tiny_model()
>>> items = [TrainItem("Question: capital of Zarnia? Answer:", " Velmor")] * 4
>>> cfg = TrainConfig(steps=2, batch_size=2, warmup_steps=0, lr=1e-3)
>>> log = Trainer(m, items, cfg, param_masks={"blocks.0.mlp.b_in": None}, progress=False).fit()
>>> [o.step for o in log]
[1, 2]
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import logging
import math
import os
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from neurorit_lens.config import TrainConfig
from neurorit_lens.hooks import FwdHook, neuron_hooks
from neurorit_lens.io import atomic_write_bytes, atomic_write_text
from neurorit_lens.objective import AnswerBatch, sft_loss, token_logprobs, tokenize_with_answers
from neurorit_lens.tl_backend import Model
from neurorit_lens.training.items import TrainItem
from neurorit_lens.training.masks import ParamMasks, check_masks, full_param_masks

log = logging.getLogger(__name__)

CHECKPOINT = "checkpoint.pt"
TRAIN_LOG = "train_log.jsonl"
_CKPT_VERSION = 1


@dataclass
class StepOutput:
    """What one optimizer step did (one line of ``train_log.jsonl``)."""

    step: int  # optimizer steps completed (offset by earlier stages for multi-stage runs)
    loss: float  # mean answer-token cross-entropy of the step's batch (before the update)
    lr: float  # learning rate used for this step
    grad_norm: float  # L2 norm of the masked gradient before clipping
    n_tokens: int  # answer tokens in the batch (EOS included)
    stage: str = ""
    dev_loss: float | None = None  # mean answer-token cross-entropy on the dev items
    dev_answer_logprob: float | None = None  # mean per-item log p(answer + EOS | prompt)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> StepOutput:
        return cls(**d)


def lr_factor(step: int, total: int, warmup: int, schedule: str = "cosine", min_ratio: float = 0.0) -> float:
    """Multiplier of the base learning rate for 0-based optimizer step ``step``.

    Linear warmup ``(step + 1) / warmup`` for the first ``warmup`` steps, then decay from
    1 to ``min_ratio`` over the remaining ``total - warmup`` steps: cosine
    ``min + (1 - min) * (1 + cos(pi * t)) / 2`` or linear ``min + (1 - min) * (1 - t)``
    with ``t = (step - warmup) / (total - warmup)``; ``constant`` stays at 1.
    """
    if step < warmup:
        return (step + 1) / warmup
    if schedule == "constant":
        return 1.0
    t = (step - warmup) / max(1, total - warmup)
    t = min(max(t, 0.0), 1.0)
    if schedule == "cosine":
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * t))
    if schedule == "linear":
        return min_ratio + (1 - min_ratio) * (1 - t)
    raise ValueError(f"unknown lr schedule {schedule!r}")


def _as_items(items: Sequence[TrainItem | tuple[str, str]], what: str) -> list[TrainItem]:
    out = []
    for i, it in enumerate(items):
        if isinstance(it, TrainItem):
            out.append(it)
        elif isinstance(it, (tuple, list)) and len(it) == 2:
            out.append(TrainItem(str(it[0]), str(it[1]), id=str(i)))
        else:
            raise ValueError(f"{what} item {i}: expected a TrainItem or a (prompt, answer) pair, "
                             f"got {type(it).__name__}")
    return out


def tokenize_items(model: Model, items: Sequence[TrainItem], max_len: int | None = None) -> AnswerBatch:
    """Prompt + answer + EOS for a batch of items, right padded, cut to the model window."""
    max_len = max_len or model.cfg.n_ctx
    return tokenize_with_answers(model, [it.prompt for it in items], [it.answer for it in items],
                                 append_eos=True, max_len=max_len)


@torch.no_grad()
def evaluate_dev(model: Model, items: Sequence[TrainItem], batch_size: int = 8,
                 max_len: int | None = None) -> dict[str, float]:
    """Teacher-forced dev metrics with whatever hooks are active on ``model``.

    Returns:
        ``{"dev_loss": mean answer-token cross-entropy, "dev_answer_logprob": mean per-item
        log-probability of answer + EOS}``.
    """
    if not items:
        raise ValueError("no dev items")
    total_lp, total_tok, per_item = 0.0, 0, 0.0
    device = model.cfg.device
    for s in range(0, len(items), batch_size):
        batch = tokenize_items(model, items[s: s + batch_size], max_len).to(device)
        lp = token_logprobs(model(batch.tokens), batch)
        total_lp += float(lp.sum())
        total_tok += int(batch.answer_mask.sum())
        per_item += float(lp.sum(-1).sum())
    return {"dev_loss": -total_lp / max(total_tok, 1), "dev_answer_logprob": per_item / len(items)}


class Trainer:
    """Masked SFT with hooks, gradient accumulation, clipping, schedule and checkpoints.

    Args:
        model: the HookedTransformer to train in place.
        train_items: ``TrainItem`` s (or ``(prompt, answer)`` pairs).
        cfg: batch size, accumulation, learning rate, schedule, clipping, decay, seeds,
            eval and checkpoint intervals.
        dev_items: items for the teacher-forced dev loss (at most ``cfg.max_dev_items``).
        hooks: forward hooks active during every forward pass (e.g. ``zero_ablation(I_excl)``).
        param_masks: what may change (see :mod:`neurorit_lens.training.masks`); ``None`` = everything.
        out_dir: where ``checkpoint.pt`` and ``train_log.jsonl`` go; ``None`` = no files.
        steps: optimizer steps of this run (default ``cfg.steps``).
        lr: base learning rate (default ``cfg.lr``).
        stage: label written into every :class:`StepOutput`.
        step_offset: added to the reported step (multi-stage runs number steps globally).
        resume: continue from ``out_dir/checkpoint.pt`` when it exists.
        callbacks: called with each :class:`StepOutput` after its checkpoint is written.
        progress: show a tqdm bar with the loss.
    """

    def __init__(
        self,
        model: Model,
        train_items: Sequence[TrainItem | tuple[str, str]],
        cfg: TrainConfig,
        dev_items: Sequence[TrainItem | tuple[str, str]] | None = None,
        hooks: Sequence[FwdHook] = (),
        param_masks: ParamMasks | None = None,
        out_dir: str | os.PathLike | None = None,
        *,
        steps: int | None = None,
        lr: float | None = None,
        stage: str = "",
        step_offset: int = 0,
        resume: bool = True,
        callbacks: Sequence[Callable[[StepOutput], None]] = (),
        progress: bool = True,
    ):
        self.model = model
        self.items = _as_items(train_items, "train")
        if not self.items:
            raise ValueError("no training items")
        dev = _as_items(dev_items or [], "dev")
        self.dev_items = dev[: cfg.max_dev_items]
        self.cfg = cfg
        self.hooks = list(hooks)
        self.masks: ParamMasks = full_param_masks(model) if param_masks is None else dict(param_masks)
        check_masks(model, self.masks)
        if not self.masks:
            raise ValueError("param_masks leave nothing trainable")
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.steps = cfg.steps if steps is None else int(steps)
        if self.steps < 1:
            raise ValueError(f"steps must be >= 1, got {self.steps}")
        self.lr = cfg.lr if lr is None else float(lr)
        self.stage = stage
        self.step_offset = step_offset
        self.resume = resume
        self.callbacks = list(callbacks)
        self.progress = progress
        self.items_per_step = cfg.batch_size * cfg.grad_accum
        self._perms: dict[int, list[int]] = {}
        params = dict(model.named_parameters())
        self.param_names = [n for n, _ in model.named_parameters() if n in self.masks]
        self.params = [params[n] for n in self.param_names]
        device = next(iter(self.params)).device
        self.mask_tensors = {n: (None if m is None else m.to(device)) for n, m in self.masks.items()}

    # --- data order -------------------------------------------------------------------
    def _perm(self, epoch: int) -> list[int]:
        if epoch not in self._perms:
            g = torch.Generator().manual_seed(self.cfg.seed * 1_000_003 + epoch)
            self._perms[epoch] = torch.randperm(len(self.items), generator=g).tolist()
        return self._perms[epoch]

    def batch_indices(self, step: int) -> list[int]:
        """Item indices used by 0-based optimizer step ``step`` (a pure function of seed and step)."""
        n = len(self.items)
        start = step * self.items_per_step
        return [self._perm(pos // n)[pos % n] for pos in range(start, start + self.items_per_step)]

    # --- checkpoints ------------------------------------------------------------------
    def fingerprint(self) -> dict[str, Any]:
        """What must match for a checkpoint to be resumed by this trainer."""
        h = hashlib.sha256()
        for it in self.items:
            h.update(it.prompt.encode())
            h.update(b"\0")
            h.update(it.answer.encode())
            h.update(b"\1")
        keys = ("batch_size", "grad_accum", "warmup_steps", "max_grad_norm", "weight_decay", "seed",
                "lr_schedule", "min_lr_ratio", "adam_betas", "adam_eps")
        mask_count = {n: (None if m is None else int(m.sum())) for n, m in self.masks.items()}
        return {"steps": self.steps, "lr": self.lr, "stage": self.stage, "n_items": len(self.items),
                "items_sha256": h.hexdigest(), "cfg": {k: getattr(self.cfg, k) for k in keys},
                "masks": mask_count, "hooks": [name for name, _ in self.hooks]}

    @property
    def checkpoint_path(self) -> Path | None:
        return self.out_dir / CHECKPOINT if self.out_dir is not None else None

    def _save_checkpoint(self, step: int, history: list[StepOutput], opt, sched, complete: bool) -> None:
        if self.out_dir is None:
            return
        state = {
            "version": _CKPT_VERSION,
            "step": step,
            "position": step * self.items_per_step,
            "complete": complete,
            "fingerprint": json.loads(json.dumps(self.fingerprint(), default=list)),
            "trainable": {n: p.detach().cpu().clone() for n, p in zip(self.param_names, self.params, strict=True)},
            "optimizer": None if complete else opt.state_dict(),
            "scheduler": sched.state_dict(),
            "rng": {"torch": torch.get_rng_state(), "python": list(_py_state_to_list(random.getstate()))},
            "log": [o.to_dict() for o in history],
        }
        buf = io.BytesIO()
        torch.save(state, buf)
        atomic_write_bytes(self.checkpoint_path, buf.getvalue())

    def _load_checkpoint(self, opt, sched) -> tuple[int, list[StepOutput]]:
        path = self.checkpoint_path
        state = torch.load(path, map_location="cpu", weights_only=True)
        if state.get("version") != _CKPT_VERSION:
            raise ValueError(f"{path}: unsupported checkpoint version {state.get('version')}")
        mine = json.loads(json.dumps(self.fingerprint(), default=list))
        if state["fingerprint"] != mine:
            diff = sorted(k for k in mine if state["fingerprint"].get(k) != mine[k])
            raise ValueError(f"{path} was written by a different run (differs in {diff}); "
                             "delete it or start without resuming")
        with torch.no_grad():
            for n, p in zip(self.param_names, self.params, strict=True):
                p.copy_(state["trainable"][n].to(p.device, p.dtype))
        if state["optimizer"] is not None:
            opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["rng"]["torch"])
        random.setstate(_py_state_from_list(state["rng"]["python"]))
        history = [StepOutput.from_dict(d) for d in state["log"]]
        log.info("resumed %s from %s at step %d/%d", self.stage or "training", path, state["step"], self.steps)
        return int(state["step"]), history

    def _write_log(self, history: list[StepOutput]) -> None:
        if self.out_dir is not None:
            atomic_write_text(self.out_dir / TRAIN_LOG, "".join(json.dumps(o.to_dict()) + "\n" for o in history))

    # --- the loop -----------------------------------------------------------------------
    def _mask_grads(self) -> None:
        for n, p in zip(self.param_names, self.params, strict=True):
            m = self.mask_tensors[n]
            if p.grad is not None and m is not None:
                p.grad = torch.where(m, p.grad, torch.zeros((), dtype=p.grad.dtype, device=p.grad.device))

    @torch.no_grad()
    def _decay(self, lr: float) -> None:
        wd = self.cfg.weight_decay
        if wd <= 0:
            return
        for n, p in zip(self.param_names, self.params, strict=True):
            m = self.mask_tensors[n]
            if m is None:
                p.mul_(1 - lr * wd)
            else:
                p.sub_(torch.where(m, p * (lr * wd), torch.zeros((), dtype=p.dtype, device=p.device)))

    def _step(self, step: int, opt, sched) -> StepOutput:
        idx = self.batch_indices(step)
        device = self.params[0].device
        micro = [idx[i: i + self.cfg.batch_size] for i in range(0, len(idx), self.cfg.batch_size)]
        batches = [tokenize_items(self.model, [self.items[i] for i in mb]).to(device) for mb in micro]
        n_tok = sum(int(b.answer_mask.sum()) for b in batches)
        opt.zero_grad(set_to_none=True)
        loss_total = 0.0
        for b in batches:
            share = int(b.answer_mask.sum()) / n_tok
            loss = sft_loss(self.model(b.tokens), b) * share
            loss.backward()
            loss_total += float(loss.detach())
        self._mask_grads()
        grads = [p.grad for p in self.params if p.grad is not None]
        if self.cfg.max_grad_norm > 0:
            grad_norm = float(torch.nn.utils.clip_grad_norm_(self.params, self.cfg.max_grad_norm))
        else:
            norms = [torch.linalg.vector_norm(g) for g in grads]
            grad_norm = float(torch.linalg.vector_norm(torch.stack(norms))) if grads else 0.0
        lr_now = float(sched.get_last_lr()[0])
        self._decay(lr_now)
        opt.step()
        sched.step()
        return StepOutput(step=step + 1 + self.step_offset, loss=loss_total, lr=lr_now, grad_norm=grad_norm,
                          n_tokens=n_tok, stage=self.stage)

    def fit(self) -> list[StepOutput]:
        """Train for ``steps`` optimizer steps (resuming if a checkpoint exists).

        Returns:
            One :class:`StepOutput` per optimizer step of the whole run (resumed steps
            included), also written to ``out_dir/train_log.jsonl``.
        """
        cfg = self.cfg
        saved_flags = {n: p.requires_grad for n, p in self.model.named_parameters()}
        for n, p in self.model.named_parameters():
            p.requires_grad_(n in self.masks)
        opt = torch.optim.AdamW(self.params, lr=self.lr, betas=tuple(cfg.adam_betas), eps=cfg.adam_eps,
                                weight_decay=0.0)
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda s: lr_factor(s, self.steps, cfg.warmup_steps, cfg.lr_schedule, cfg.min_lr_ratio))
        start, history = 0, []
        if self.resume and self.checkpoint_path is not None and self.checkpoint_path.exists():
            start, history = self._load_checkpoint(opt, sched)
        self._write_log(history)
        bar = tqdm(total=self.steps, initial=start, desc=f"train {self.stage}".strip(), disable=not self.progress,
                   dynamic_ncols=True)
        try:
            with neuron_hooks(self.model, self.hooks):
                log_file = open(self.out_dir / TRAIN_LOG, "a") if self.out_dir is not None else None  # noqa: SIM115
                try:
                    for step in range(start, self.steps):
                        out = self._step(step, opt, sched)
                        last = step + 1 == self.steps
                        if self.dev_items and (last or (cfg.eval_every and (step + 1) % cfg.eval_every == 0)):
                            dev = evaluate_dev(self.model, self.dev_items, cfg.batch_size)
                            out.dev_loss, out.dev_answer_logprob = dev["dev_loss"], dev["dev_answer_logprob"]
                        history.append(out)
                        if log_file is not None:
                            log_file.write(json.dumps(out.to_dict()) + "\n")
                            log_file.flush()
                        if last or (cfg.checkpoint_every and (step + 1) % cfg.checkpoint_every == 0):
                            self._save_checkpoint(step + 1, history, opt, sched, complete=last)
                        bar.update(1)
                        bar.set_postfix(loss=f"{out.loss:.3f}", lr=f"{out.lr:.2e}")
                        for cb in self.callbacks:
                            cb(out)
                finally:
                    if log_file is not None:
                        log_file.close()
        finally:
            bar.close()
            for n, p in self.model.named_parameters():
                p.requires_grad_(saved_flags[n])
                p.grad = None
        self._write_log(history)
        return history


def _py_state_to_list(state: tuple) -> list:
    version, internal, gauss = state
    return [version, list(internal), gauss]


def _py_state_from_list(state: list) -> tuple:
    version, internal, gauss = state
    return (version, tuple(internal), gauss)


def read_train_log(path: str | os.PathLike) -> list[StepOutput]:
    """Read a ``train_log.jsonl`` back into :class:`StepOutput` s."""
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    return [StepOutput.from_dict(json.loads(line)) for line in lines if line.strip()]


def train(*args: Any, **kwargs: Any) -> Any:
    """The method-level entry point, :func:`neurorit_lens.training.methods.train` (re-exported here)."""
    from neurorit_lens.training.methods import train as _train

    return _train(*args, **kwargs)


__all__ = ["train", "StepOutput", "Trainer", "evaluate_dev", "lr_factor", "read_train_log", "tokenize_items"]
