"""Noise settings and the context builder: which passages, in which order, go in each prompt.

Setting names (the ``neurorit eval --settings`` vocabulary):

* ``closed``: no passage (closed-book).
* ``gold``: the example's primary relevant passage alone (the first one the data lists:
  NQ's gold ctx, RGB's first positive, NoiserBench's ``gold_text``).
* ``gold+K``: the primary relevant passage plus ``K`` irrelevant ones.
* ``noise=R``: ``n_passages`` passages in total, ``round(R * n_passages)`` of them
  irrelevant (at most ``n_passages - 1`` when ``R < 1``, so at least one is gold) and the
  rest relevant (the primary one first, then others at random). An example with fewer
  relevant passages than that (NQ-open and NoiserBench have one gold passage) keeps the
  *ratio* instead of the total: all its ``r`` relevant passages plus
  ``round(R * r / (1 - R))`` irrelevant ones (capped at ``n_passages - r``), the nearest
  ratio it can reach: for a single gold passage ``noise=0.2`` is gold alone, ``noise=0.4``
  gold+1, ``noise=0.6`` gold+2 and ``noise=0.8`` gold+4. An example
  without enough irrelevant passages is skipped and counted.
* ``irrelevant``: ``n_passages`` irrelevant passages, no gold.
* ``counterfactual``: the primary relevant passage plus up to ``n_passages - 1``
  counterfactual passages; examples without counterfactual passages are skipped.
* ``retrieved``: the first ``n_passages`` passages of the example's retrieved context list,
  in the data's order and whatever their labels (the setting real RAG users are in). The
  context list is the passages whose ``kind`` is in :data:`RETRIEVED_KINDS`: the
  ``passages`` list of a JSONL file (``passage``) and DPR/FiD ``ctxs`` (``ctx``, and
  ``gold`` for an ``isgold`` ctx of an example whose ``source`` is ``dpr``); passages mined
  as distractors, RGB's positive/negative lists, NoiserBench's noise and the embedded
  set's passages (whose gold passage is also of kind ``gold``) are not retrieval results. No
  passage is marked gold (so the token budget cuts from the end, as a real prompt would be cut). Examples without a
  context list are skipped as ``no_context_list``.
* ``<setting>@<method>`` (``gold+4@bm25``): a setting with irrelevant passages (``gold+K``,
  ``noise=R``, ``irrelevant``) drawn only from the passages mined as ``<method>`` distractors
  (``random`` or ``bm25``; kind ``distractor:<method>``,
  :func:`~neurorit_lens.data.distractors.add_distractors`): load gold-only data such as
  NQ-open with ``DataConfig.distractors="bm25"`` to score ``gold+4@bm25``. An example without
  such passages (data with its own irrelevant passages, or loaded with the other method) is
  skipped as ``no_<method>_distractors``.

Which irrelevant passages are used, and the order, come from a per-example RNG seeded
with ``(seed, setting, example id)``: the same inputs always give the same instances,
independent of list order. ``gold_position`` places the gold passage(s): ``random``,
``first``, ``last``, or an int index (for the primary gold; clipped to the last slot,
negative counts from the end).
"""

from __future__ import annotations

import dataclasses
import random
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import get_args

from neurorit_lens.config import DistractorMethod
from neurorit_lens.data.schema import Passage, QAExample, RAGInstance

VALID_SETTINGS = ("closed, gold, gold+K (K >= 0), noise=R (0 <= R <= 1), irrelevant, counterfactual, retrieved; "
                  "gold+K, noise=R or irrelevant with @bm25 or @random (only the passages mined as such distractors)")
#: ``Passage.kind`` values that make up an example's retrieved context list (in data order).
RETRIEVED_KINDS = ("ctx", "passage")
_GOLD_K = re.compile(r"^gold\+(\d+)$")
_NOISE = re.compile(r"^noise=([0-9]*\.?[0-9]+)$")
_WITH_IRRELEVANT = ("gold+k", "noise", "irrelevant")  # kinds whose passages a @<method> suffix restricts


@dataclass(frozen=True)
class Setting:
    """A parsed setting: ``kind`` in closed/gold/gold+k/noise/irrelevant/counterfactual/retrieved;
    ``distractors``: the ``@<method>`` suffix (irrelevant passages of that distractor kind only)."""

    name: str
    kind: str
    k: int = 0  # irrelevant passages for gold+k
    ratio: float = 0.0  # for noise
    distractors: str | None = None  # "bm25" or "random": only passages of kind distractor:<method>

    def counts(self, n_passages: int) -> tuple[int, int]:
        """(relevant, irrelevant) passages this setting asks for (counterfactual: (1, 0))."""
        if self.kind == "closed":
            return 0, 0
        if self.kind in ("gold", "counterfactual"):
            return 1, 0
        if self.kind == "gold+k":
            return 1, self.k
        if self.kind in ("irrelevant", "retrieved"):
            return 0, n_passages
        n_irr = round(self.ratio * n_passages)
        if self.ratio < 1:
            n_irr = min(n_irr, n_passages - 1)
        return n_passages - n_irr, n_irr


def parse_setting(name: str) -> Setting:
    """Parse a setting name.

    >>> parse_setting("gold+4")
    Setting(name='gold+4', kind='gold+k', k=4, ratio=0.0, distractors=None)
    >>> parse_setting("gold+4@bm25").distractors
    'bm25'

    Raises:
        ValueError: unknown name (the message lists the valid forms), or a ``@<method>`` suffix
            that is not a distractor method or follows a setting without irrelevant passages.
    """
    if not isinstance(name, str):
        raise ValueError(f"setting must be a string, got {type(name).__name__}; valid: {VALID_SETTINGS}")
    s = name.strip()
    if "@" in s:
        base, _, method = s.rpartition("@")
        methods = get_args(DistractorMethod)
        if method not in methods:
            raise ValueError(f"unknown distractor method {method!r} in setting {name!r}; choose from "
                             f"{', '.join(methods)}")
        st = parse_setting(base)
        if st.kind not in _WITH_IRRELEVANT or st.distractors is not None:
            raise ValueError(f"setting {name!r}: @{method} applies to gold+K, noise=R or irrelevant, not {base!r}")
        return dataclasses.replace(st, name=s, distractors=method)
    if s in ("closed", "gold", "irrelevant", "counterfactual", "retrieved"):
        return Setting(s, s)
    m = _GOLD_K.match(s)
    if m:
        return Setting(s, "gold+k", k=int(m.group(1)))
    m = _NOISE.match(s)
    if m:
        r = float(m.group(1))
        if not 0 <= r <= 1:
            raise ValueError(f"noise ratio must be in [0, 1], got {r} in {name!r}")
        return Setting(s, "noise", ratio=r)
    raise ValueError(f"unknown setting {name!r}; valid forms: {VALID_SETTINGS}")


def retrieved_passages(ex: QAExample) -> list[Passage]:
    """The example's retrieved context list, in the data's order (see :data:`RETRIEVED_KINDS`;
    DPR's ``isgold`` ctxs, of kind ``gold``, belong to it when the example comes from ``dpr``)."""
    return [p for p in ex.passages if p.kind in RETRIEVED_KINDS or (p.kind == "gold" and ex.source == "dpr")]


@dataclass
class BuiltInstances:
    """Instances for one setting, and how many examples lacked what it needs."""

    setting: str
    instances: list[RAGInstance]
    n_skipped: int = 0
    skipped_reasons: dict[str, int] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.instances)

    def __iter__(self):
        return iter(self.instances)


def _place(gold: list[Passage], others: list[Passage], gold_position: str | int,
           rng: random.Random) -> tuple[tuple[Passage, ...], tuple[int, ...]]:
    total = len(gold) + len(others)
    if not gold:
        return tuple(others), ()
    if gold_position == "first":
        slots = list(range(len(gold)))
    elif gold_position == "last":
        slots = list(range(total - len(gold), total))
    else:
        i = int(gold_position)
        first = min(i, total - 1) if i >= 0 else max(total + i, 0)
        rest = [j for j in range(total) if j != first]
        slots = [first] + sorted(rng.sample(rest, len(gold) - 1))
    out: list[Passage | None] = [None] * total
    for p, j in zip(gold, slots, strict=True):
        out[j] = p
    it = iter(others)
    for j in range(total):
        if out[j] is None:
            out[j] = next(it)
    return tuple(out), tuple(sorted(slots))  # type: ignore[arg-type]


def _counts_for(st: Setting, n_passages: int, n_relevant: int) -> tuple[int, int]:
    """(relevant, irrelevant) for one example: ``noise=R`` keeps the ratio when gold is scarce."""
    n_rel, n_irr = st.counts(n_passages)
    if st.kind == "noise" and 0 < n_relevant < n_rel and st.ratio < 1:
        k = round(st.ratio * n_relevant / (1 - st.ratio) + 1e-9)
        return n_relevant, min(k, max(n_passages - n_relevant, 1))
    return n_rel, n_irr


def build_instances(
    examples: Sequence[QAExample],
    setting: str,
    n_passages: int = 5,
    seed: int = 0,
    gold_position: str | int = "random",
) -> BuiltInstances:
    """Build the RAG instances of ``examples`` under one noise setting.

    Args:
        examples: the examples.
        setting: a setting name (see module docstring / :func:`parse_setting`).
        n_passages: total passages for ``noise=R``, and passages for ``irrelevant``; the cap
            of ``1 + counterfactual`` passages for ``counterfactual``.
        seed: seed for passage choice and order.
        gold_position: ``random``, ``first``, ``last`` or an int index.

    Returns:
        :class:`BuiltInstances` (examples lacking what the setting needs are skipped and counted).
    """
    st = parse_setting(setting)
    if not isinstance(n_passages, int) or isinstance(n_passages, bool) or n_passages < 1:
        raise ValueError(f"n_passages must be a positive int, got {n_passages!r}")
    if not (gold_position in ("random", "first", "last")
            or (isinstance(gold_position, int) and not isinstance(gold_position, bool))):
        raise ValueError(f"gold_position must be 'random', 'first', 'last' or an int, got {gold_position!r}")
    out: list[RAGInstance] = []
    reasons: Counter[str] = Counter()
    for ex in examples:
        if st.kind == "closed":
            out.append(RAGInstance(ex, st.name, (), ()))
            continue
        if st.kind == "retrieved":
            ctxs = retrieved_passages(ex)
            if ctxs:
                out.append(RAGInstance(ex, st.name, tuple(ctxs[:n_passages]), ()))
            else:
                reasons["no_context_list"] += 1
            continue
        rng = random.Random(f"{seed}:{st.name}:{n_passages}:{ex.id}")
        rel, irr, cf = ex.relevant, ex.irrelevant, ex.counterfactual
        n_rel, n_irr = _counts_for(st, n_passages, len(rel))
        if st.distractors is not None:
            irr = [p for p in irr if p.kind == f"distractor:{st.distractors}"]
            if not irr and n_irr:
                reasons[f"no_{st.distractors}_distractors"] += 1
                continue
        if len(rel) < n_rel:
            reasons["not_enough_relevant"] += 1
            continue
        if len(irr) < n_irr:
            reasons["not_enough_irrelevant"] += 1
            continue
        if st.kind == "counterfactual" and not cf:
            reasons["no_counterfactual"] += 1
            continue
        gold = ([rel[0]] + rng.sample(rel[1:], n_rel - 1)) if n_rel else []
        others = rng.sample(irr, n_irr)
        if st.kind == "counterfactual":
            others = rng.sample(cf, min(len(cf), max(n_passages - 1, 1)))
        if gold_position == "random":
            passages = gold + others
            order = rng.sample(range(len(passages)), len(passages))
            placed = tuple(passages[j] for j in order)
            pos = tuple(sorted(order.index(j) for j in range(len(gold))))
        else:
            placed, pos = _place(gold, others, gold_position, rng)
        out.append(RAGInstance(ex, st.name, placed, pos))
    return BuiltInstances(setting=st.name, instances=out, n_skipped=sum(reasons.values()),
                          skipped_reasons=dict(reasons))
