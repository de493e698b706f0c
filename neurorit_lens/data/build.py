"""The one prompt path: examples + a setting -> prompts, answer continuations and counts.

Every stage that puts a question in front of the model (mining, ablation, evaluation,
training items, the views) goes through :func:`build_prompts` (or, for passages chosen by
hand, :func:`render_instances`), so the same example under the same setting and
:class:`~neurorit_lens.config.DataConfig` gives byte-identical prompts everywhere:

1. :func:`~neurorit_lens.data.settings.build_instances` picks and orders the passages
   (examples lacking what the setting needs are skipped and counted);
2. :func:`~neurorit_lens.data.prompts.render_prompts` renders them, cutting non-gold
   passages from the end to fit the token budget (a gold passage is never cut: an example
   whose gold passages and question alone exceed the budget is skipped and counted as
   ``gold_over_budget``);
3. :func:`~neurorit_lens.data.prompts.answer_continuation` gives the gold answer's exact
   continuation for teacher forcing.

The budget rule (:func:`prompt_budget`): a prompt gets ``data_cfg.max_prompt_tokens``
tokens, capped at the model's context ``n_ctx`` minus ``reserve_tokens``, the room kept
for what follows the prompt: evaluation and ablation pass their ``max_new_tokens``; the
teacher-forcing stages (mining, views) keep the default :data:`ANSWER_RESERVE` for the
answer, the same 48 tokens as the default generation length, so with default configs all
stages build the same prompts even where the context binds (a longer teacher-forced answer
is cut from the prompt's left by :func:`neurorit_lens.objective.tokenize_with_answers`).
Without ``n_ctx`` (a tokenizer only, as training items are built) the budget is
``max_prompt_tokens``.

>>> from neurorit_lens.data import embedded_examples
>>> from neurorit_lens.models.tiny import tiny_tokenizer
>>> from neurorit_lens.config import DataConfig
>>> ps = build_prompts(embedded_examples(4), "gold+1", tiny_tokenizer(), DataConfig(template="plain"))
>>> len(ps), ps.template, ps.continuations[0] == " " + ps.instances[0].answers[0]
(4, 'plain', True)
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from neurorit_lens.config import DataConfig
from neurorit_lens.data.prompts import (
    DEFAULT_TEXT,
    INSTRUCTION,
    SYSTEM_PROMPT,
    PromptText,
    answer_continuation,
    render_prompts,
    resolve_template,
)
from neurorit_lens.data.schema import Label, QAExample, RAGInstance
from neurorit_lens.data.settings import build_instances

#: Tokens kept free after a prompt for a teacher-forced answer (= ``EvalConfig.max_new_tokens``'s default).
ANSWER_RESERVE = 48


@dataclass
class PromptSet:
    """Prompts of one setting, their answer continuations, and what was cut or skipped.

    Attributes:
        setting: the setting name (``""`` for hand-picked passages).
        template: the resolved template (``plain`` or ``chat``).
        budget: the token budget each prompt was fitted to (BOS included).
        prompts: one rendered prompt per kept example.
        continuations: the gold answer (the example's first) as appended for teacher forcing.
        instances: the instances as rendered (passages possibly shortened or dropped).
        n_tokens: prompt tokens per prompt (one BOS included).
        truncated: per prompt, whether passages were cut.
        n_skipped: examples the setting could not be built for.
        skipped_reasons: ``n_skipped`` by reason.
        n_truncated: prompts whose passages were cut to fit ``budget``.
        n_passages_dropped: passages dropped entirely by the cut.
        n_skipped_budget: examples skipped because their gold passages and question alone
            exceed ``budget`` (also in ``n_skipped``, reason ``gold_over_budget``).
        n_gold_cut: prompts whose gold passage was shortened or dropped (0 by construction;
            counted from the rendered instances as a check).
    """

    setting: str
    template: str
    budget: int
    prompts: list[str] = field(default_factory=list)
    continuations: list[str] = field(default_factory=list)
    instances: list[RAGInstance] = field(default_factory=list)
    n_tokens: list[int] = field(default_factory=list)
    truncated: list[bool] = field(default_factory=list)
    n_skipped: int = 0
    skipped_reasons: dict[str, int] = field(default_factory=dict)
    n_truncated: int = 0
    n_passages_dropped: int = 0
    n_skipped_budget: int = 0
    n_gold_cut: int = 0

    def __len__(self) -> int:
        return len(self.prompts)

    @property
    def ids(self) -> list[str]:
        return [inst.id for inst in self.instances]

    @property
    def answers(self) -> list[list[str]]:
        """All gold aliases per prompt (for accuracy)."""
        return [list(inst.answers) for inst in self.instances]

    @property
    def mean_n_passages(self) -> float:
        """Mean number of passages the prompts really hold (after the budget cut)."""
        return _mean([len(inst.passages) for inst in self.instances])

    @property
    def mean_n_irrelevant(self) -> float:
        """Mean number of irrelevant-labelled passages the prompts really hold."""
        return _mean([sum(p.label == Label.IRRELEVANT for p in inst.passages) for inst in self.instances])

    @property
    def label(self) -> str:
        """What the prompts really held: see :func:`context_label`."""
        return context_label(self.instances)


def _mean(xs: Sequence[float]) -> float:
    return float(sum(xs) / len(xs)) if xs else float("nan")


def _one_label(inst: RAGInstance) -> str:
    g = len(inst.gold_positions)
    k = len(inst.passages) - g
    if g == 0 and inst.setting == "retrieved":
        return f"top {k} retrieved"
    if g == 0:
        return "closed" if k == 0 else f"{k} passages, no gold"
    return ("gold" if g == 1 else f"{g} gold") + (f"+{k}" if k else "")


def context_label(instances: Sequence[RAGInstance]) -> str:
    """The contexts prompts really held: ``gold+2`` (one gold passage and two others),
    ``2 gold+3``, ``5 passages, no gold``, ``top 5 retrieved``, ``closed``; when prompts differ, every label with
    its count, most frequent first (``gold+2 (14), gold+1 (2)``); ``""`` for none.

    >>> from neurorit_lens.data import embedded_examples, build_instances
    >>> context_label(build_instances(embedded_examples(3), "noise=0.8", n_passages=3).instances)
    'gold+2'
    """
    counts = Counter(_one_label(inst) for inst in instances)
    if len(counts) <= 1:
        return next(iter(counts), "")
    return ", ".join(f"{lab} ({n})" for lab, n in sorted(counts.items(), key=lambda t: (-t[1], t[0])))


def prompt_budget(max_prompt_tokens: int, n_ctx: int | None = None, reserve_tokens: int = ANSWER_RESERVE) -> int:
    """The prompt token budget: ``max_prompt_tokens``, capped at ``n_ctx - reserve_tokens``.

    >>> prompt_budget(512, 2048, 16), prompt_budget(512, 400, 16), prompt_budget(512)
    (512, 384, 512)

    Raises:
        ValueError: negative ``reserve_tokens``.
    """
    if reserve_tokens < 0:
        raise ValueError(f"reserve_tokens must be >= 0, got {reserve_tokens}")
    if n_ctx is None:
        return max_prompt_tokens
    return min(max_prompt_tokens, n_ctx - reserve_tokens)


def render_instances(
    instances: Sequence[RAGInstance],
    tokenizer: Any,
    template: str = "auto",
    budget: int = 512,
    setting: str = "",
    text: PromptText = DEFAULT_TEXT,
) -> PromptSet:
    """Render already-built instances into a :class:`PromptSet` (steps 2 and 3).

    For passages chosen by hand (the views); :func:`build_prompts` calls it after
    building the instances of a setting. An empty ``instances`` gives an empty set.
    """
    tpl = resolve_template(tokenizer, template)
    out = PromptSet(setting=setting, template=tpl, budget=budget)
    if not instances:
        return out
    rendered = render_prompts(instances, tokenizer, tpl, budget, text)
    out.n_skipped_budget = out.n_skipped = len(rendered.skipped_budget)
    if out.n_skipped_budget:
        out.skipped_reasons = {"gold_over_budget": out.n_skipped_budget}
    out.n_gold_cut = int(rendered.n_gold_cut)
    out.prompts = list(rendered.prompts)
    out.instances = list(rendered.instances)
    out.continuations = [answer_continuation(inst.answers[0], tpl) for inst in rendered.instances]
    out.n_tokens = list(rendered.n_tokens)
    out.truncated = list(rendered.truncated)
    out.n_truncated = int(rendered.n_truncated)
    out.n_passages_dropped = int(rendered.n_passages_dropped)
    return out


def prompt_text(data_cfg: DataConfig) -> PromptText:
    """The prompt wording of ``data_cfg`` (``instruction`` / ``system_prompt``; ``None``: today's text)."""
    return PromptText(instruction=data_cfg.instruction or INSTRUCTION,
                      system=data_cfg.system_prompt or SYSTEM_PROMPT)


def build_prompts(
    examples: Sequence[QAExample],
    setting: str,
    tokenizer: Any,
    data_cfg: DataConfig | None = None,
    *,
    n_ctx: int | None = None,
    reserve_tokens: int = ANSWER_RESERVE,
    n_passages: int | None = None,
    seed: int | None = None,
) -> PromptSet:
    """Examples under one setting -> prompts, answer continuations and counts (module docstring).

    Args:
        examples: QA examples with labelled passages.
        setting: a setting name (see :func:`~neurorit_lens.data.settings.parse_setting`).
        tokenizer: the model's tokenizer (template and token counts).
        data_cfg: ``n_passages``, ``seed``, ``template``, ``max_prompt_tokens``,
            ``instruction``, ``system_prompt`` (default ``DataConfig()``).
        n_ctx: the model's context length (``model.cfg.n_ctx``); ``None``: no cap.
        reserve_tokens: tokens kept free of the context after the prompt (generating stages:
            their ``max_new_tokens``).
        n_passages: overrides ``data_cfg.n_passages`` (training draws its own counts).
        seed: overrides ``data_cfg.seed``.

    Returns:
        A :class:`PromptSet` (empty, with the skip counts, when no example could be built).

    Raises:
        ValueError: unknown setting or template, a budget under 8 tokens, or a question
            that alone does not fit the budget.
    """
    data_cfg = data_cfg or DataConfig()
    built = build_instances(list(examples), setting,
                            data_cfg.n_passages if n_passages is None else n_passages,
                            data_cfg.seed if seed is None else seed)
    budget = prompt_budget(data_cfg.max_prompt_tokens, n_ctx, reserve_tokens)
    out = render_instances(built.instances, tokenizer, data_cfg.template, budget, setting=built.setting,
                           text=prompt_text(data_cfg))
    out.n_skipped += int(built.n_skipped)
    out.skipped_reasons = {**built.skipped_reasons, **out.skipped_reasons}
    return out
