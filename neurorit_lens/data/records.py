"""Reading raw records from JSON Lines (optionally gzip) or JSON-list files, with line numbers.

Every record comes with the 1-based line where it starts, so any later error can name
``file:line``. Malformed JSON and non-UTF-8 bytes are errors (:class:`DataError`, a
``ValueError``) naming the file and line: decoding with replacement characters would
silently change answers and passages, so we refuse instead.
"""

from __future__ import annotations

import gzip
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any


class DataError(ValueError):
    """A data problem, located: ``str(e)`` reads ``"<file>:<line>: <message>"``."""

    def __init__(self, message: str, source: str | os.PathLike | None = None, line: int | None = None):
        self.source = str(source) if source is not None else None
        self.line = line
        loc = ""
        if self.source is not None:
            loc = f"{self.source}:{line}: " if line is not None else f"{self.source}: "
        super().__init__(loc + message)
        self.message = message


def read_bytes(path: str | os.PathLike) -> bytes:
    """The file's bytes, gunzipped if it is gzip (by magic number). Errors are ``DataError``."""
    path = Path(path)
    if not path.exists():
        raise DataError("file not found", path)
    if path.is_dir():
        raise DataError("is a directory, expected a JSON / JSON Lines file (use 'hf:<dir>' for a saved dataset)", path)
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as e:
            raise DataError(f"corrupt gzip data ({e})", path) from e
    if not raw.strip():
        raise DataError("file is empty", path)
    return raw


def decode_utf8(raw: bytes, path: str | os.PathLike, first_line: int = 1) -> str:
    """Decode UTF-8 (a leading BOM is dropped); on bad bytes raise ``DataError`` with the line."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = first_line + raw[: e.start].count(b"\n")
        raise DataError(f"not valid UTF-8 (byte 0x{raw[e.start]:02x}); re-encode the file as UTF-8", path, line) from e
    return text[1:] if text.startswith("\ufeff") else text


def peek_kind(raw: bytes) -> str:
    """``"list"`` if the first non-blank byte is ``[``, else ``"lines"``."""
    stripped = raw.lstrip(b"\xef\xbb\xbf \t\r\n")
    return "list" if stripped[:1] == b"[" else "lines"


def iter_json_lines(raw: bytes, path: str | os.PathLike) -> Iterator[tuple[int, Any]]:
    """Yield ``(line_number, record)`` for each non-blank line of JSON Lines bytes."""
    for i, bline in enumerate(raw.split(b"\n"), start=1):
        if not bline.strip():
            continue
        line = decode_utf8(bline, path, i)
        try:
            yield i, json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"malformed JSON ({e.msg} at column {e.colno})", path, i) from e


def iter_json_list(raw: bytes, path: str | os.PathLike) -> Iterator[tuple[int, Any]]:
    """Yield ``(line_number, element)`` for each element of a top-level JSON list."""
    text = decode_utf8(raw, path)
    dec = json.JSONDecoder()
    n = len(text)
    ws = " \t\r\n"

    def skip(i: int) -> int:
        while i < n and text[i] in ws:
            i += 1
        return i

    def line_of(i: int) -> int:
        return text.count("\n", 0, i) + 1

    i = skip(0)
    if i >= n or text[i] != "[":
        raise DataError("expected a JSON list", path, line_of(i))
    i = skip(i + 1)
    line, last = 1, 0
    if i < n and text[i] == "]":
        return
    while True:
        line += text.count("\n", last, i)
        last = i
        try:
            obj, end = dec.raw_decode(text, i)
        except json.JSONDecodeError as e:
            raise DataError(f"malformed JSON ({e.msg} at column {e.colno})", path, e.lineno) from e
        yield line, obj
        i = skip(end)
        if i < n and text[i] == ",":
            i = skip(i + 1)
            continue
        if i < n and text[i] == "]":
            if skip(i + 1) < n:
                raise DataError("unexpected data after the closing ']'", path, line_of(skip(i + 1)))
            return
        raise DataError("malformed JSON (expected ',' or ']' between list elements)", path, line_of(i))


def _first_line_is_a_record(raw: bytes) -> bool:
    """True for JSON Lines whose first record happens to be an array: the first non-blank
    line is complete JSON on its own and more non-blank lines follow."""
    lines = [b for b in raw.split(b"\n") if b.strip()]
    if len(lines) < 2:
        return False
    try:
        json.loads(lines[0])
    except (json.JSONDecodeError, UnicodeDecodeError):
        return False
    return True


def iter_records(path: str | os.PathLike) -> Iterator[tuple[int, Any]]:
    """Records of a JSON Lines or JSON-list file (gzip allowed), each with its line number."""
    raw = read_bytes(path)
    if peek_kind(raw) == "list" and not _first_line_is_a_record(raw):
        yield from iter_json_list(raw, path)
    else:
        yield from iter_json_lines(raw, path)
