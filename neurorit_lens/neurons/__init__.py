"""Neurons: which MLP neurons process relevant and irrelevant contexts.

Owns the neuron types and set algebra (``sets``), attribution of the answer objective to
neurons (``attribution``: Integrated Gradients and cheaper estimators), the selection rules
(``selection``) and the mining driver that scores examples and selects the five sets
(``mining``).
"""
