"""Causal tests: ablate neuron sets and compare them with random sets of the same shape.

- ``controls``: the ablation hooks (zero / mean / scale), reference neuron means, random
  control sets with the tested set's per-layer counts.
- ``measure``: held-out prompts per context condition (through the one prompt path), the
  measurement of Δ answer log-prob and Δ accuracy, and ``run_ablation``.
- ``gate``: the ``gate`` mode, whose hooks are gates learned per set on train items (stage 1's
  trainer, every model weight frozen).
- ``result``: ``Effect``, ``SetEffect``, ``AblationResult`` (``ablation.json``), the table and
  the plain-language verdicts, with paired bootstrap intervals.
"""
