"""Scaling past one process with PyTorch's own distributed stack (``torchrun``, c10d).

Owns process-group set-up and collectives (``process``), sharded mining (``mining``) and
data-parallel training (``training``).
"""
