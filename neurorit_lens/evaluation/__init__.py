"""Evaluation: every noise setting scored, and methods compared.

Owns ``evaluate``, which answers every question greedily under each noise setting and
scores the answers (``evaluate``), and the comparison of two methods on shared questions
(``comparison``). The pieces earlier stages share sit lower in the chain: greedy decoding
and batch sizing in ``models.generation`` / ``models.resources``, the answer metrics in
``data.answers``, the bootstrap, Wilson, McNemar and Holm in ``neurorit_lens.statistics``.
"""
