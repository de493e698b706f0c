"""Tiny random HookedTransformers with a tokenizer built offline, for tests and doctests.

The tokenizer is a byte-level BPE trained in-process on a fixed text, saved to a temp
dir and reloaded through ``AutoTokenizer`` (an in-memory tokenizer lacks
``name_or_path``, which TL needs). It covers every byte, so any text tokenises, and it
has BOS/EOS/PAD tokens and a chat template, so the chat prompt path is testable too.
"""

from __future__ import annotations

import functools
import tempfile

import torch

from neurorit_lens.tl_backend import HookedTransformer, HookedTransformerConfig

_CORPUS = (
    "Question: Who wrote the report? Answer: Alice wrote it. The capital of Zarnia is Velmor. "
    "Passages: Document 1 says the river Quell flows north. Irrelevant text about weather and trains. "
    "What is the name of the tallest tower in Brindle? The Sorrel Spire is 300 metres tall. "
    "user assistant system context answer question passage relevant irrelevant 0123456789 "
) * 4

CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


@functools.lru_cache(maxsize=4)
def tiny_tokenizer(vocab_size: int = 384):
    """A byte-level BPE tokenizer with BOS/EOS/PAD and a chat template, built offline."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<pad>"]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator([_CORPUS], trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|endoftext|>",
        eos_token="<|im_end|>",
        pad_token="<pad>",
        unk_token=None,
    )
    fast.chat_template = CHAT_TEMPLATE
    d = tempfile.mkdtemp(prefix="neurorit_tiny_tok_")
    fast.save_pretrained(d)
    return AutoTokenizer.from_pretrained(d, local_files_only=True)


def tiny_config(
    n_layers: int = 2,
    d_model: int = 32,
    d_mlp: int = 64,
    n_heads: int = 4,
    gated: bool = False,
    n_ctx: int = 512,
    d_vocab: int | None = None,
    seed: int = 0,
    normalization_type: str = "LN",
    act_fn: str = "gelu",
) -> HookedTransformerConfig:
    if d_vocab is None:
        d_vocab = len(tiny_tokenizer())
    return HookedTransformerConfig(
        n_layers=n_layers,
        d_model=d_model,
        d_head=d_model // n_heads,
        n_heads=n_heads,
        d_mlp=d_mlp,
        d_vocab=d_vocab,
        n_ctx=n_ctx,
        act_fn=act_fn,
        gated_mlp=gated,
        normalization_type=normalization_type,
        positional_embedding_type="rotary" if gated else "standard",
        seed=seed,
        default_prepend_bos=True,
        original_architecture="neurorit_tiny",
    )


def tiny_model(
    n_layers: int = 2,
    d_model: int = 32,
    d_mlp: int = 64,
    n_heads: int = 4,
    gated: bool = False,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
    **cfg_kwargs,
) -> HookedTransformer:
    """A tiny random HookedTransformer (seeded) with the offline tokenizer.

    >>> m = tiny_model(n_layers=2, d_mlp=64)
    >>> m.cfg.n_layers, m.cfg.d_mlp
    (2, 64)
    """
    tok = tiny_tokenizer()
    cfg = tiny_config(n_layers=n_layers, d_model=d_model, d_mlp=d_mlp, n_heads=n_heads, gated=gated,
                      seed=seed, d_vocab=len(tok), **cfg_kwargs)
    torch.manual_seed(seed)
    model = HookedTransformer(cfg, tokenizer=tok, move_to_device=False)
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model if dtype == torch.float32 else model.to(dtype)
