"""Loaders: RGB, NoiserBench, DPR/FiD ``ctxs`` JSONL(.gz), any JSONL with a field mapping,
HF ``datasets`` (offline), and the embedded fictional set, all into :class:`QAExample`.

One entry point, :func:`load_examples`, auto-detects the format by peeking at the first
record's keys. Label mapping per format (the choices where the sources leave room are
marked *choice*):

* ``rgb`` (JSON Lines): ``query`` -> question; ``answer`` (a string, a list of aliases, or
  a list holding one list of aliases) -> answers; ``positive`` -> relevant, ``negative``
  -> irrelevant, ``positive_wrong`` -> counterfactual. An answer with several alias
  *groups* (RGB's information-integration questions need all parts) is skipped as
  ``multi_part_answer`` (*choice*: one gold string per question is what the metrics take).
* ``noiserbench`` (JSON list): ``gold_answers`` -> answers; ``gold_text`` -> the relevant
  passage; ``semantic noise`` and ``illegal sentence noise`` -> irrelevant;
  ``counterfactual noise`` / ``counterfactual noise2`` -> counterfactual; ``supportive
  noise`` (same-topic Wikipedia passages that support but need not state the answer) ->
  ``unlabelled`` (*choice*: neither gold nor noise, so no setting draws on it);
  ``orthographic noise`` and ``datatype noise`` (corrupted copies of the gold text) are
  not kept (*choice*). ``Passage.kind`` keeps the NoiserBench noise type.
* ``dpr`` (DPR / FiD / lost-in-the-middle JSONL, gzip or not): ``question``, ``answers``,
  ``ctxs[{title, text, has_answer | hasanswer, isgold}]``: ``isgold`` true -> relevant;
  ``isgold`` false but answer-bearing -> unlabelled; otherwise answer-bearing ->
  relevant, else irrelevant (the DPR convention). Examples without irrelevant passages
  (NQ-open oracle) get ``n_distractors`` mined from other questions' gold passages
  (:func:`~neurorit_lens.data.distractors.add_distractors`, ``random`` or ``bm25``).
* ``jsonl`` (JSON Lines or a JSON list) with ``fields`` mapping our names to the record's
  keys (dotted paths allowed): ``id, question, answers, passages, relevant, irrelevant,
  counterfactual`` and, inside passage objects, ``text, title, label, has_answer``. The
  default mapping reads our own :meth:`QAExample.to_dict` output. Passages without a label
  are labelled by answer presence (DPR convention).
* ``hf:<name or local dir>[:split]``: rows of a ``datasets`` dataset (offline only; a
  ``save_to_disk`` folder or a data dir), then mapped as above by their keys.
* ``embedded[:N[:SEED]]``: :func:`~neurorit_lens.data.embedded.embedded_examples`.

For every format: every passage gets ``has_answer`` (from the data, else computed with the
normalised substring test); a passage the data calls irrelevant but that contains a gold
answer is relabelled ``unlabelled`` and counted (``n_relabelled``); empty passages are
dropped and counted; ids are made unique deterministically (``id``, ``id#2``, ...,
counted). Records without a question, answers or passages, or with wrong types, are
skipped with a counted warning (``strict=True``: a :class:`DataError` naming file and
line). Malformed JSON, non-UTF-8 bytes, a missing or empty file, or a file where every
record is skipped are always errors naming the file (and line).
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_args

from neurorit_lens.config import DataFormat, DistractorChoice
from neurorit_lens.data.distractors import add_distractors
from neurorit_lens.data.records import DataError, iter_records
from neurorit_lens.data.schema import Label, Passage, QAExample
from neurorit_lens.data.text import contains_answer
from neurorit_lens.io import atomic_write_json, read_json

log = logging.getLogger(__name__)

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


@dataclass
class LoadResult:
    """What :func:`load_examples` read: the examples and an account of everything not kept as-is."""

    examples: list[QAExample]
    n_skipped: int
    skipped_reasons: dict[str, int]
    source: str
    format: str
    n_duplicate_ids: int = 0
    n_relabelled: int = 0
    n_empty_passages: int = 0
    n_with_distractors: int = 0
    skipped_lines: list[int] = field(default_factory=list)  # first 50 skipped lines (or rows)

    def __len__(self) -> int:
        return len(self.examples)

    def __iter__(self) -> Iterator[QAExample]:
        return iter(self.examples)

    def passage_counts(self) -> dict[str, int]:
        """Passages per label over all examples."""
        c = Counter(p.label.value for ex in self.examples for p in ex.passages)
        return {lab.value: c.get(lab.value, 0) for lab in Label}

    def summary(self) -> dict[str, Any]:
        """Counts only (no examples): what a report shows."""
        return {"source": self.source, "format": self.format, "n_examples": len(self.examples),
                "n_skipped": self.n_skipped, "skipped_reasons": dict(self.skipped_reasons),
                "n_duplicate_ids": self.n_duplicate_ids, "n_relabelled": self.n_relabelled,
                "n_empty_passages": self.n_empty_passages, "n_with_distractors": self.n_with_distractors,
                "passages": self.passage_counts()}

    def to_dict(self) -> dict[str, Any]:
        d = self.summary()
        d["skipped_lines"] = list(self.skipped_lines)
        d["examples"] = [ex.to_dict() for ex in self.examples]
        return d

    def save(self, path: str | os.PathLike) -> Path:
        return atomic_write_json(path, self.to_dict())

    @classmethod
    def load(cls, path: str | os.PathLike) -> LoadResult:
        d = read_json(path)
        return cls(examples=[QAExample.from_dict(e) for e in d["examples"]], n_skipped=d["n_skipped"],
                   skipped_reasons=dict(d["skipped_reasons"]), source=d["source"], format=d["format"],
                   n_duplicate_ids=d.get("n_duplicate_ids", 0), n_relabelled=d.get("n_relabelled", 0),
                   n_empty_passages=d.get("n_empty_passages", 0), n_with_distractors=d.get("n_with_distractors", 0),
                   skipped_lines=list(d.get("skipped_lines", [])))


class _Skip(Exception):
    """A record that cannot become an example: ``reason`` is the counted key."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(reason)
        self.reason, self.detail = reason, detail


@dataclass
class _Counts:
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
    raise _Skip(f"bad_type:{name}", f"{name} must be a string, got {type(v).__name__}")


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
                raise _Skip("bad_type:answers", "answers mixes strings and lists")
            if len([g for g in groups if g]) > 1:
                raise _Skip("multi_part_answer", f"{len(groups)} answer groups (all parts required)")
            items = [x for g in groups for x in g]
        else:
            items = v
    else:
        raise _Skip("bad_type:answers", f"answers must be a string or a list, got {type(v).__name__}")
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
    raise _Skip(f"bad_type:{name}", f"{name} must be a list, got {type(v).__name__}")


def _text_title(item: Any, name: str, f: dict[str, str]) -> tuple[str | None, str]:
    if isinstance(item, str):
        return item, ""
    if isinstance(item, dict):
        text = _scalar_str(_get(item, f.get("text", "text")), f"{name}.text")
        title = _scalar_str(_get(item, f.get("title", "title")), f"{name}.title") or ""
        return text, title
    raise _Skip(f"bad_type:{name}", f"{name} items must be strings or objects, got {type(item).__name__}")


def _bool(v: Any, name: str) -> bool | None:
    if v is None or isinstance(v, bool):
        return v
    if isinstance(v, (int, float)) and v in (0, 1):
        return bool(v)
    if isinstance(v, str) and v.lower() in ("true", "false"):
        return v.lower() == "true"
    raise _Skip(f"bad_type:{name}", f"{name} must be a boolean, got {v!r}")


def _label(v: Any) -> Label | None:
    if v is None:
        return None
    if isinstance(v, bool):
        return Label.RELEVANT if v else Label.IRRELEVANT
    if isinstance(v, str) and v.strip().lower() in _LABEL_ALIASES:
        return _LABEL_ALIASES[v.strip().lower()]
    raise _Skip("bad_value:label", f"unknown passage label {v!r}; valid: {sorted(_LABEL_ALIASES)}")


def _example(ex_id: str, question: Any, answers: list[str],
             passages: list[tuple[str | None, str, Label | None, bool | None, str]],
             source: str, meta: dict[str, Any], counts: _Counts) -> QAExample:
    """Validate and build; ``passages`` items are (text, title, label or None, has_answer or None, kind).

    A label of None means "label by answer presence" (relevant if it holds an answer).
    """
    q = _scalar_str(question, "question")
    if q is None or not q.strip():
        raise _Skip("no_question", "missing or empty question")
    if not answers:
        raise _Skip("no_answer", "no non-empty answer")
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
        raise _Skip("no_passages", "no non-empty passage")
    return QAExample(id=ex_id, question=q.strip(), answers=answers, passages=out, source=source, meta=meta)


def _id(rec: dict, key: str | None, fallback: str) -> str:
    v = _get(rec, key) if key else None
    if v is None:
        return fallback
    s = _scalar_str(v, "id")
    return s.strip() if s and s.strip() else fallback


# ---------------------------------------------------------------- per-format converters

def _from_rgb(rec: dict, fallback_id: str, source: str, counts: _Counts) -> QAExample:
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


def _from_noiserbench(rec: dict, fallback_id: str, source: str, counts: _Counts) -> QAExample:
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


def _from_dpr(rec: dict, fallback_id: str, source: str, counts: _Counts) -> QAExample:
    answers = _answers(rec.get("answers", rec.get("answer")))
    passages: list[tuple] = []
    for item in _passage_items(rec.get("ctxs"), "ctxs"):
        if not isinstance(item, dict):
            raise _Skip("bad_type:ctxs", f"ctxs items must be objects, got {type(item).__name__}")
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


def _make_from_fields(fields: dict[str, str]):
    f = dict(DEFAULT_FIELDS)
    f.update(fields)

    def convert(rec: dict, fallback_id: str, source: str, counts: _Counts) -> QAExample:
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


_CONVERTERS = {"rgb": _from_rgb, "noiserbench": _from_noiserbench, "dpr": _from_dpr}


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


# ---------------------------------------------------------------- sources

def _parse_embedded(source: str) -> tuple[int, int]:
    parts = source.split(":")[1:] if source.startswith("embedded") else []
    try:
        n = int(parts[0]) if len(parts) >= 1 and parts[0] else 200
        s = int(parts[1]) if len(parts) >= 2 and parts[1] else 0
    except ValueError:
        raise ValueError(f"bad embedded source {source!r}; use 'embedded', 'embedded:N' or 'embedded:N:SEED'") from None
    return n, s


def _hf_records(spec: str) -> Iterator[tuple[int, Any]]:
    """Rows of an offline HF dataset: ``spec`` is ``<name or dir>[:split]``."""
    name, split = spec, None
    if not os.path.exists(spec) and ":" in spec:
        name, split = spec.rsplit(":", 1)
    if not name:
        raise DataError("empty dataset name; use 'hf:<name or local dir>[:split]'", "hf:")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import datasets

    old = (datasets.config.HF_DATASETS_OFFLINE, datasets.config.HF_HUB_OFFLINE)
    datasets.config.HF_DATASETS_OFFLINE = datasets.config.HF_HUB_OFFLINE = True
    try:
        p = Path(name)
        if p.is_dir() and any((p / f).exists() for f in ("dataset_info.json", "state.json", "dataset_dict.json")):
            ds = datasets.load_from_disk(str(p))
        else:
            ds = datasets.load_dataset(name, split=split)
    except Exception as e:  # datasets raises many types (FileNotFoundError, ConnectionError, DatasetNotFoundError)
        raise DataError(f"cannot load the HF dataset offline ({type(e).__name__}: {e})", f"hf:{spec}") from e
    finally:
        datasets.config.HF_DATASETS_OFFLINE, datasets.config.HF_HUB_OFFLINE = old
    if isinstance(ds, (datasets.DatasetDict, dict)):
        splits = list(ds.keys())
        pick = split or ("train" if "train" in splits else (splits[0] if len(splits) == 1 else None))
        if pick not in splits:
            raise DataError(f"split {pick!r} not found; available: {splits} (use 'hf:{name}:<split>')", f"hf:{spec}")
        ds = ds[pick]
    for i, row in enumerate(ds, start=1):
        yield i, dict(row)


def load_examples(
    source: str | os.PathLike,
    format: str = "auto",
    strict: bool = False,
    limit: int | None = None,
    fields: dict[str, str] | None = None,
    *,
    distractors: str = "random",
    n_distractors: int = 10,
    seed: int = 0,
) -> LoadResult:
    """Load QA examples with labelled passages from a file, an HF dataset, or the embedded set.

    Args:
        source: a file path (JSON Lines, JSON list, optionally gzip), ``"hf:<name or dir>[:split]"``,
            or ``"embedded[:N[:SEED]]"``.
        format: ``auto`` (peek at the first record), ``rgb``, ``noiserbench``, ``dpr``, ``jsonl``,
            ``hf`` or ``embedded``.
        strict: raise :class:`DataError` (a ``ValueError``) at the first bad record instead of
            skipping it.
        limit: stop after this many examples (in file order).
        fields: for ``jsonl``: our field names -> record keys (see module docstring).
        distractors: for ``dpr`` examples with no irrelevant passage: ``random``, ``bm25`` or ``none``.
        n_distractors: how many irrelevant passages to mine for those examples.
        seed: seed for the mined distractors.

    Returns:
        A :class:`LoadResult`.

    Raises:
        ValueError: bad arguments, a missing/empty file, malformed JSON or non-UTF-8 bytes
            (naming file and line), or no usable example.
    """
    if not isinstance(source, (str, os.PathLike)) or not str(source):
        raise ValueError(f"source must be a non-empty path or string, got {source!r}")
    source = str(source)
    if format not in FORMATS:
        raise ValueError(f"unknown format {format!r}; valid: {', '.join(FORMATS)}")
    if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool) or limit <= 0):
        raise ValueError(f"limit must be a positive int or None, got {limit!r}")
    if distractors not in get_args(DistractorChoice):
        raise ValueError(f"unknown distractors {distractors!r}; valid: {', '.join(get_args(DistractorChoice))}")
    if fields is not None:
        if not isinstance(fields, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in fields.items()):
            raise ValueError("fields must be a dict of str -> str")
        unknown = set(fields) - set(FIELD_KEYS)
        if unknown:
            raise ValueError(f"unknown fields key(s) {sorted(unknown)}; valid: {', '.join(FIELD_KEYS)}")
        if format not in ("auto", "jsonl", "hf"):
            raise ValueError(f"fields= applies to format 'jsonl' (or 'hf'), not {format!r}")

    if format == "embedded" or source == "embedded" or source.startswith("embedded:"):
        from neurorit_lens.data.embedded import embedded_examples

        n, s = _parse_embedded(source)
        exs = embedded_examples(n=n, seed=s)
        if limit is not None:
            exs = exs[:limit]
        return LoadResult(examples=exs, n_skipped=0, skipped_reasons={}, source=source, format="embedded")

    if format == "hf" or source.startswith("hf:"):
        spec = source[3:] if source.startswith("hf:") else source
        records: Iterator[tuple[int, Any]] = _hf_records(spec)
        where = source if source.startswith("hf:") else f"hf:{source}"
    else:
        records = iter_records(source)
        where = source
    stem = Path(source).stem if not where.startswith("hf:") else "hf"
    fmt = format if format not in ("auto", "hf") else None
    if fmt is None and fields is not None:
        fmt = "jsonl"
    converter = _CONVERTERS.get(fmt) if fmt else None
    if fmt == "jsonl":
        converter = _make_from_fields(fields or {})

    examples: list[QAExample] = []
    reasons: Counter[str] = Counter()
    skipped_lines: list[int] = []
    counts = _Counts()
    n_records = 0
    for line, rec in records:
        n_records += 1
        if converter is None and isinstance(rec, dict):
            try:
                fmt = detect_format(rec)
            except ValueError as e:
                raise DataError(str(e), where, line) from None
            converter = _make_from_fields(fields or {}) if fmt == "jsonl" else _CONVERTERS[fmt]
        try:
            if not isinstance(rec, dict):
                raise _Skip("not_an_object", f"record is a {type(rec).__name__}, expected an object")
            assert converter is not None
            examples.append(converter(rec, f"{stem}-{line}", fmt or "", counts))
        except _Skip as s:
            if strict:
                raise DataError(f"{s.reason}: {s.detail}" if s.detail else s.reason, where, line) from None
            reasons[s.reason] += 1
            if len(skipped_lines) < 50:
                skipped_lines.append(line)
            log.debug("%s:%s: skipped (%s: %s)", where, line, s.reason, s.detail)
        except ValueError as e:  # schema validation: should not happen after the checks above
            if strict:
                raise DataError(f"invalid record: {e}", where, line) from None
            reasons["invalid"] += 1
            if len(skipped_lines) < 50:
                skipped_lines.append(line)
        if limit is not None and len(examples) >= limit:
            break
    n_skipped = sum(reasons.values())
    if n_records == 0:
        raise DataError("no records", where)
    if not examples:
        raise DataError(f"no usable example: all {n_skipped} records skipped ({dict(reasons)})", where)
    if n_skipped:
        log.warning("%s: skipped %d of %d records: %s (first lines: %s)", where, n_skipped, n_records,
                    dict(reasons), skipped_lines[:5])

    # duplicate ids -> id, id#2, id#3 ... (in file order)
    seen: set[str] = set()
    n_dup = 0
    for i, ex in enumerate(examples):
        if ex.id in seen:
            n_dup += 1
            k = 2
            while f"{ex.id}#{k}" in seen:
                k += 1
            examples[i] = dataclasses.replace(ex, id=f"{ex.id}#{k}")
        seen.add(examples[i].id)
    if n_dup:
        log.warning("%s: %d duplicate ids made unique (id#2, id#3, ...)", where, n_dup)
    if counts.relabelled:
        log.info("%s: %d passages labelled irrelevant contain a gold answer: relabelled 'unlabelled'",
                 where, counts.relabelled)

    n_with = 0
    if fmt == "dpr" and distractors != "none" and n_distractors > 0:
        need = [i for i, ex in enumerate(examples) if not ex.irrelevant]
        if need:
            mined = add_distractors(examples, k=n_distractors, method=distractors, seed=seed)
            for i in need:
                examples[i] = mined[i]
            n_with = len(need)
    return LoadResult(examples=examples, n_skipped=n_skipped, skipped_reasons=dict(reasons), source=source,
                      format=fmt or "unknown", n_duplicate_ids=n_dup, n_relabelled=counts.relabelled,
                      n_empty_passages=counts.empty, n_with_distractors=n_with, skipped_lines=skipped_lines)
