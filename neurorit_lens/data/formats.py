"""Per-format converters: one source record (a dict) -> one :class:`QAExample`.

How each format's fields map onto questions, answers and labelled passages is described
in :mod:`neurorit_lens.data.loaders`; a record that cannot become an example raises
:class:`Skip` with the counted reason.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, get_args

from neurorit_lens.config import DataFormat
from neurorit_lens.data.schema import Label, Passage, QAExample
from neurorit_lens.data.text import contains_answer

FORMATS = get_args(DataFormat)
FIELD_KEYS = ("id", "question", "answers", "passages", "relevant", "irrelevant", "counterfactual",
              "text", "title", "label", "has_answer")
DEFAULT_FIELDS = {"id": "id", "question": "question", "answers": "answers", "passages": "passages",
                  "text": "text", "title": "title", "label": "label", "has_answer": "has_answer"}
_LABEL_ALIASES = {"relevant": Label.RELEVANT, "gold": Label.RELEVANT, "positive": Label.RELEVANT,
                  "irrelevant": Label.IRRELEVANT, "negative": Label.IRRELEVANT, "noise": Label.IRRELEVANT,
                  "counterfactual": Label.COUNTERFACTUAL, "unlabelled": Label.UNLABELLED,
                  "unlabeled": Label.UNLABELLED}
NOISERBENCH_IRRELEVANT = ("semantic noise", "illegal sentence noise")
NOISERBENCH_COUNTERFACTUAL = ("counterfactual noise", "counterfactual noise2")
NOISERBENCH_UNLABELLED = ("supportive noise",)


class Skip(Exception):
    """A record that cannot become an example: ``reason`` is the counted key."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(reason)
        self.reason, self.detail = reason, detail


@dataclass
class Counts:
    relabelled: int = 0
    empty: int = 0


# ---------------------------------------------------------------- field helpers

def _get(rec: dict, path: str | None) -> Any:
    if not path:
        return None
    cur: Any = rec
    for part in path.split("."):
        if not isinstance(cur, dict) or part not in cur:
            return None
        cur = cur[part]
    return cur


def _scalar_str(v: Any, name: str) -> str | None:
    """str as is; int/float as text; None -> None; anything else is a bad type."""
    if v is None:
        return None
    if isinstance(v, str):
        return v
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return str(v)
    raise Skip(f"bad_type:{name}", f"{name} must be a string, got {type(v).__name__}")


def _answers(v: Any) -> list[str]:
    """Aliases from a string, a list of strings, a list holding one alias list, or {"text": [...]}."""
    if isinstance(v, dict) and "text" in v:  # SQuAD-style {"text": [...], "answer_start": [...]}
        v = v["text"]
    if v is None:
        return []
    if isinstance(v, (str, int, float)) and not isinstance(v, bool):
        items: list[Any] = [v]
    elif isinstance(v, list):
        groups = [x for x in v if isinstance(x, list)]
        if groups:
            if len(groups) != len(v):
                raise Skip("bad_type:answers", "answers mixes strings and lists")
            if len([g for g in groups if g]) > 1:
                raise Skip("multi_part_answer", f"{len(groups)} answer groups (all parts required)")
            items = [x for g in groups for x in g]
        else:
            items = v
    else:
        raise Skip("bad_type:answers", f"answers must be a string or a list, got {type(v).__name__}")
    out: list[str] = []
    for a in items:
        s = _scalar_str(a, "answers")
        if s is not None and s.strip() and s.strip() not in out:
            out.append(s.strip())
    return out


def _passage_items(v: Any, name: str) -> list[Any]:
    if v is None:
        return []
    if isinstance(v, (str, dict)):
        return [v]
    if isinstance(v, list):
        return v
    raise Skip(f"bad_type:{name}", f"{name} must be a list, got {type(v).__name__}")


def _text_title(item: Any, name: str, f: dict[str, str]) -> tuple[str | None, str]:
    if isinstance(item, str):
        return item, ""
    if isinstance(item, dict):
        text = _scalar_str(_get(item, f.get("text", "text")), f"{name}.text")
        title = _scalar_str(_get(item, f.get("title", "title")), f"{name}.title") or ""
        return text, title
    raise Skip(f"bad_type:{name}", f"{name} items must be strings or objects, got {type(item).__name__}")


def _bool(v: Any, name: str) -> bool | None:
    if v is None or isinstance(v, bool):
        return v
    if isinstance(v, (int, float)) and v in (0, 1):
        return bool(v)
    if isinstance(v, str) and v.lower() in ("true", "false"):
        return v.lower() == "true"
    raise Skip(f"bad_type:{name}", f"{name} must be a boolean, got {v!r}")


def _label(v: Any) -> Label | None:
    if v is None:
        return None
    if isinstance(v, bool):
        return Label.RELEVANT if v else Label.IRRELEVANT
    if isinstance(v, str) and v.strip().lower() in _LABEL_ALIASES:
        return _LABEL_ALIASES[v.strip().lower()]
    raise Skip("bad_value:label", f"unknown passage label {v!r}; valid: {sorted(_LABEL_ALIASES)}")


def _example(ex_id: str, question: Any, answers: list[str],
             passages: list[tuple[str | None, str, Label | None, bool | None, str]],
             source: str, meta: dict[str, Any], counts: Counts) -> QAExample:
    """Validate and build; ``passages`` items are (text, title, label or None, has_answer or None, kind).

    A label of None means "label by answer presence" (relevant if it holds an answer).
    """
    q = _scalar_str(question, "question")
    if q is None or not q.strip():
        raise Skip("no_question", "missing or empty question")
    if not answers:
        raise Skip("no_answer", "no non-empty answer")
    out: list[Passage] = []
    for text, title, label, has_answer, kind in passages:
        if text is None or not text.strip():
            counts.empty += 1
            continue
        text = text.strip()
        present = contains_answer(title + " " + text, answers)
        if has_answer is None:
            has_answer = present
        if label is None:
            label = Label.RELEVANT if has_answer else Label.IRRELEVANT
        if label == Label.IRRELEVANT and (present or has_answer):
            label = Label.UNLABELLED  # "irrelevant" passages must not carry the answer
            counts.relabelled += 1
        out.append(Passage(text, title=title.strip(), label=label, has_answer=bool(has_answer), kind=kind))
    if not out:
        raise Skip("no_passages", "no non-empty passage")
    return QAExample(id=ex_id, question=q.strip(), answers=answers, passages=out, source=source, meta=meta)


def _id(rec: dict, key: str | None, fallback: str) -> str:
    v = _get(rec, key) if key else None
    if v is None:
        return fallback
    s = _scalar_str(v, "id")
    return s.strip() if s and s.strip() else fallback


# ---------------------------------------------------------------- per-format converters

def _from_rgb(rec: dict, fallback_id: str, source: str, counts: Counts) -> QAExample:
    question = rec.get("query", rec.get("question"))
    answers = _answers(rec.get("answer", rec.get("answers")))
    passages = []
    for key, label in (("positive", Label.RELEVANT), ("negative", Label.IRRELEVANT),
                       ("positive_wrong", Label.COUNTERFACTUAL)):
        for item in _passage_items(rec.get(key), key):
            text, title = _text_title(item, key, DEFAULT_FIELDS)
            passages.append((text, title, label, None, key))
    meta = {}
    fake = rec.get("fakeanswer")
    if isinstance(fake, (str, list)):
        meta["counterfactual_answer"] = fake
    return _example(_id(rec, "id", fallback_id), question, answers, passages, source, meta, counts)


def _from_noiserbench(rec: dict, fallback_id: str, source: str, counts: Counts) -> QAExample:
    answers = _answers(rec.get("gold_answers", rec.get("answers")))
    passages: list[tuple] = []
    gold = rec.get("gold_text")
    for item in _passage_items(gold, "gold_text"):
        text, title = _text_title(item, "gold_text", DEFAULT_FIELDS)
        passages.append((text, title, Label.RELEVANT, None, "gold_text"))
    for keys, label in ((NOISERBENCH_IRRELEVANT, Label.IRRELEVANT), (NOISERBENCH_COUNTERFACTUAL, Label.COUNTERFACTUAL),
                        (NOISERBENCH_UNLABELLED, Label.UNLABELLED)):
        for key in keys:
            for item in _passage_items(rec.get(key), key):
                text, title = _text_title(item, key, DEFAULT_FIELDS)
                passages.append((text, title, label, None, key))
    meta = {k: rec[k] for k in ("counterfactual answer", "counterfactual answer2") if isinstance(rec.get(k), str)}
    return _example(_id(rec, "id", fallback_id), rec.get("question"), answers, passages, source, meta, counts)


def _from_dpr(rec: dict, fallback_id: str, source: str, counts: Counts) -> QAExample:
    answers = _answers(rec.get("answers", rec.get("answer")))
    passages: list[tuple] = []
    for item in _passage_items(rec.get("ctxs"), "ctxs"):
        if not isinstance(item, dict):
            raise Skip("bad_type:ctxs", f"ctxs items must be objects, got {type(item).__name__}")
        text, title = _text_title(item, "ctxs", DEFAULT_FIELDS)
        has = _bool(item.get("has_answer", item.get("hasanswer")), "ctxs.has_answer")
        gold = _bool(item.get("isgold", item.get("is_gold")), "ctxs.isgold")
        if gold is True:
            label, kind = Label.RELEVANT, "gold"
        elif has is None:
            label, kind = None, "ctx"  # by answer presence
        elif gold is False and has:
            label, kind = Label.UNLABELLED, "ctx"
        else:
            label, kind = (Label.RELEVANT if has else Label.IRRELEVANT), "ctx"
        passages.append((text, title, label, has, kind))
    return _example(_id(rec, "id", fallback_id), rec.get("question"), answers, passages, source, {}, counts)


def make_from_fields(fields: dict[str, str]):
    f = dict(DEFAULT_FIELDS)
    f.update(fields)

    def convert(rec: dict, fallback_id: str, source: str, counts: Counts) -> QAExample:
        raw_answers = _get(rec, f["answers"])
        if raw_answers is None and "answers" not in fields:
            raw_answers = rec.get("answer")
        answers = _answers(raw_answers)
        passages: list[tuple] = []
        for item in _passage_items(_get(rec, f["passages"]), "passages"):
            text, title = _text_title(item, "passages", f)
            label = has = None
            kind = "passage"
            if isinstance(item, dict):
                label = _label(_get(item, f["label"]))
                has = _bool(_get(item, f["has_answer"]), "passages.has_answer")
                kind = item["kind"] if isinstance(item.get("kind"), str) and item["kind"] else kind
            passages.append((text, title, label, has, kind))
        for key, label in (("relevant", Label.RELEVANT), ("irrelevant", Label.IRRELEVANT),
                           ("counterfactual", Label.COUNTERFACTUAL)):
            if key in f:
                for item in _passage_items(_get(rec, f[key]), key):
                    text, title = _text_title(item, key, f)
                    passages.append((text, title, label, None, key))
        meta = rec.get("meta") if isinstance(rec.get("meta"), dict) and "meta" not in fields else {}
        return _example(_id(rec, f["id"], fallback_id), _get(rec, f["question"]), answers, passages,
                        str(rec.get("source", "")) if isinstance(rec.get("source"), str) else "", dict(meta), counts)

    return convert


CONVERTERS: dict[str, Callable[[dict, str, str, Counts], QAExample]] = {
    "rgb": _from_rgb, "noiserbench": _from_noiserbench, "dpr": _from_dpr}


def detect_format(rec: Any) -> str:
    """Format of a record by its keys (``rgb``, ``noiserbench``, ``dpr`` or ``jsonl``).

    Raises:
        ValueError: if the keys match no known format.
    """
    if not isinstance(rec, dict):
        raise ValueError(f"cannot detect the format: first record is a {type(rec).__name__}, expected an object")
    keys = set(rec)
    if "query" in keys and keys & {"positive", "negative", "positive_wrong"}:
        return "rgb"
    if keys & {"gold_text", "gold_answers"}:
        return "noiserbench"
    if "ctxs" in keys:
        return "dpr"
    if "question" in keys and keys & {"answers", "answer"}:
        return "jsonl"
    raise ValueError(f"cannot detect the format from keys {sorted(keys)[:12]}; pass format= one of "
                     f"{', '.join(FORMATS[1:])} (with fields= for 'jsonl')")
