"""The trainer: masked SFT of a HookedTransformer with hooks active, resumable after a kill.

Both Neuro-RIT stages and every baseline are configurations of one loop
(:mod:`neurorit_lens.training.methods` builds them):

- **loss**: supervised fine-tuning on the answer tokens only: prompt + gold answer + EOS
  are tokenised (:func:`neurorit_lens.objective.tokenize_with_answers`) and the mean
  cross-entropy over answer tokens is minimised (:func:`neurorit_lens.objective.answer_sft_loss`:
  :func:`~neurorit_lens.objective.sft_loss`'s value, unembedding only the answer positions).
  With gradient accumulation each micro-batch is weighted by its share of the answer
  tokens, so ``batch_size=4, grad_accum=1`` and ``batch_size=2, grad_accum=2`` take the
  same step.
- **hooks** (e.g. stage 1's zero-ablation of ``I_excl``) stay on for every forward pass,
  training and dev evaluation alike, and are removed in ``finally``.
- **what trains**: a :data:`neurorit_lens.training.masks.ParamMasks` mapping. Parameters not in it
  get ``requires_grad=False``; masked gradient entries are zeroed after backward, before
  clipping (:class:`neurorit_lens.training.optim.MaskedParams`).
- **optimiser**: AdamW on the trainable entries only, with *decoupled weight decay applied
  through the mask* (``p -= lr * wd * p * mask``, then the Adam step with
  ``weight_decay=0``): PyTorch's AdamW would shrink masked entries too. Gradient-norm
  clipping, linear warmup followed by cosine / linear / constant decay (:func:`lr_factor`).
- **data parallel**: inside a ``torchrun`` process group each rank takes its strided slice
  of the global batch (the items a single process would take), weights its loss by its
  share of the *global* answer-token count, and the masked gradients are summed over ranks
  before clipping (:class:`neurorit_lens.distributed.collectives.GradientSync`), so every
  rank takes the single-process step. Rank 0 writes checkpoints and logs; every rank
  resumes from them. Outside a process group every collective is a no-op.
- **sharded** (``TrainConfig.sharding``, :func:`uses_fsdp`): the methods that train every
  weight (``full``, ``clean``) shard the model with FSDP2 instead
  (:func:`neurorit_lens.distributed.fsdp.shard_model_fsdp`, once, in place): each rank keeps
  ``1/W`` of every weight, gradient and AdamW moment, FSDP2 sums the gradients
  (reduce-scatter), the norm for clipping is all-reduced, and checkpoints hold full tensors
  gathered to rank 0 (the layout one process writes). The methods that train a few percent
  keep the replicated path above: their gradients and AdamW state are small, and their
  neuron masks, compact AdamW shadows and neuron-only gradients index plain local tensors.
- **determinism**: the data order is a pure function of ``(seed, position)`` (one seeded
  permutation per epoch), so resuming needs only the step count.
- **checkpoints** (:mod:`neurorit_lens.training.checkpoint`): every ``checkpoint_every``
  steps and at the end. A killed run restarted with the same arguments continues from it
  and ends with the same parameters and the same log as an uninterrupted run (tested,
  including a SIGKILLed subprocess).

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

import contextlib
import logging
import math
import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from neurorit_lens.config import FSDP_METHODS, TrainConfig
from neurorit_lens.distributed.collectives import (
    GradientSync,
    all_reduce_scalar,
    broadcast_parameters,
    global_token_count,
)
from neurorit_lens.distributed.fsdp import (
    full_optimizer_state,
    gather_full,
    is_sharded,
    shard_like,
    shard_model_fsdp,
    shard_optimizer_state,
)
from neurorit_lens.distributed.process import barrier, get_rank, get_world_size, local_batch_slice
from neurorit_lens.hooks import FwdHook
from neurorit_lens.objective import AnswerBatch, answer_position_logprobs, answer_sft_loss, tokenize_with_answers
from neurorit_lens.precision import autocast
from neurorit_lens.tl_backend import Model
from neurorit_lens.training.checkpoint import (
    CHECKPOINT,
    TRAIN_LOG,
    StepOutput,
    items_sha256,
    load_checkpoint,
    log_lines,
    save_checkpoint,
    write_train_log,
)
from neurorit_lens.training.items import TrainItem
from neurorit_lens.training.masks import ParamMasks, check_masks, full_param_masks
from neurorit_lens.training.optim import MaskedParams
from neurorit_lens.training.recompute import checkpointed_blocks
from neurorit_lens.training.sparse_grads import NeuronGrads

log = logging.getLogger(__name__)


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


def uses_fsdp(cfg: TrainConfig, world_size: int) -> bool:
    """Whether the trainer shards the model with FSDP2: only in a process group of several
    ranks, with ``cfg.sharding == "fsdp"``, or ``"auto"`` for a method that trains every
    weight (:data:`neurorit_lens.config.FSDP_METHODS`)."""
    if world_size <= 1:
        return False
    return cfg.sharding == "fsdp" or (cfg.sharding == "auto" and cfg.method in FSDP_METHODS)


def _check_continue(continue_from: tuple[int, int] | None, steps: int) -> tuple[int, int] | None:
    """Validate ``Trainer(continue_from=(offset, total))``: ``offset >= 0`` and ``offset + steps <= total``."""
    if continue_from is None:
        return None
    offset, total = (int(x) for x in continue_from)
    if offset < 0 or offset + steps > total:
        raise ValueError(f"continue_from={tuple(continue_from)}: need offset >= 0 and offset + steps "
                         f"({offset} + {steps}) <= total")
    return offset, total


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
    total_lp, total_tok = 0.0, 0
    device = model.cfg.device
    for s in range(0, len(items), batch_size):
        batch = tokenize_items(model, items[s: s + batch_size], max_len).to(device)
        _, lp = answer_position_logprobs(model, batch)  # the answer positions' logits only
        total_lp += float(lp.sum())
        total_tok += int(batch.answer_mask.sum())
    return {"dev_loss": -total_lp / max(total_tok, 1), "dev_answer_logprob": total_lp / len(items)}


class Trainer:
    """Masked SFT with hooks, gradient accumulation, clipping, schedule, checkpoints, data parallel.

    Args:
        model: the HookedTransformer to train in place.
        train_items: ``TrainItem`` s (or ``(prompt, answer)`` pairs).
        cfg: batch size, accumulation, learning rate, schedule, clipping, decay, seeds,
            eval and checkpoint intervals.
        dev_items: items for the teacher-forced dev loss (at most ``cfg.max_dev_items``).
        hooks: forward hooks active during every forward pass (e.g. ``zero_ablation(I_excl)``).
        param_masks: what may change (see :mod:`neurorit_lens.training.masks`); ``None`` = everything.
        out_dir: where ``checkpoint.pt`` and ``train_log.jsonl`` go; ``None`` = no files. In a
            process group it is the shared folder: rank 0 writes it, every rank resumes from it.
        steps: optimizer steps of this run (default ``cfg.steps``).
        lr: base learning rate (default ``cfg.lr``).
        stage: label written into every :class:`StepOutput`.
        step_offset: added to the reported step (multi-stage runs number steps globally).
        continue_from: ``(offset, total)``: this run is the part of a longer run of ``total``
            steps that starts at step ``offset``: its learning rate follows that run's one
            schedule (:func:`lr_factor` at ``offset + step`` of ``total``, so the warmup
            happens only where ``offset + step < warmup_steps``) and its data order continues
            that run's (batch ``offset + step``). ``None``: a run of its own (schedule and data
            order from step 0).
        data_offset: global batches of the data order already consumed before this run's
            first step (``None``: ``continue_from``'s offset, else 0). A later stage with a
            schedule of its own passes the steps of the stages before it, so it reads the items
            they did not.
        penalty: a term added to every step's loss (e.g. the L1 penalty of learned gates,
            :class:`neurorit_lens.training.gate.GatePenalty`); it is not part of the logged loss.
        resume: continue from ``out_dir/checkpoint.pt`` when it exists.
        callbacks: called with each :class:`StepOutput` after its checkpoint is written.
        progress: show a tqdm bar with the loss (rank 0 only).
        neuron_grads: compute the weight gradients of neuron-masked MLP layers for the
            trained neurons only (:mod:`neurorit_lens.training.sparse_grads`); ``False``
            takes the dense weight gradients and masks them (the old path, same result to
            float rounding).

    Raises:
        ValueError: no items, nothing trainable, ``steps < 1``, a global batch
            (``batch_size * grad_accum``) smaller than the number of ranks, FSDP2 sharding
            (:func:`uses_fsdp`) asked for entry-level masks or a penalty, or a model already
            sharded by FSDP2 given to a replicated run.
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
        continue_from: tuple[int, int] | None = None,
        data_offset: int | None = None,
        penalty: Callable[[], torch.Tensor] | None = None,
        resume: bool = True,
        callbacks: Sequence[Callable[[StepOutput], None]] = (),
        progress: bool = True,
        neuron_grads: bool = True,
    ):
        self.model, self.cfg, self.hooks = model, cfg, list(hooks)
        self.items = _as_items(train_items, "train")
        if not self.items:
            raise ValueError("no training items")
        self.dev_items = _as_items(dev_items or [], "dev")[: cfg.max_dev_items]
        self.masks: ParamMasks = full_param_masks(model) if param_masks is None else dict(param_masks)
        check_masks(model, self.masks)
        if not self.masks:
            raise ValueError("param_masks leave nothing trainable")
        self.steps = cfg.steps if steps is None else int(steps)
        if self.steps < 1:
            raise ValueError(f"steps must be >= 1, got {self.steps}")
        self.lr = cfg.lr if lr is None else float(lr)
        self.stage, self.step_offset, self.resume = stage, step_offset, resume
        self.continue_from = _check_continue(continue_from, self.steps)
        self.sched_offset, self.sched_total = self.continue_from or (0, self.steps)
        self.data_offset = self.sched_offset if data_offset is None else int(data_offset)
        if self.data_offset < 0:
            raise ValueError(f"data_offset must be >= 0, got {self.data_offset}")
        self.penalty = penalty
        self.callbacks = list(callbacks)
        self.items_per_step = cfg.batch_size * cfg.grad_accum
        self.rank, self.world_size = get_rank(), get_world_size()
        if self.items_per_step < self.world_size:
            raise ValueError(f"global batch of {self.items_per_step} items (batch_size * grad_accum) cannot be "
                             f"split over {self.world_size} ranks")
        self.shared_dir = Path(out_dir) if out_dir is not None else None
        self.out_dir = self.shared_dir if self.rank == 0 else None  # only rank 0 writes
        self.progress = progress and self.rank == 0
        self.fsdp = uses_fsdp(cfg, self.world_size)
        if self.fsdp:
            self._shard()
        elif is_sharded(model):
            raise ValueError("the model is sharded by FSDP2: only sharding 'fsdp' (full, clean) can train it")
        self.trainable = MaskedParams(model, self.masks)
        self.neuron_grads = NeuronGrads(model, self.masks if neuron_grads else {})
        self.neuron_skip = frozenset(self.neuron_grads.names)
        # under FSDP2 the gradients are summed by its reduce-scatter: nothing to sync here
        self.sync = GradientSync(() if self.fsdp else self.trainable.params, average=False, only_trainable=False)
        self._perms: dict[int, list[int]] = {}

    def _shard(self) -> None:
        """Shard the model with FSDP2 (once: a model sharded by an earlier run stays so)."""
        masked = sorted(n for n, m in self.masks.items() if m is not None)
        if masked or self.penalty is not None:
            raise ValueError(f"FSDP2 sharding (sharding {self.cfg.sharding!r}, method {self.cfg.method!r}) trains "
                             f"whole tensors only, but entry masks ({masked[:3]}) or a penalty index plain local "
                             "tensors, not FSDP shards: use sharding 'ddp'")
        if is_sharded(self.model):
            return
        params = dict(self.model.named_parameters())
        for n, p in params.items():  # before sharding, so FSDP2 sees what trains
            p.requires_grad_(n in self.masks)
        broadcast_parameters([p for n, p in params.items() if n in self.masks])  # every rank slices rank 0's
        shard_model_fsdp(self.model, sum_gradients=True)  # losses are normalised by the global token count
        log.info("sharded the model with FSDP2 over %d ranks", self.world_size)

    # --- data order -------------------------------------------------------------------
    def _perm(self, epoch: int) -> list[int]:
        if epoch not in self._perms:
            g = torch.Generator().manual_seed(self.cfg.seed * 1_000_003 + epoch)
            self._perms[epoch] = torch.randperm(len(self.items), generator=g).tolist()
        return self._perms[epoch]

    def batch_indices(self, step: int) -> list[int]:
        """Item indices of the global batch of 0-based step ``step`` (a pure function of seed and step)."""
        n = len(self.items)
        start = (step + self.data_offset) * self.items_per_step
        return [self._perm(pos // n)[pos % n] for pos in range(start, start + self.items_per_step)]

    def _micro_batches(self, items: list[int]) -> list[AnswerBatch]:
        """This rank's slice of a step's global batch (its item indices), tokenised, in micro-batches."""
        idx = local_batch_slice(items, self.rank, self.world_size)
        device, bs = self.trainable.params[0].device, self.cfg.batch_size
        return [tokenize_items(self.model, [self.items[i] for i in idx[s: s + bs]]).to(device)
                for s in range(0, len(idx), bs)]

    # --- the loop -----------------------------------------------------------------------
    def _step(self, step: int, opt: torch.optim.Optimizer, sched: Any) -> StepOutput:
        """One optimizer step: weighted micro-batch losses, masked and summed gradients, clip, decay, AdamW."""
        items = self.batch_indices(step)
        batches = self._micro_batches(items)
        n_tok = max(global_token_count(sum(int(b.answer_mask.sum()) for b in batches)), 1)
        self.trainable.zero_grad()
        loss_total = 0.0
        with checkpointed_blocks(self.model, self.cfg.activation_checkpointing):
            for b in batches:  # each micro-batch weighted by its share of the global answer tokens
                with autocast(self.cfg.precision, self.model.cfg.device):
                    loss = answer_sft_loss(self.model, b) * (int(b.answer_mask.sum()) / n_tok)
                loss.backward()
                loss_total += float(loss.detach())
        if self.penalty is not None:  # once per step; its gradient is summed over ranks below
            (self.penalty() / self.world_size).backward()
        self.trainable.mask_grads(skip=self.neuron_skip)  # neuron-only gradients are zero outside already
        self.sync()  # sum over ranks (no-op in one process)
        grad_norm = self.trainable.clip(self.cfg.max_grad_norm)
        lr_now = float(sched.get_last_lr()[0])
        self.trainable.decay(lr_now, self.cfg.weight_decay)
        self.trainable.step(opt)
        sched.step()
        return StepOutput(step=step + 1 + self.step_offset, loss=all_reduce_scalar(loss_total), lr=lr_now,
                          grad_norm=grad_norm, n_tokens=n_tok, stage=self.stage, items=items)

    def fit(self) -> list[StepOutput]:
        """Train for ``steps`` optimizer steps (resuming if a checkpoint exists).

        Returns:
            One :class:`StepOutput` per optimizer step of the whole run (resumed steps
            included), also written to ``out_dir/train_log.jsonl``.
        """
        if not self.fsdp:  # (sharded: broadcast before sharding)
            broadcast_parameters(self.trainable.params)  # every rank starts from rank 0's weights
        self.trainable.refresh()
        opt, sched = self._optimizer()
        start, history = self._resume(opt, sched)
        self._write_log(history)
        with self._running(start) as (write, bar):
            for step in range(start, self.steps):
                out = self._step(step, opt, sched)
                self._dev_metrics(out, step)
                history.append(out)
                write(out)
                if self._due(step, self.cfg.checkpoint_every):
                    self._save_checkpoint(step + 1, history, opt, sched)
                bar.update(1)
                bar.set_postfix(loss=f"{out.loss:.3f}", lr=f"{out.lr:.2e}")
                for cb in self.callbacks:
                    cb(out)
        self._write_log(history)
        barrier()  # rank 0's checkpoint and log are on disk before anyone goes on
        return history

    def _optimizer(self) -> tuple[torch.optim.Optimizer, Any]:
        """AdamW on the trainable entries (decay is applied through the mask) and the LR schedule."""
        cfg = self.cfg
        opt = torch.optim.AdamW(self.trainable.leaves, lr=self.lr, betas=tuple(cfg.adam_betas), eps=cfg.adam_eps,
                                weight_decay=0.0)
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda s: lr_factor(s + self.sched_offset, self.sched_total, cfg.warmup_steps, cfg.lr_schedule,
                                cfg.min_lr_ratio))
        return opt, sched

    def _due(self, step: int, every: int) -> bool:
        """After 0-based step ``step``: the last step, or every ``every`` steps (0: never)."""
        return step + 1 == self.steps or bool(every and (step + 1) % every == 0)

    def _dev_metrics(self, out: StepOutput, step: int) -> None:
        if self.dev_items and self._due(step, self.cfg.eval_every):
            with autocast(self.cfg.precision, self.model.cfg.device):
                dev = evaluate_dev(self.model, self.dev_items, self.cfg.batch_size)
            out.dev_loss, out.dev_answer_logprob = dev["dev_loss"], dev["dev_answer_logprob"]

    @contextlib.contextmanager
    def _running(self, start: int) -> Iterator[tuple[Callable[[StepOutput], None], Any]]:
        """Trainable flags, hooks, the appended log file and the progress bar, all undone on exit."""
        bar = tqdm(total=self.steps, initial=start, desc=f"train {self.stage}".strip(), disable=not self.progress,
                   dynamic_ncols=True)
        with contextlib.ExitStack() as stack:
            stack.callback(bar.close)
            stack.enter_context(self.trainable.trainable())
            stack.enter_context(self.neuron_grads.active(self.hooks))  # the hooks, and neuron-only weight grads
            log_file = stack.enter_context(open(self.out_dir / TRAIN_LOG, "a")) if self.out_dir is not None else None

            def write(out: StepOutput) -> None:
                if log_file is not None:
                    log_file.write(log_lines([out]))
                    log_file.flush()

            yield write, bar

    # --- checkpoints ------------------------------------------------------------------
    def fingerprint(self) -> dict[str, Any]:
        """What must match for a checkpoint to be resumed by this trainer."""
        keys = ("batch_size", "grad_accum", "warmup_steps", "max_grad_norm", "weight_decay", "seed",
                "lr_schedule", "min_lr_ratio", "adam_betas", "adam_eps")
        mask_count = {n: (None if m is None else int(m.sum())) for n, m in self.masks.items()}
        return {"steps": self.steps, "lr": self.lr, "stage": self.stage, "n_items": len(self.items),
                "items_sha256": items_sha256(self.items), "cfg": {k: getattr(self.cfg, k) for k in keys},
                "masks": mask_count, "hooks": [name for name, _ in self.hooks],
                **({"continue_from": list(self.continue_from)} if self.continue_from else {}),
                **({"data_offset": self.data_offset} if self.data_offset != self.sched_offset else {}),
                **({"penalty": getattr(self.penalty, "fingerprint", True)} if self.penalty is not None else {})}

    @property
    def checkpoint_path(self) -> Path | None:
        return self.shared_dir / CHECKPOINT if self.shared_dir is not None else None

    def _save_checkpoint(self, step: int, history: list[StepOutput], opt: torch.optim.Optimizer, sched: Any) -> None:
        if self.shared_dir is None:
            return
        complete = step == self.steps
        trainable = dict(zip(self.trainable.names, self.trainable.params, strict=True))
        optimizer = None if complete else opt.state_dict()
        if self.fsdp:  # every rank joins the gathers; rank 0 gets full tensors, as one process would write
            trainable = gather_full(trainable.items())
            optimizer = None if optimizer is None else full_optimizer_state(optimizer)
        if self.out_dir is None:
            return
        save_checkpoint(self.out_dir / CHECKPOINT, step=step, position=step * self.items_per_step, complete=complete,
                        fingerprint=self.fingerprint(), trainable=trainable, optimizer=optimizer,
                        scheduler=sched.state_dict(), history=history)

    def _resume(self, opt: torch.optim.Optimizer, sched: Any) -> tuple[int, list[StepOutput]]:
        """Load ``checkpoint_path`` into the weights, optimizer and schedule; ``(step, log so far)``."""
        path = self.checkpoint_path
        if not (self.resume and path is not None and path.exists()):
            return 0, []
        state = load_checkpoint(path, self.fingerprint())
        with torch.no_grad():
            for n, p in zip(self.trainable.names, self.trainable.params, strict=True):
                p.copy_(shard_like(state["trainable"][n], p))  # sharded: this rank's slice of the full tensor
        self.trainable.refresh()
        if state["optimizer"] is not None:
            osd = state["optimizer"]
            if self.fsdp:
                osd = shard_optimizer_state(osd, [p for g in opt.param_groups for p in g["params"]])
            opt.load_state_dict(osd)
        sched.load_state_dict(state["scheduler"])
        log.info("resumed %s from %s at step %d/%d", self.stage or "training", path, state["step"], self.steps)
        return int(state["step"]), state["log"]

    def _write_log(self, history: list[StepOutput]) -> None:
        if self.out_dir is not None:
            write_train_log(self.out_dir / TRAIN_LOG, history)


__all__ = ["CHECKPOINT", "TRAIN_LOG", "StepOutput", "Trainer", "evaluate_dev", "lr_factor", "tokenize_items",
           "uses_fsdp"]
