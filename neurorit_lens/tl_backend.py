"""The one module that imports TransformerLens.

Everything else in the package reaches TL through these names, so a different
backend (for example TL's ``TransformerBridge``) can be swapped in here later.
"""

from __future__ import annotations

import warnings

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    from transformer_lens import HookedTransformer, HookedTransformerConfig
    from transformer_lens import TransformerLensKeyValueCache as KeyValueCache
    from transformer_lens import loading_from_pretrained as tl_loading
    from transformer_lens import utils as tl_utils
    from transformer_lens.hook_points import HookPoint

Model = HookedTransformer
ModelConfig = HookedTransformerConfig

__all__ = [
    "HookPoint",
    "HookedTransformer",
    "HookedTransformerConfig",
    "KeyValueCache",
    "Model",
    "ModelConfig",
    "act_name",
    "tl_loading",
    "tl_utils",
]


def act_name(site: str, layer: int) -> str:
    """TL hook name for ``site`` (``post``, ``pre``, ``resid_pre`` ...) at ``layer``."""
    return tl_utils.get_act_name(site, layer)
