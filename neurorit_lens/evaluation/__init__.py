"""Evaluation: every noise setting scored.

Owns ``evaluate``, which answers every question greedily under each noise setting and
scores the answers (the paired comparison of methods is :mod:`neurorit_lens.experiments`).
The pieces earlier stages share sit lower in the chain: greedy decoding
and batch sizing in ``models.generation`` / ``models.resources``, the answer metrics in
``data.answers``, the bootstrap, Wilson, McNemar and Holm in ``neurorit_lens.statistics``.
"""
