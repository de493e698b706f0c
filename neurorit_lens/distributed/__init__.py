"""Scaling past one process with PyTorch's own distributed stack (``torchrun``, c10d).

Owns process-group set-up, ranks and sharding (``process``), the collectives
(``collectives``: all-reduces, gradient sync, broadcasts, FSDP) and sharded mining
(``mining``). Data-parallel training is part of the one trainer
(:class:`neurorit_lens.training.trainer.Trainer`), which uses these primitives; nothing
here imports :mod:`neurorit_lens.training`.
"""
