"""Neurons: which MLP neurons process relevant and irrelevant contexts.

Owns the neuron types and set algebra (``sets``), attribution of the answer objective to
neurons (``attribution``: Integrated Gradients and cheaper estimators, with the gated
passes in ``gates``), the selection rules (``selection``), the definitions of the
irrelevant-context condition and their statistics (``irrelevant``), the per-example score
files that make mining resumable (``score_files``) and the mining driver that scores
examples and selects the five sets (``mining``).
"""
