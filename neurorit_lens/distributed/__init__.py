"""Scaling past one process with PyTorch's own distributed stack (``torchrun``, c10d).

Owns process-group set-up, ranks and sharding (``process``), the collectives
(``collectives``: all-reduces, gradient sync, broadcasts), FSDP2 sharding and the moves
between its shards and full tensors (``fsdp``) and sharded mining (``mining``). Data-parallel
and sharded training are part of the one trainer
(:class:`neurorit_lens.training.trainer.Trainer`), which uses these primitives; nothing
here imports :mod:`neurorit_lens.training`.
"""
