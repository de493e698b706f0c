"""Model loading (the embedded SmolLM2 default, Gemma 3 270M, local checkpoints offline, tiny test
models) and batched greedy generation (``generation``).

>>> from neurorit_lens.models import load_model, is_instruct, SUPPORTED
>>> "smollm2-135m-instruct" in SUPPORTED
True
>>> is_instruct(load_model("tiny"))
False
"""

from neurorit_lens.models.cache import CacheDirError
from neurorit_lens.models.registry import (
    DEFAULT_MODEL,
    SUPPORTED,
    default_cache_dir,
    is_instruct,
    load_model,
)
from neurorit_lens.models.tiny import tiny_config, tiny_model, tiny_tokenizer

__all__ = [
    "CacheDirError",
    "DEFAULT_MODEL",
    "SUPPORTED",
    "default_cache_dir",
    "is_instruct",
    "load_model",
    "tiny_config",
    "tiny_model",
    "tiny_tokenizer",
]
