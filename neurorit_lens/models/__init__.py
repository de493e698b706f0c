"""Model loading: the embedded SmolLM2 default, local checkpoints offline, tiny test models."""

from .tiny import tiny_config, tiny_model, tiny_tokenizer

__all__ = ["tiny_config", "tiny_model", "tiny_tokenizer"]
