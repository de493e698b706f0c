"""Batched greedy generation on a HookedTransformer, with a KV cache and left padding.

Greedy decoding picks ``argmax`` of the next-token logits at every step. To decode many
prompts at once they are tokenised one by one (as TL's ``to_tokens`` does, BOS included
when the model's config says so), sorted by length so each batch holds prompts of similar
length, and LEFT padded so that every row's last real token sits in the last column. An
explicit ``attention_mask`` (1 = real token, 0 = pad) goes to the model with TL's key-value
cache: TL then masks the pad keys in attention and counts positions from each row's first
real token (absolute and rotary embeddings alike), so a padded row computes exactly what
it would compute alone. Each later step feeds one token per row and reuses the cached keys
and values. A row stops at EOS or at a chat end token (``<|im_end|>``, ``<end_of_turn>``,
...); finished rows are fed a pad token until every row is done. With ``stop_at_newline`` a
row also stops after the first newline that ends a non-blank line (leading blank lines do
not count, as the scorer skips them; :func:`newline_token_ids`). That token is kept, so the
output is the unstopped output up to and including it and its first non-blank line, the
line :func:`neurorit_lens.data.answers.extract_answer` scores, is the same; the batch
ends as soon as every row has stopped.

Forward hooks attached to the model (ablation, functional deactivation) stay in effect
for every forward pass here, the prompt pass and each one-token step. The first pass runs
the blocks with ``stop_at_layer`` and unembeds only the last position, so the prompt's
full ``[batch, pos, d_vocab]`` logits are never materialised.

Two backends run the same loop. A model with no hook registered, of an architecture
:mod:`neurorit_lens.models.export` writes (Llama-style, GPT-2), is decoded by default with
its transformers twin (built in memory, cached until a parameter changes): the same
weights (``b_in`` folded exactly), the same left padding and positions, and HF's fused
attention: 1.7x faster than TL on CPU (benchmarks/results/bench_generation.md). Logits
agree to ~1e-6, not bitwise, so a near-tie can rarely pick another token. Everything else (hooks active, other
architectures, ``backend="tl"``) goes through TransformerLens.

An ablation that bakes exactly into the weights (a neuron's post activation multiplied by
a factor: zero ablation at 0, scale ablation) can be decoded by the twin too:
:func:`scaled_neurons_in_twin` multiplies the neurons' rows of the twin's MLP output
projection by the factor for a ``with`` block (restored bit for bit afterwards). At factor 0
this is exactly the hook's zero activation (a zero product adds nothing to the output sum);
other factors round once more or less. The ablation stage uses it for the baseline and
every condition, so that all its conditions share one numerical path, the twin's.

>>> from neurorit_lens.models import tiny_model
>>> out = generate_greedy(tiny_model(), ["The capital of Zarnia is", "Hi"], max_new_tokens=3,
...                       show_progress=False)
>>> len(out)
2
"""

from __future__ import annotations

import contextlib
import logging
import weakref
from collections.abc import Callable, Iterator, Sequence
from typing import Any, get_args

import torch
from jaxtyping import Float, Int
from tqdm.auto import tqdm

from neurorit_lens.config import EvalConfig, GenerationBackend
from neurorit_lens.models.export import CHAT_END_TOKENS, EXPORTABLE, stop_ids_of, to_hf_model
from neurorit_lens.models.resources import fit_batch_size, generation_bytes_per_row
from neurorit_lens.objective import encode_prompt
from neurorit_lens.tl_backend import KeyValueCache, Model

__all__ = ["CHAT_END_TOKENS", "decode_layout", "encode_for_generation", "generate_greedy", "generate_greedy_ids",
           "hooks_active", "left_pad", "newline_token_ids", "scaled_neurons_in_twin", "stop_token_ids", "twin_of"]
log = logging.getLogger(__name__)

#: The generation backends (:data:`neurorit_lens.config.GenerationBackend`).
BACKENDS: tuple[str, ...] = get_args(GenerationBackend)

def stop_token_ids(model: Model) -> list[int]:
    """Token ids that end a generated answer: the tokenizer's EOS plus chat end tokens.

    Only tokens the tokenizer knows as special (or added) tokens count, so an ordinary
    word that happens to be spelled like one is never a stop token.
    """
    if model.tokenizer is None:
        raise ValueError("model has no tokenizer; generation needs one")
    return stop_ids_of(model.tokenizer)


_LINE_TABLES: dict[int, tuple[Any, tuple[list[int], list[int], list[int]]]] = {}


def newline_token_ids(tokenizer: Any) -> tuple[list[int], list[int], list[int]]:
    """Token tables of ``stop_at_newline``: ``(newline, text, text_then_newline)`` ids.

    ``newline``: tokens whose decoded text holds a newline; ``text``: tokens with a
    non-white-space character; ``text_then_newline``: tokens with a non-white-space
    character before their last newline (they end a non-blank line on their own). Special
    tokens are in none. Every vocabulary entry is decoded once per tokenizer (cached).
    """
    hit = _LINE_TABLES.get(id(tokenizer))
    if hit is not None and hit[0] is tokenizer:
        return hit[1]
    special = set(getattr(tokenizer, "all_special_ids", []) or [])
    texts = tokenizer.batch_decode([[i] for i in range(len(tokenizer))])
    keep = [(i, t) for i, t in enumerate(texts) if i not in special]
    newline = [i for i, t in keep if "\n" in t]
    text = [i for i, t in keep if t.strip()]
    ends = [i for i, t in keep if "\n" in t and t[: t.rindex("\n")].strip()]
    _LINE_TABLES[id(tokenizer)] = (tokenizer, (newline, text, ends))
    return newline, text, ends


def _pad_id(model: Model) -> int:
    tok = model.tokenizer
    for cand in (tok.pad_token_id, tok.eos_token_id, tok.bos_token_id, 0):
        if cand is not None:
            return int(cand)
    return 0  # pragma: no cover


def encode_for_generation(model: Model, prompt: str) -> list[int]:
    """Prompt ids as TL tokenises them (BOS per ``cfg.default_prepend_bos``), never two BOS.

    The same ids as :func:`neurorit_lens.objective.encode_prompt`, so generation and teacher
    forcing always see one tokenisation of a prompt.
    """
    return encode_prompt(model, prompt)


def left_pad(
    rows: Sequence[Sequence[int]], pad_id: int, device: torch.device | str = "cpu"
) -> tuple[Int[torch.Tensor, "batch pos"], Int[torch.Tensor, "batch pos"]]:
    """Left-pad token id lists into ``(tokens, attention_mask)`` with mask 1 on real tokens."""
    if not rows or any(len(r) == 0 for r in rows):
        raise ValueError("every row needs at least one token")
    T = max(len(r) for r in rows)
    tokens = torch.full((len(rows), T), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), T), dtype=torch.long)
    for b, r in enumerate(rows):
        tokens[b, T - len(r):] = torch.as_tensor(list(r), dtype=torch.long)
        mask[b, T - len(r):] = 1
    return tokens.to(device), mask.to(device)


def _as_transposed(w: torch.Tensor) -> torch.Tensor:
    return w.T.contiguous().T  # same values and shape; ``.T.contiguous()`` is now a view


def _as_qkv(w: torch.Tensor) -> torch.Tensor:
    return w.permute(0, 2, 1).contiguous().permute(0, 2, 1)  # "h m d -> (h d) m" is now a view


def _as_out(w: torch.Tensor) -> torch.Tensor:
    return w.permute(2, 0, 1).contiguous().permute(1, 2, 0)  # "h d m -> m (h d)" is now a view


_LAYOUTS = {
    "mlp.W_in": (2, _as_transposed), "mlp.W_gate": (2, _as_transposed), "mlp.W_out": (2, _as_transposed),
    "unembed.W_U": (2, _as_transposed),
    "attn.W_Q": (3, _as_qkv), "attn.W_K": (3, _as_qkv), "attn.W_V": (3, _as_qkv),
    "attn._W_K": (3, _as_qkv), "attn._W_V": (3, _as_qkv), "attn.W_O": (3, _as_out),
}


@contextlib.contextmanager
def decode_layout(model: Model) -> Iterator[Model]:
    """Temporarily store weights in the memory layout TL's forward transposes them into.

    TL's MLP and unembed call ``W.T.contiguous()`` and its attention rearranges
    ``W_Q/W_K/W_V/W_O`` on every forward, which copies every weight matrix once per
    forward pass. In a one-token decode step those copies cost more than the matmuls.
    Inside this block each such parameter holds the same values (same shape, same
    ``Parameter`` object, so hooks and optimizers are unaffected) with strides that make
    TL's transform a free view; the matmuls then see the very same contiguous operands,
    so logits are bitwise unchanged. The original tensors are restored in ``finally``.
    """
    saved: list[tuple[torch.nn.Parameter, torch.Tensor]] = []
    try:
        with torch.no_grad():
            for name, p in model.named_parameters():
                for suffix, (ndim, fn) in _LAYOUTS.items():
                    if name.endswith(suffix) and p.dim() == ndim and p.is_floating_point():
                        saved.append((p, p.data))
                        p.data = fn(p.data)
                        break
        yield model
    finally:
        for p, data in reversed(saved):
            p.data = data


def _last_logits(model: Model, resid: Float[torch.Tensor, "batch pos d_model"]) -> Float[torch.Tensor, "batch d_vocab"]:
    """Final norm + unembed of the last position only (hooks in ln_final still fire)."""
    x = resid[:, -1:, :]
    if model.cfg.normalization_type is not None:
        x = model.ln_final(x)
    logits = model.unembed(x)[:, -1, :]
    cap = getattr(model.cfg, "output_logits_soft_cap", None)
    if cap is not None and cap > 0:
        logits = cap * torch.tanh(logits / cap)
    return logits


Step = Callable[[torch.Tensor], Float[torch.Tensor, "batch d_vocab"]]


Lines = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


def _line_ends(tok: torch.Tensor, seen_text: torch.Tensor, lines: Lines) -> torch.Tensor:
    """Rows whose token ``tok`` ends their first non-blank line (``seen_text``: a row has
    already produced a non-white-space character). Updates ``seen_text`` in place."""
    newline, text, ends = lines
    done = torch.isin(tok, ends) | (seen_text & torch.isin(tok, newline))
    seen_text |= torch.isin(tok, text)
    return done


def _greedy_loop(first: Float[torch.Tensor, "batch d_vocab"], step: Step, max_new_tokens: int,
                 stop_ids: torch.Tensor, pad_id: int, lines: Lines | None = None) -> list[list[int]]:
    """Greedy decoding from the prompt's last logits; ``step(tokens [batch])`` returns the
    next logits. Finished rows are fed ``pad_id``; stop tokens are not returned. With
    ``lines`` (:func:`newline_token_ids` as tensors) a row keeps the token that ends its
    first non-blank line and stops."""
    next_tok = first.argmax(-1)
    B, device = next_tok.shape[0], next_tok.device
    finished = torch.zeros(B, dtype=torch.bool, device=device)
    out: list[list[int]] = [[] for _ in range(B)]
    stop_ids = stop_ids.to(device)
    lines = tuple(t.to(device) for t in lines) if lines is not None else None  # type: ignore[assignment]
    seen_text = torch.zeros(B, dtype=torch.bool, device=device)
    for i in range(max_new_tokens):
        if stop_ids.numel():
            is_stop = torch.isin(next_tok, stop_ids) & ~finished
        else:
            is_stop = torch.zeros_like(finished)
        for b in (~finished & ~is_stop).nonzero().flatten().tolist():
            out[b].append(int(next_tok[b]))
        if lines is not None:
            is_stop = is_stop | (_line_ends(next_tok, seen_text, lines) & ~finished)
        finished |= is_stop
        if bool(finished.all()) or i == max_new_tokens - 1:
            break
        next_tok = step(torch.where(finished, torch.full_like(next_tok, pad_id), next_tok)).argmax(-1)
    return out


def _tl_batch(model: Model, rows: Sequence[Sequence[int]], max_new_tokens: int, stop_ids: torch.Tensor,
              pad_id: int, lines: Lines | None = None) -> list[list[int]]:
    """One batch through the HookedTransformer with TL's KV cache (hooks fire on every pass)."""
    device = model.cfg.device or "cpu"
    tokens, mask = left_pad(rows, pad_id, device)
    cache = KeyValueCache.init_cache(model.cfg, device, tokens.shape[0])
    ones = torch.ones((tokens.shape[0], 1), dtype=torch.long, device=device)
    n = model.cfg.n_layers

    def step(feed: torch.Tensor) -> torch.Tensor:
        return _last_logits(model, model(feed[:, None], attention_mask=ones, past_kv_cache=cache, stop_at_layer=n))

    first = _last_logits(model, model(tokens, attention_mask=mask, past_kv_cache=cache, stop_at_layer=n))
    return _greedy_loop(first, step, max_new_tokens, stop_ids, pad_id, lines)


def _hf_batch(hf, rows: Sequence[Sequence[int]], max_new_tokens: int, stop_ids: torch.Tensor,
              pad_id: int, lines: Lines | None = None) -> list[list[int]]:
    """One batch through the exported transformers model: same left padding, positions
    counted from each row's first real token (as TL counts them), its own KV cache."""
    tokens, mask = left_pad(rows, pad_id, hf.device)
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    out = hf(input_ids=tokens, attention_mask=mask, position_ids=pos, use_cache=True, logits_to_keep=1)
    state = {"cache": out.cache, "mask": mask, "pos": pos[:, -1:]}
    ones = torch.ones((tokens.shape[0], 1), dtype=mask.dtype, device=mask.device)

    def step(feed: torch.Tensor) -> torch.Tensor:
        state["mask"] = torch.cat([state["mask"], ones], dim=1)
        state["pos"] = state["pos"] + 1
        o = hf(input_ids=feed[:, None], attention_mask=state["mask"], position_ids=state["pos"],
               cache=state["cache"], use_cache=True)
        state["cache"] = o.cache
        return o.logits[:, -1, :]

    return _greedy_loop(out.logits[:, -1, :], step, max_new_tokens, stop_ids, pad_id, lines)


def hooks_active(model: Model) -> bool:
    """Whether any forward/backward hook is registered on the model or globally."""
    from torch.nn.modules import module as _m

    if _m._global_forward_hooks or _m._global_forward_pre_hooks or _m._global_backward_hooks:
        return True
    return any(m._forward_hooks or m._forward_pre_hooks or m._backward_hooks or m._backward_pre_hooks
               for m in model.modules())


_HF_CACHE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _hf_twin(model: Model):
    """The exported transformers twin of ``model``, rebuilt when any parameter changed.

    Cached per model (key: every parameter's storage address and in-place version
    counter, so training steps, ``load_state_dict`` and ``p.data = ...`` invalidate it).
    """
    key = (str(model.cfg.device), model.cfg.dtype, tuple((p.data_ptr(), p._version) for p in model.parameters()))
    hit = _HF_CACHE.get(model)
    if hit is not None and hit[0] == key:
        return hit[1]
    _HF_CACHE.pop(model, None)  # free the stale twin before building a new one
    hf = to_hf_model(model)
    _HF_CACHE[model] = (key, hf)
    return hf


def twin_of(model: Model) -> Any | None:
    """The model's cached transformers twin, or ``None`` when its architecture has none."""
    if getattr(model.cfg, "original_architecture", None) not in EXPORTABLE:
        return None
    try:
        return _hf_twin(model)
    except ValueError as e:
        log.info("no transformers twin: %s", e)
        return None


def _mlp_out_rows(hf: Any, layer: int) -> torch.Tensor | None:
    """``layer``'s MLP output weight in the twin, laid out ``[d_mlp, d_model]`` (a view), or
    ``None`` where scaling its rows is not the same as scaling the post activations (an MLP
    bias folded into the output projection)."""
    kind = getattr(hf.config, "model_type", "")
    if kind == "llama":
        down = hf.model.layers[layer].mlp.down_proj
        return None if down.bias is not None else down.weight.T  # Linear: [d_model, d_mlp]
    if kind == "gpt2":
        return hf.transformer.h[layer].mlp.c_proj.weight  # Conv1D: [d_mlp, d_model]
    return None


@contextlib.contextmanager
def scaled_neurons_in_twin(model: Model, neurons: dict[int, Sequence[int]], factor: float) -> Iterator[bool]:
    """Multiply the post activations of ``neurons`` (``{layer: indices}``) by ``factor`` in the
    model's transformers twin, for the ``with`` block, by scaling their output-weight rows.

    Inside the block, ``generate_greedy(model, ..., backend="hf")`` decodes the ablated model
    at the twin's speed (no hook on the TL model, whose weights are untouched). Yields
    ``False`` and changes nothing when the model has no twin or its MLP output carries a
    folded bias; the caller then uses hooks. The rows are restored bit for bit in ``finally``.
    """
    hf = twin_of(model)
    rows = {l: _mlp_out_rows(hf, l) for l in neurons} if hf is not None else {}
    if hf is None or any(w is None for w in rows.values()):
        yield False
        return
    saved: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
    try:
        with torch.no_grad():
            for layer, idx in neurons.items():
                w = rows[layer]
                assert w is not None
                i = torch.as_tensor(list(idx), dtype=torch.long, device=w.device)
                saved[layer] = (i, w[i].clone())
                w[i] = w[i] * factor
        yield True
    finally:
        with torch.no_grad():
            for layer, (i, old) in saved.items():
                w = rows[layer]
                assert w is not None
                w[i] = old


def _choose_backend(model: Model, backend: str):
    """``None`` for the TL path, else the transformers twin (see :func:`generate_greedy_ids`)."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(map(repr, BACKENDS))}, got {backend!r}")
    if backend == "tl":
        return None
    if hooks_active(model):
        if backend == "hf":
            raise ValueError("backend='hf' ignores hooks, and hooks are active on the model; use 'tl' or 'auto'")
        return None
    if backend == "auto" and getattr(model.cfg, "original_architecture", None) not in EXPORTABLE:
        return None
    try:
        return _hf_twin(model)
    except ValueError as e:
        if backend == "hf":
            raise
        log.info("generation falls back to TransformerLens: %s", e)
        return None


def generate_greedy_ids(
    model: Model,
    prompts: list[str],
    max_new_tokens: int = EvalConfig.max_new_tokens,
    batch_size: int = EvalConfig.batch_size,
    stop_at_eos: bool = True,
    show_progress: bool = True,
    backend: GenerationBackend = EvalConfig.generation_backend,
    stop_at_newline: bool = EvalConfig.stop_at_newline,
) -> list[list[int]]:
    """Like :func:`generate_greedy` but returns the new token ids (stop token excluded; with
    ``stop_at_newline`` the newline token that ended a row is included)."""
    _check_args(model, prompts, max_new_tokens, batch_size)
    if not prompts:
        return []
    ids = [encode_for_generation(model, p) for p in prompts]
    n_ctx = model.cfg.n_ctx
    for i, r in enumerate(ids):
        if len(r) + max_new_tokens > n_ctx:
            raise ValueError(f"prompt {i} has {len(r)} tokens; with max_new_tokens={max_new_tokens} it exceeds "
                             f"the model's context of {n_ctx} (truncate passages when rendering prompts)")
    stops = torch.tensor(stop_token_ids(model) if stop_at_eos else [], dtype=torch.long)
    pad_id = _pad_id(model)
    newlines: Lines | None = None
    if stop_at_newline:
        newlines = tuple(torch.tensor(t, dtype=torch.long) for t in newline_token_ids(model.tokenizer))  # type: ignore[assignment]
    order = sorted(range(len(ids)), key=lambda i: (-len(ids[i]), i))
    itemsize = torch.tensor([], dtype=model.cfg.dtype).element_size()
    batch_size = fit_batch_size(batch_size, generation_bytes_per_row(model.cfg, len(ids[order[0]]) + max_new_tokens,
                                                                     itemsize), model.cfg.device or "cpu",
                                what="generation batch")
    results: list[list[int]] = [[] for _ in ids]
    batches = [order[s:s + batch_size] for s in range(0, len(order), batch_size)]
    hf = _choose_backend(model, backend)
    layout = decode_layout(model) if hf is None else contextlib.nullcontext()
    with torch.inference_mode(), layout:
        for idx in tqdm(batches, desc="generate", unit="batch", leave=False, disable=not show_progress):
            rows = [ids[i] for i in idx]
            new = (_tl_batch(model, rows, max_new_tokens, stops, pad_id, newlines) if hf is None
                   else _hf_batch(hf, rows, max_new_tokens, stops, pad_id, newlines))
            for i, toks in zip(idx, new, strict=True):
                results[i] = toks
    return results


def _check_args(model: Model, prompts: Any, max_new_tokens: int, batch_size: int) -> None:
    if isinstance(prompts, str):
        raise ValueError("prompts must be a list of strings, not a single string")
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if model.tokenizer is None:
        raise ValueError("model has no tokenizer; generation needs one")
    for i, p in enumerate(prompts):
        if not isinstance(p, str):
            raise ValueError(f"prompt {i} is a {type(p).__name__}, not a string")


def generate_greedy(
    model: Model,
    prompts: list[str],
    max_new_tokens: int = EvalConfig.max_new_tokens,
    batch_size: int = EvalConfig.batch_size,
    stop_at_eos: bool = True,
    show_progress: bool = True,
    backend: GenerationBackend = EvalConfig.generation_backend,
    stop_at_newline: bool = EvalConfig.stop_at_newline,
) -> list[str]:
    """Greedy continuations of ``prompts`` (new text only), batched with a KV cache.

    Args:
        model: a HookedTransformer with a tokenizer. Hooks on it stay active throughout.
        prompts: fully rendered prompt strings (chat template already applied if wanted).
        max_new_tokens: most tokens generated per prompt (the defaults are
            :class:`~neurorit_lens.config.EvalConfig`'s: 48 tokens, batches of 8).
        batch_size: prompts per forward pass (prompts are grouped by length).
        stop_at_eos: stop a row at EOS or a chat end token (the stop token is not returned).
        show_progress: show a tqdm bar over batches.
        backend: ``"auto"`` (default) decodes hook-free models of an exportable
            architecture (Llama-style, GPT-2) with their transformers twin
            (:func:`neurorit_lens.models.export.to_hf_model`, built in memory and cached
            until a parameter changes), which is faster, and everything else, any model
            with hooks registered included, through TransformerLens. ``"tl"`` always uses
            TransformerLens; ``"hf"`` requires the twin (error with hooks active).
        stop_at_newline: also end a row at its first token whose text holds a newline
            (kept in the output); the batch stops once every row has stopped.

    Returns:
        One decoded string per prompt, in the input order, special tokens skipped.

    Raises:
        ValueError: on a non-list/str prompt, bad sizes, or a prompt too long for the model.
    """
    ids = generate_greedy_ids(model, prompts, max_new_tokens, batch_size, stop_at_eos, show_progress, backend,
                              stop_at_newline)
    return [model.tokenizer.decode(t, skip_special_tokens=True) for t in ids]
