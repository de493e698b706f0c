"""Prompt + answer tokenisation and the attribution/training target F.

Teacher forcing: the gold answer tokens are appended to the prompt, and F is read at
the positions that *predict* them (position t predicts token t+1). Sequences are right
padded, which leaves every real position untouched in a causal model, so no attention
mask is needed for these forward passes.

F kinds (docs/design.md, 'Neurons and attribution'):
- ``logprob``: sum over answer tokens of log p(token | prefix) (default).
- ``prob``: exp of that sum, the probability of the whole answer.
- ``logit``: sum of the answer tokens' logits.
- ``logit_diff``: sum of (answer logit - largest other logit) per answer token.

:func:`answer_logprobs` gives the teacher-forced ``logprob`` F per example under optional
hooks (ablation's measurement, and a quick check on any prompts); :func:`prepare_answers`
tokenises the pairs once when the same prompts are scored under many hook sets.

>>> from neurorit_lens.models import tiny_model
>>> m = tiny_model()
>>> tuple(answer_logprobs(m, ["Q: capital of Zarnia? A:"], [" Velmor"]).shape)
(1,)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import get_args

import torch
from jaxtyping import Bool, Float, Int
from tqdm.auto import tqdm

from neurorit_lens.config import Target
from neurorit_lens.hooks import FwdHook, neuron_hooks
from neurorit_lens.tl_backend import Model

TARGETS = get_args(Target)


@dataclass
class AnswerBatch:
    """Right-padded prompt+answer tokens with the masks needed to score the answer."""

    tokens: Int[torch.Tensor, "batch pos"]
    answer_mask: Bool[torch.Tensor, "batch pos"]  # position predicts an answer token
    target_ids: Int[torch.Tensor, "batch pos"]  # the token each position predicts (next token)
    lengths: Int[torch.Tensor, "batch"]  # real (unpadded) length
    prompt_lengths: Int[torch.Tensor, "batch"]
    n_answer_tokens: Int[torch.Tensor, "batch"]

    def __len__(self) -> int:
        return self.tokens.shape[0]

    @property
    def last_prompt_pos(self) -> Int[torch.Tensor, "batch"]:
        """Position of the last prompt token (it predicts the first answer token)."""
        return self.prompt_lengths - 1

    def to(self, device: torch.device | str) -> AnswerBatch:
        return AnswerBatch(*(t.to(device) for t in (self.tokens, self.answer_mask, self.target_ids,
                                                     self.lengths, self.prompt_lengths, self.n_answer_tokens)))

    def select(self, idx: Sequence[int] | torch.Tensor) -> AnswerBatch:
        idx = torch.as_tensor(idx, dtype=torch.long)
        return AnswerBatch(self.tokens[idx], self.answer_mask[idx], self.target_ids[idx], self.lengths[idx],
                           self.prompt_lengths[idx], self.n_answer_tokens[idx])


def encode_answer(model: Model, answer: str) -> list[int]:
    """Token ids of an answer continuation (no BOS, no special tokens)."""
    return list(model.tokenizer.encode(answer, add_special_tokens=False))


def encode_prompt(model: Model, prompt: str, prepend_bos: bool | None = None) -> list[int]:
    """Prompt token ids as TL tokenises them (BOS per ``cfg.default_prepend_bos``), never two BOS.

    Rendered chat prompts keep their template's leading BOS string verbatim (SmolLM2's
    ``<|im_start|>``); when TL would prepend BOS as well (Gemma), the doubled BOS is dropped.
    """
    ids = model.to_tokens(prompt, prepend_bos=prepend_bos, truncate=False)[0].tolist()
    bos = getattr(model.tokenizer, "bos_token_id", None)
    if len(ids) >= 2 and bos is not None and ids[0] == bos and ids[1] == bos:
        ids = ids[1:]
    return ids


def tokenize_with_answers(
    model: Model,
    prompts: Sequence[str],
    answers: Sequence[str],
    append_eos: bool = False,
    prepend_bos: bool | None = None,
    max_len: int | None = None,
) -> AnswerBatch:
    """Tokenise prompt + answer pairs into a right-padded :class:`AnswerBatch`.

    ``answers`` are the exact continuation strings (the prompt module decides on a leading
    space). Raises ``ValueError`` naming the example if an answer tokenises to nothing.
    With ``max_len``, the prompt is cut from the left so that prompt + answer fit.
    """
    if len(prompts) != len(answers):
        raise ValueError(f"{len(prompts)} prompts but {len(answers)} answers")
    if not prompts:
        raise ValueError("no prompts given")
    pad = model.tokenizer.pad_token_id
    if pad is None:
        pad = model.tokenizer.eos_token_id or 0
    rows, p_lens, a_lens = [], [], []
    for i, (p, a) in enumerate(zip(prompts, answers, strict=True)):
        a_ids = encode_answer(model, a)
        if not a_ids:
            raise ValueError(f"answer {i} ({a!r}) tokenises to nothing")
        if append_eos and model.tokenizer.eos_token_id is not None:
            a_ids = a_ids + [model.tokenizer.eos_token_id]
        p_ids = encode_prompt(model, p, prepend_bos)
        if max_len is not None and len(p_ids) + len(a_ids) > max_len:
            keep = max_len - len(a_ids)
            if keep < 1:
                raise ValueError(f"answer {i} alone is longer than max_len={max_len}")
            p_ids = p_ids[:1] + p_ids[len(p_ids) - keep + 1:] if keep > 1 else p_ids[-1:]
        rows.append(p_ids + a_ids)
        p_lens.append(len(p_ids))
        a_lens.append(len(a_ids))
    T = max(len(r) for r in rows)
    B = len(rows)
    tokens = torch.full((B, T), pad, dtype=torch.long)
    target_ids = torch.full((B, T), pad, dtype=torch.long)
    answer_mask = torch.zeros((B, T), dtype=torch.bool)
    for b, r in enumerate(rows):
        tokens[b, : len(r)] = torch.tensor(r)
        target_ids[b, : len(r) - 1] = torch.tensor(r[1:])
        answer_mask[b, p_lens[b] - 1 : len(r) - 1] = True
    return AnswerBatch(
        tokens=tokens,
        answer_mask=answer_mask,
        target_ids=target_ids,
        lengths=torch.tensor([len(r) for r in rows]),
        prompt_lengths=torch.tensor(p_lens),
        n_answer_tokens=torch.tensor(a_lens),
    )


def token_logprobs(
    logits: Float[torch.Tensor, "batch pos d_vocab"], batch: AnswerBatch
) -> Float[torch.Tensor, "batch pos"]:
    """log p(target token) at every position, 0 where the position does not predict the answer."""
    lp = torch.log_softmax(logits.float(), dim=-1).gather(-1, batch.target_ids.unsqueeze(-1)).squeeze(-1)
    return lp * batch.answer_mask


def answer_target(
    logits: Float[torch.Tensor, "batch pos d_vocab"], batch: AnswerBatch, kind: str = "logprob"
) -> Float[torch.Tensor, "batch"]:
    """The scalar F per example (see module docstring)."""
    if kind not in TARGETS:
        raise ValueError(f"unknown target {kind!r}; choose from {TARGETS}")
    mask = batch.answer_mask
    if kind in ("logprob", "prob"):
        s = token_logprobs(logits, batch).sum(-1)
        return s if kind == "logprob" else s.exp()
    logits = logits.float()
    tgt = logits.gather(-1, batch.target_ids.unsqueeze(-1)).squeeze(-1)
    if kind == "logit":
        return (tgt * mask).sum(-1)
    others = logits.scatter(-1, batch.target_ids.unsqueeze(-1), float("-inf")).max(-1).values
    return ((tgt - others) * mask).sum(-1)


def sft_loss(logits: Float[torch.Tensor, "batch pos d_vocab"], batch: AnswerBatch) -> Float[torch.Tensor, ""]:
    """Mean cross-entropy over answer tokens only (the SFT loss for both stages)."""
    n = batch.answer_mask.sum().clamp(min=1)
    return -token_logprobs(logits, batch).sum() / n


@dataclass
class PreparedAnswers:
    """Prompt + answer pairs tokenised once, in length-sorted batches.

    ``batches`` holds ``(row indices, AnswerBatch)``; scores are scattered back to the
    original order of the ``n`` pairs.
    """

    batches: list[tuple[Int[torch.Tensor, "_rows"], AnswerBatch]]
    n: int

    def __len__(self) -> int:
        return self.n


def prepare_answers(model: Model, prompts: Sequence[str], continuations: Sequence[str],
                    batch_size: int = 8) -> PreparedAnswers:
    """Tokenise prompt + continuation pairs, sorted by prompt length so batches carry little padding.

    ``continuations`` are the exact strings appended to the prompts
    (:func:`neurorit_lens.data.prompts.answer_continuation`).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if len(prompts) != len(continuations):
        raise ValueError(f"{len(prompts)} prompts but {len(continuations)} answers")
    if not prompts:
        raise ValueError("no prompts given")
    lengths = [len(encode_prompt(model, p)) for p in prompts]
    order = sorted(range(len(prompts)), key=lambda i: -lengths[i])
    out = []
    for s in range(0, len(order), batch_size):
        idx = order[s : s + batch_size]
        batch = tokenize_with_answers(model, [prompts[i] for i in idx], [continuations[i] for i in idx])
        out.append((torch.tensor(idx), batch))
    return PreparedAnswers(out, len(prompts))


def answer_position_logprobs(
    model: Model, batch: AnswerBatch
) -> tuple[Int[torch.Tensor, "n_answer"], Float[torch.Tensor, "n_answer"]]:
    """log p(target) at the positions that predict the answer, unembedding only those positions.

    Returns ``(row, logprob)``, one entry per answer token in row-major order. Equal to
    ``token_logprobs(model(batch.tokens), batch)`` at its non-masked entries (the final norm
    acts per position), without the ``[batch, pos, d_vocab]`` logits of every prompt position.
    """
    resid = model(batch.tokens, stop_at_layer=model.cfg.n_layers)
    b_idx, p_idx = torch.nonzero(batch.answer_mask, as_tuple=True)
    sel = resid[b_idx, p_idx]  # [n_answer_positions, d_model]
    logits = model.unembed(model.ln_final(sel[:, None, :]))[:, 0]
    lp = torch.log_softmax(logits.float(), dim=-1).gather(-1, batch.target_ids[b_idx, p_idx, None])[:, 0]
    return b_idx, lp


def answer_sft_loss(model: Model, batch: AnswerBatch) -> Float[torch.Tensor, ""]:
    """:func:`sft_loss` of ``model(batch.tokens)``, unembedding only the answer positions.

    The trainer's loss: a prompt of 896 tokens in a micro-batch of 4 would otherwise hold
    [4, 896, 49152] float32 logits (0.7 GB), their log-softmax and both gradients.
    """
    _, lp = answer_position_logprobs(model, batch)
    # scattered back to [batch, pos] (row-major, as lp is) so the sum runs in sft_loss's order:
    # the same loss, bit for bit
    per_pos = lp.new_zeros(batch.answer_mask.shape).masked_scatter(batch.answer_mask, lp)
    return -per_pos.sum() / batch.answer_mask.sum().clamp(min=1)


def _batch_answer_logprob(model: Model, batch: AnswerBatch) -> Float[torch.Tensor, "batch"]:
    """Sum of answer-token log-probs per example (:func:`answer_position_logprobs`)."""
    b_idx, lp = answer_position_logprobs(model, batch)
    return torch.zeros(len(batch), dtype=lp.dtype, device=lp.device).index_add_(0, b_idx, lp)


def answer_logprobs(
    model: Model,
    prompts: Sequence[str] | PreparedAnswers,
    continuations: Sequence[str] | None = None,
    batch_size: int = 8,
    hooks: Sequence[FwdHook] = (),
    show_progress: bool = False,
) -> Float[torch.Tensor, "batch"]:
    """Teacher-forced log-probability of each gold answer after its prompt.

    F = sum over answer tokens of log p(token | prompt, earlier answer tokens), the
    ``logprob`` target of :func:`answer_target`, computed from the answer positions only.

    Args:
        model: a HookedTransformer with a tokenizer (hooks already on it stay active).
        prompts: rendered prompt strings, or :func:`prepare_answers`' output (then no
            ``continuations``).
        continuations: the exact answer strings appended to the prompts
            (``PromptSet.continuations`` from :func:`neurorit_lens.data.build.build_prompts`).
        batch_size: pairs per forward pass (for strings).
        hooks: extra forward hooks active during the passes (e.g. ablation hooks).
        show_progress: tqdm bar over batches.

    Returns:
        ``[n]`` float32 CPU tensor, in the order of ``prompts``.
    """
    if isinstance(prompts, PreparedAnswers):
        if continuations is not None:
            raise ValueError("continuations are already part of the prepared answers")
        prepared = prompts
    else:
        if continuations is None:
            raise ValueError("continuations are required when prompts are strings")
        prepared = prepare_answers(model, list(prompts), list(continuations), batch_size)
    out = torch.full((prepared.n,), float("nan"))
    dev = next(model.parameters()).device
    with torch.inference_mode(), neuron_hooks(model, list(hooks)):
        for idx, batch in tqdm(prepared.batches, desc="answer log-prob", unit="batch", disable=not show_progress):
            out[idx] = _batch_answer_logprob(model, batch.to(dev)).float().cpu()
    return out
