"""Evaluation: greedy generation, answer metrics and statistics per noise setting.

Owns batched greedy decoding (``generation``: a transformers twin for hook-free models,
TransformerLens with a KV cache when hooks are active), answer extraction, SQuAD-style
metrics and the copy rate (``metrics``), bootstrap, Wilson, McNemar and Holm
(``statistics``), memory-aware batch sizing (``resources``) and ``evaluate``, which scores
a model on every noise setting (``evaluate``).
"""
