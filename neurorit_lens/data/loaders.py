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

The converters (one per format) live in :mod:`neurorit_lens.data.formats`.

>>> res = load_examples("embedded:6")
>>> len(res), res.format, res.n_skipped
(6, 'embedded', 0)
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_args

from neurorit_lens.config import DistractorChoice
from neurorit_lens.data.distractors import add_distractors
from neurorit_lens.data.formats import (
    CONVERTERS,
    DEFAULT_FIELDS,
    FIELD_KEYS,
    FORMATS,
    Counts,
    Skip,
    detect_format,
    make_from_fields,
)
from neurorit_lens.data.records import DataError, iter_records
from neurorit_lens.data.schema import Label, QAExample
from neurorit_lens.io import atomic_write_json, read_json

__all__ = ["DEFAULT_FIELDS", "FIELD_KEYS", "FORMATS", "LoadResult", "detect_format", "load_examples"]

log = logging.getLogger(__name__)


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
    _check_arguments(source, format, limit, fields, distractors)
    source = str(source)
    if format == "embedded" or source == "embedded" or source.startswith("embedded:"):
        return _load_embedded(source, limit)
    records, where = _open_records(source, format)
    stem = Path(source).stem if not where.startswith("hf:") else "hf"
    fmt = format if format not in ("auto", "hf") else None
    if fmt is None and fields is not None:
        fmt = "jsonl"
    read = _convert_records(records, where, stem, fmt, fields, strict, limit)
    examples, n_dup = _unique_ids(read.examples, where)
    if read.counts.relabelled:
        log.info("%s: %d passages labelled irrelevant contain a gold answer: relabelled 'unlabelled'",
                 where, read.counts.relabelled)
    n_with = 0
    if read.fmt == "dpr" and distractors != "none" and n_distractors > 0:
        n_with = _mine_missing_distractors(examples, distractors, n_distractors, seed)
    return LoadResult(examples=examples, n_skipped=read.n_skipped, skipped_reasons=dict(read.reasons),
                      source=source, format=read.fmt or "unknown", n_duplicate_ids=n_dup,
                      n_relabelled=read.counts.relabelled, n_empty_passages=read.counts.empty,
                      n_with_distractors=n_with, skipped_lines=read.skipped_lines)


def _check_arguments(source: Any, format: Any, limit: Any, fields: Any, distractors: Any) -> None:
    """The ValueErrors of :func:`load_examples` for bad arguments (before any file is opened)."""
    if not isinstance(source, (str, os.PathLike)) or not str(source):
        raise ValueError(f"source must be a non-empty path or string, got {source!r}")
    if format not in FORMATS:
        raise ValueError(f"unknown format {format!r}; valid: {', '.join(FORMATS)}")
    if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool) or limit <= 0):
        raise ValueError(f"limit must be a positive int or None, got {limit!r}")
    if distractors not in get_args(DistractorChoice):
        raise ValueError(f"unknown distractors {distractors!r}; valid: {', '.join(get_args(DistractorChoice))}")
    if fields is not None:
        if not isinstance(fields, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                                   for k, v in fields.items()):
            raise ValueError("fields must be a dict of str -> str")
        unknown = set(fields) - set(FIELD_KEYS)
        if unknown:
            raise ValueError(f"unknown fields key(s) {sorted(unknown)}; valid: {', '.join(FIELD_KEYS)}")
        if format not in ("auto", "jsonl", "hf"):
            raise ValueError(f"fields= applies to format 'jsonl' (or 'hf'), not {format!r}")


def _load_embedded(source: str, limit: int | None) -> LoadResult:
    from neurorit_lens.data.embedded import embedded_examples

    n, s = _parse_embedded(source)
    exs = embedded_examples(n=n, seed=s)
    if limit is not None:
        exs = exs[:limit]
    return LoadResult(examples=exs, n_skipped=0, skipped_reasons={}, source=source, format="embedded")


def _open_records(source: str, format: str) -> tuple[Iterator[tuple[int, Any]], str]:
    """``(line or row number, record)`` pairs of a file or HF dataset, and the name errors use."""
    if format == "hf" or source.startswith("hf:"):
        spec = source[3:] if source.startswith("hf:") else source
        return _hf_records(spec), (source if source.startswith("hf:") else f"hf:{source}")
    return iter_records(source), source


@dataclass
class _Read:
    """What :func:`_convert_records` kept and counted."""

    examples: list[QAExample]
    fmt: str | None
    counts: Counts
    reasons: Counter[str] = field(default_factory=Counter)
    skipped_lines: list[int] = field(default_factory=list)  # first 50

    @property
    def n_skipped(self) -> int:
        return sum(self.reasons.values())

    def skip(self, reason: str, line: int) -> None:
        self.reasons[reason] += 1
        if len(self.skipped_lines) < 50:
            self.skipped_lines.append(line)


def _converter(fmt: str, fields: dict[str, str] | None) -> Callable[..., QAExample]:
    return make_from_fields(fields or {}) if fmt == "jsonl" else CONVERTERS[fmt]


def _convert_records(records: Iterator[tuple[int, Any]], where: str, stem: str, fmt: str | None,
                     fields: dict[str, str] | None, strict: bool, limit: int | None) -> _Read:
    """Convert records in order (the format detected from the first object when ``fmt`` is None);
    a bad record is skipped and counted, or with ``strict`` a :class:`DataError`."""
    read = _Read(examples=[], fmt=fmt, counts=Counts())
    converter = _converter(fmt, fields) if fmt else None
    n_records = 0
    for line, rec in records:
        n_records += 1
        if converter is None and isinstance(rec, dict):
            try:
                read.fmt = detect_format(rec)
            except ValueError as e:
                raise DataError(str(e), where, line) from None
            converter = _converter(read.fmt, fields)
        try:
            if not isinstance(rec, dict):
                raise Skip("not_an_object", f"record is a {type(rec).__name__}, expected an object")
            assert converter is not None
            read.examples.append(converter(rec, f"{stem}-{line}", read.fmt or "", read.counts))
        except Skip as s:
            if strict:
                raise DataError(f"{s.reason}: {s.detail}" if s.detail else s.reason, where, line) from None
            read.skip(s.reason, line)
            log.debug("%s:%s: skipped (%s: %s)", where, line, s.reason, s.detail)
        except ValueError as e:  # schema validation: should not happen after the checks above
            if strict:
                raise DataError(f"invalid record: {e}", where, line) from None
            read.skip("invalid", line)
        if limit is not None and len(read.examples) >= limit:
            break
    _check_read(read, where, n_records)
    return read


def _check_read(read: _Read, where: str, n_records: int) -> None:
    if n_records == 0:
        raise DataError("no records", where)
    if not read.examples:
        raise DataError(f"no usable example: all {read.n_skipped} records skipped ({dict(read.reasons)})", where)
    if read.n_skipped:
        log.warning("%s: skipped %d of %d records: %s (first lines: %s)", where, read.n_skipped, n_records,
                    dict(read.reasons), read.skipped_lines[:5])


def _unique_ids(examples: list[QAExample], where: str) -> tuple[list[QAExample], int]:
    """Duplicate ids -> ``id``, ``id#2``, ``id#3``, ... in file order; returns the number renamed."""
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
    return examples, n_dup


def _mine_missing_distractors(examples: list[QAExample], method: str, k: int, seed: int) -> int:
    """Give examples without an irrelevant passage ``k`` mined ones (in place); returns how many."""
    need = [i for i, ex in enumerate(examples) if not ex.irrelevant]
    if need:
        mined = add_distractors(examples, k=k, method=method, seed=seed)
        for i in need:
            examples[i] = mined[i]
    return len(need)
