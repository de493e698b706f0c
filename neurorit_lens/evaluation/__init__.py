"""Evaluation: greedy generation, answer metrics and statistics per noise setting.

Owns batched greedy decoding through TransformerLens (``generation``), SQuAD-style
metrics (``metrics``), memory-aware batch sizing (``resources``) and ``evaluate``, which
scores a model on every noise setting (``evaluate``).
"""
