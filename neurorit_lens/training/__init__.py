"""Training: the trainer, gradient masks, training items and the methods.

Owns the compact training loop with hooks active (``trainer``), the masks that restrict
what trains (``masks``), how questions become noisy-context training items (``items``),
and Neuro-RIT's two stages and the baselines as plans for the one trainer (``methods``).
"""
