"""neurorit_lens: Neuro-RIT on TransformerLens.

Find the MLP neurons that process relevant vs irrelevant retrieved passages, test
what they do causally, and tune at neuron and layer level for noise-robust RAG.
"""

__version__ = "0.1.0"
