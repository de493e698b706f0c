"""Data-parallel Neuro-RIT training: :class:`neurorit_lens.training.trainer.Trainer` on many ranks.

Every rank holds the whole model with the same hooks (stage 1's deactivation) and the same
gradient masks. At each optimizer step the global batch (``batch_size * grad_accum`` items,
the same items a single process would take) is split across ranks
(:func:`neurorit_lens.distributed.process.local_batch_slice`); each rank back-propagates its part,
its masked gradients are weighted by its share of the *global* answer-token count and
summed over ranks with one bucketed ``all_reduce`` of the trainable parameters only
(:class:`neurorit_lens.distributed.process.GradientSync`). Clipping and AdamW then see exactly
the gradient of the single-process loss on the global batch, so every rank takes the same
step and the loss trajectory equals single-process training (float summation order
aside; tested to 1e-5 with 2 gloo processes).

Rank 0 writes checkpoints and logs; every rank resumes from rank 0's checkpoint, so a
killed job restarted with the same world size continues where it stopped.

Outside a process group :class:`DistributedTrainer` behaves exactly like ``Trainer``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from neurorit_lens.config import TrainConfig
from neurorit_lens.distributed.process import (
    GradientSync,
    all_reduce_scalar,
    barrier,
    broadcast_parameters,
    get_rank,
    get_world_size,
    global_token_count,
    is_distributed,
    local_batch_slice,
)
from neurorit_lens.hooks import FwdHook
from neurorit_lens.tl_backend import Model
from neurorit_lens.training.items import TrainItem
from neurorit_lens.training.masks import ParamMasks
from neurorit_lens.training.trainer import CHECKPOINT, StepOutput, Trainer, tokenize_items

__all__ = ["DistributedTrainer", "trainer_class"]


class DistributedTrainer(Trainer):
    """``Trainer`` whose optimizer steps are data parallel over the ranks of the process group.

    Same arguments as :class:`~neurorit_lens.training.trainer.Trainer`; ``out_dir`` is the shared
    folder (written by rank 0 only, read by every rank on resume).

    Raises:
        ValueError: if the global batch (``batch_size * grad_accum``) has fewer items than
            there are ranks.
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
        **kwargs: Any,
    ):
        self.rank, self.world_size = get_rank(), get_world_size()
        super().__init__(model, train_items, cfg, dev_items, hooks, param_masks,
                         out_dir if self.rank == 0 else None, **kwargs)
        self.shared_dir = Path(out_dir) if out_dir is not None else None
        if self.items_per_step < self.world_size:
            raise ValueError(f"global batch of {self.items_per_step} items (batch_size * grad_accum) cannot be "
                             f"split over {self.world_size} ranks")
        self.sync = GradientSync(self.params, average=False, only_trainable=False)
        self._n_local = 0
        self._n_global = 1
        if self.rank != 0:
            self.progress = False

    @property
    def checkpoint_path(self) -> Path | None:
        return self.shared_dir / CHECKPOINT if self.shared_dir is not None else None

    def batch_indices(self, step: int) -> list[int]:
        """This rank's slice of the global batch of step ``step``; also counts global answer tokens."""
        idx = super().batch_indices(step)
        if not is_distributed():
            return idx
        local = local_batch_slice(idx, self.rank, self.world_size)
        self._n_local = int(tokenize_items(self.model, [self.items[i] for i in local]).answer_mask.sum())
        self._n_global = max(global_token_count(self._n_local), 1)
        return local

    def _mask_grads(self) -> None:
        super()._mask_grads()
        if not is_distributed():
            return
        share = self._n_local / self._n_global
        for p in self.params:
            if p.grad is not None:
                p.grad.mul_(share)
        self.sync()

    def _step(self, step: int, opt, sched) -> StepOutput:
        out = super()._step(step, opt, sched)
        if is_distributed():
            out.loss = all_reduce_scalar(out.loss * self._n_local / self._n_global)
            out.n_tokens = self._n_global
        return out

    def fit(self) -> list[StepOutput]:
        broadcast_parameters(self.params)
        history = super().fit()
        barrier()  # rank 0's checkpoint and log are on disk before anyone goes on
        return history


def trainer_class() -> type[Trainer]:
    """:class:`DistributedTrainer` inside a multi-rank process group, else ``Trainer``."""
    return DistributedTrainer if is_distributed() else Trainer
