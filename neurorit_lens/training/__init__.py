"""Training: the one trainer, gradient masks, training items, the method plans and ``train``.

Owns the compact training loop with hooks active, data parallel under ``torchrun``
(``trainer``), what a run may move and how AdamW steps it (``optim``), checkpoints and the
training log (``checkpoint``), the masks that restrict what trains (``masks``), how
questions become noisy-context training items (``items``), Neuro-RIT's two stages and the
baselines as plans for the one trainer (``plans``), and the entry point ``methods.train``.
"""
