"""Prompt templates: RAG instances -> prompt strings that fit the model's budget.

Two templates with the same content:

* ``plain`` (base models)::

      Answer the question using the documents below. Reply with a short phrase only.

      Document [1] (Title: Velmoria) The capital of Velmoria is Quelmet. ...
      Document [2] (Title: ...) ...

      Question: What is the capital of Velmoria?
      Answer:

  (closed-book prompts drop the documents and say "Answer the question ...").
* ``chat`` (instruct models): the same text as the user message, a one-line system prompt
  asking for a short phrase (both wordings can be changed: :class:`PromptText`, from
  ``DataConfig.instruction`` and ``DataConfig.system_prompt``), through ``tokenizer.apply_chat_template(...,
  add_generation_prompt=True)``. If the template rejects a system role, the system line is
  prepended to the user message instead. The rendered text is kept verbatim,
  leading BOS string included (SmolLM2's template starts with its BOS ``<|im_start|>``, which
  TL does not prepend for it); where TL does prepend BOS as well (Gemma),
  ``neurorit_lens.objective.encode_prompt`` drops the doubled BOS.

``auto`` picks ``chat`` when the tokenizer has a chat template. Prompts longer than
``max_prompt_tokens`` (counted with the tokenizer, plus one slot for the BOS token TL
prepends) have their irrelevant (non-gold) passages cut from the end of the passage
block: the last non-gold passage is shortened token-wise, or dropped if even its header
does not fit, then the non-gold one before it, and so on. Gold passages, the instruction
and the question are never cut: an instance whose gold passages and question alone
exceed the budget is skipped and counted (``RenderedPrompts.skipped_budget``), and a
question that alone does not fit is a ``ValueError``. :func:`answer_continuation` gives the exact string appended to a
prompt for teacher forcing (``" " + answer`` after ``Answer:``, ``answer`` after the chat
generation prompt).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, get_args

from neurorit_lens.config import Template
from neurorit_lens.data.schema import Passage, RAGInstance

TEMPLATES = get_args(Template)
INSTRUCTION = "Answer the question using the documents below. Reply with a short phrase only."
CLOSED_INSTRUCTION = "Answer the question. Reply with a short phrase only."
SYSTEM_PROMPT = "You answer questions with a short phrase only."


@dataclass(frozen=True)
class PromptText:
    """The fixed wording of a prompt: the instruction before the documents, the closed-book
    instruction, and the chat template's system line (defaults: today's text;
    ``DataConfig.instruction`` / ``system_prompt`` override them through :func:`build_prompts`)."""

    instruction: str = INSTRUCTION
    closed_instruction: str = CLOSED_INSTRUCTION
    system: str = SYSTEM_PROMPT


DEFAULT_TEXT = PromptText()


@dataclass
class RenderedPrompts:
    """Prompt strings, one per kept instance, and what truncation did."""

    prompts: list[str]
    instances: list[RAGInstance]  # as rendered (passages possibly shortened or dropped)
    template: str
    n_truncated: int = 0  # prompts whose passages were cut
    n_passages_dropped: int = 0
    truncated: list[bool] = field(default_factory=list)
    n_tokens: list[int] = field(default_factory=list)  # prompt tokens incl. one BOS
    skipped_budget: list[str] = field(default_factory=list)  # ids whose gold passages alone exceed the budget
    n_gold_cut: int = 0  # prompts whose gold passage was shortened or dropped (0 by construction)

    def __len__(self) -> int:
        return len(self.prompts)


def resolve_template(tokenizer: Any, template: str = "auto") -> str:
    """``plain`` or ``chat``; ``auto`` = chat if the tokenizer has a chat template."""
    if template not in TEMPLATES:
        raise ValueError(f"unknown template {template!r}; valid: {', '.join(TEMPLATES)}")
    has_chat = bool(getattr(tokenizer, "chat_template", None))
    if template == "auto":
        return "chat" if has_chat else "plain"
    if template == "chat" and not has_chat:
        raise ValueError("template 'chat' needs a tokenizer with a chat_template; use 'plain'")
    return template


def format_passage(i: int, p: Passage) -> str:
    """``Document [i] (Title: t) text`` (1-based ``i``; no title part when the title is empty)."""
    return f"Document [{i}] (Title: {p.title}) {p.text}" if p.title else f"Document [{i}] {p.text}"


def user_content(question: str, passages: Sequence[Passage], text: PromptText = DEFAULT_TEXT) -> str:
    """Instruction, numbered documents and the question (shared by both templates)."""
    if not passages:
        return f"{text.closed_instruction}\n\nQuestion: {question}"
    docs = "\n".join(format_passage(i + 1, p) for i, p in enumerate(passages))
    return f"{text.instruction}\n\n{docs}\n\nQuestion: {question}"


def render_prompt(question: str, passages: Sequence[Passage], tokenizer: Any, template: str,
                  text: PromptText = DEFAULT_TEXT) -> str:
    """One prompt string for a resolved template (``plain`` or ``chat``) with the wording ``text``."""
    content = user_content(question, passages, text)
    if template == "plain":
        return content + "\nAnswer:"
    if template != "chat":
        raise ValueError(f"render_prompt needs 'plain' or 'chat', got {template!r}")
    from jinja2.exceptions import TemplateError  # what a template's raise_exception raises

    try:
        rendered = tokenizer.apply_chat_template(
            [{"role": "system", "content": text.system}, {"role": "user", "content": content}],
            tokenize=False, add_generation_prompt=True)
    except TemplateError:  # the template rejects a system role (Gemma): system line goes into the user turn
        rendered = tokenizer.apply_chat_template([{"role": "user", "content": f"{text.system}\n\n{content}"}],
                                                 tokenize=False, add_generation_prompt=True)
    return rendered  # verbatim: a leading BOS string stays (targets.encode_prompt drops a doubled BOS)


def answer_continuation(answer: str, template: str) -> str:
    """The exact string appended to a prompt for teacher forcing the answer.

    >>> answer_continuation("Quelmet", "plain"), answer_continuation("Quelmet", "chat")
    (' Quelmet', 'Quelmet')
    """
    if template == "plain":
        return " " + answer
    if template == "chat":
        return answer
    raise ValueError(f"template must be 'plain' or 'chat' (resolve 'auto' first), got {template!r}")


def count_tokens(tokenizer: Any, text: str) -> int:
    """Tokens of ``text`` without special tokens, plus one for the BOS TL prepends."""
    return len(tokenizer(text, add_special_tokens=False)["input_ids"]) + 1


def _cut(tokenizer: Any, text: str, n: int) -> str:
    ids = tokenizer(text, add_special_tokens=False)["input_ids"][:n]
    return tokenizer.decode(ids, skip_special_tokens=True).rstrip("\ufffd").strip()


def _shorten(inst: RAGInstance, passages: list[Passage], j: int, tokenizer: Any, template: str,
             max_tokens: int, text: PromptText = DEFAULT_TEXT) -> tuple[Passage, str] | None:
    """The longest non-empty token prefix of ``passages[j]`` whose prompt fits, with that prompt."""
    p = passages[j]
    n_ids = len(tokenizer(p.text, add_special_tokens=False)["input_ids"])
    lo, hi, best = 1, n_ids - 1, None
    while lo <= hi:  # binary search on the prefix length
        mid = (lo + hi) // 2
        cand = dataclasses.replace(p, text=_cut(tokenizer, p.text, mid))
        prompt = render_prompt(inst.question, passages[:j] + [cand] + passages[j + 1:], tokenizer, template, text)
        if count_tokens(tokenizer, prompt) <= max_tokens:
            best, lo = (cand, prompt), mid + 1
        else:
            hi = mid - 1
    return best if best is not None and best[0].text else None


def _fit(inst: RAGInstance, tokenizer: Any, template: str,
         max_tokens: int, text: PromptText = DEFAULT_TEXT) -> tuple[str, RAGInstance, int, int] | None:
    """(prompt, rendered instance, passages dropped, tokens) within ``max_tokens``, or ``None``.

    Non-gold passages are cut from the end (the last one shortened token-wise, or dropped
    if even its header does not fit, then the one before it, ...); gold passages are
    never touched. ``None``: the gold passage(s) and the question alone exceed the budget.
    """
    passages = list(inst.passages)
    prompt = render_prompt(inst.question, passages, tokenizer, template, text)
    n = count_tokens(tokenizer, prompt)
    if n <= max_tokens:
        return prompt, inst, 0, n
    bare = render_prompt(inst.question, [], tokenizer, template, text)
    if count_tokens(tokenizer, bare) > max_tokens:
        raise ValueError(f"instance {inst.id!r}: the question alone needs {count_tokens(tokenizer, bare)} tokens, "
                         f"more than max_prompt_tokens={max_tokens}")
    is_gold = [i in inst.gold_positions for i in range(len(passages))]
    gold_only = [p for p, g in zip(passages, is_gold, strict=True) if g]
    if count_tokens(tokenizer, render_prompt(inst.question, gold_only, tokenizer, template, text)) > max_tokens:
        return None
    dropped = 0
    for j in reversed([i for i, g in enumerate(is_gold) if not g]):
        best = _shorten(inst, passages, j, tokenizer, template, max_tokens, text)
        if best is not None:
            passages[j], prompt = best
            break
        del passages[j], is_gold[j]
        dropped += 1
        prompt = render_prompt(inst.question, passages, tokenizer, template, text)
        if count_tokens(tokenizer, prompt) <= max_tokens:
            break
    gold = tuple(i for i, g in enumerate(is_gold) if g)
    new = dataclasses.replace(inst, passages=tuple(passages), gold_positions=gold)
    return prompt, new, dropped, count_tokens(tokenizer, prompt)


def gold_was_cut(original: RAGInstance, rendered: RAGInstance) -> bool:
    """Whether a gold passage of ``original`` is missing or shortened in ``rendered``."""
    before = [original.passages[i] for i in original.gold_positions]
    after = [rendered.passages[i] for i in rendered.gold_positions]
    return before != after


def render_prompts(
    instances: Sequence[RAGInstance],
    tokenizer: Any,
    template: str = "auto",
    max_prompt_tokens: int = 512,
    text: PromptText = DEFAULT_TEXT,
) -> RenderedPrompts:
    """Render instances to prompts that fit ``max_prompt_tokens``, cutting non-gold passages from the end.

    An instance whose gold passage(s) and question alone exceed the budget is skipped (its
    id in ``skipped_budget``): a gold passage is never shortened or dropped.

    Args:
        instances: RAG instances (from :func:`~neurorit_lens.data.settings.build_instances`).
        tokenizer: a HF tokenizer (``model.tokenizer``).
        template: ``auto``, ``plain`` or ``chat``.
        max_prompt_tokens: token budget per prompt, counting the BOS that TL prepends.
        text: the instruction and system wording (default: today's text).

    Returns:
        :class:`RenderedPrompts`.

    Raises:
        ValueError: unknown template, too small a budget, or a question that alone does not fit.
    """
    tpl = resolve_template(tokenizer, template)
    if not isinstance(max_prompt_tokens, int) or max_prompt_tokens < 8:
        raise ValueError(f"max_prompt_tokens must be an int >= 8, got {max_prompt_tokens!r}")
    out = RenderedPrompts(prompts=[], instances=[], template=tpl)
    for inst in instances:
        fitted = _fit(inst, tokenizer, tpl, max_prompt_tokens, text)
        if fitted is None:
            out.skipped_budget.append(inst.id)
            continue
        prompt, new, dropped, n = fitted
        cut = new is not inst
        out.prompts.append(prompt)
        out.instances.append(new)
        out.truncated.append(cut)
        out.n_tokens.append(n)
        out.n_truncated += cut
        out.n_passages_dropped += dropped
        out.n_gold_cut += gold_was_cut(inst, new)
    return out
