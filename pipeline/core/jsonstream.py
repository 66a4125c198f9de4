"""Read a large JSON document element by element, in bounded memory.

:func:`lazy_json` stands in for ``json.loads(path.read_bytes())`` on documents that are one big array
(Karpathy caption lists) or an object of big arrays (COCO annotation files, Karpathy's
``dataset_coco.json``). Arrays come back as :class:`JsonArray`, an iterable that streams its elements
from the file each time it is iterated; every other value is parsed as usual. Invariants:

- the values are those ``json.loads`` gives on the same bytes: the text is decoded as UTF-8 with
  ``surrogateescape`` (a leading BOM dropped), each element is parsed by the standard decoder, and
  of a key given twice the last one wins;
- memory holds one element plus one read buffer (1 MiB, more only for an element bigger than that),
  never the document;
- a syntax error raises :class:`SourceError` naming the file, line and column, as the whole-document
  reader does; for an object the structure is checked once, in full, before the first element is
  returned, so every array of a broken object fails up front; a top-level array is checked as it is
  streamed, so its error comes after the elements before it;
- a :class:`JsonArray` has no ``len`` and no indexing (both raise ``TypeError``), so code written for
  lists fails loudly instead of seeing an empty list.

Imports nothing of hardneg but :mod:`pipeline.core.errors`.
"""

from __future__ import annotations

import codecs
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

from pipeline.core.errors import SourceError

_CHUNK = 1 << 20
_WS = re.compile(r"[ \t\n\r]*")
_DECODER = json.JSONDecoder()


class _Reader:
    """A forward-only cursor over the decoded text of a file, with line/column bookkeeping."""

    def __init__(self, path: str) -> None:
        self.path = path
        try:
            self.f: BinaryIO = open(path, "rb")
        except OSError as e:
            raise SourceError(f"cannot read {path}: {e}") from e
        self.dec = codecs.getincrementaldecoder("utf-8")("surrogateescape")
        self.buf = ""
        self.pos = 0
        self.eof = False
        self.started = False
        self.lines_dropped = 0  # newlines in the text dropped from the front of buf
        self.col_dropped = 0  # characters after the last dropped newline

    def close(self) -> None:
        self.f.close()

    def __enter__(self) -> "_Reader":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- buffer

    def _fill(self) -> None:
        """Append at least one more chunk (doubling for a big element); sets ``eof`` at the end."""
        if self.eof:
            return
        if self.pos > _CHUNK:  # drop what was consumed, keeping line/column counts
            dropped = self.buf[: self.pos]
            nl = dropped.rfind("\n")
            if nl >= 0:
                self.lines_dropped += dropped.count("\n")
                self.col_dropped = len(dropped) - nl - 1
            else:
                self.col_dropped += len(dropped)
            self.buf = self.buf[self.pos :]
            self.pos = 0
        try:
            raw = self.f.read(max(_CHUNK, len(self.buf)))
        except OSError as e:
            raise SourceError(f"cannot read {self.path}: {e}") from e
        text = self.dec.decode(raw, final=not raw)
        if not self.started:
            text = text.lstrip("\ufeff")
            self.started = bool(text) or not raw
        self.buf += text
        if not raw:
            self.eof = True

    def _error(self, msg: str, pos: int) -> SourceError:
        before = self.buf[:pos]
        line = self.lines_dropped + before.count("\n") + 1
        nl = before.rfind("\n")
        col = pos - nl if nl >= 0 else self.col_dropped + pos + 1
        return SourceError(f"{self.path}: not valid JSON at line {line} column {col}: {msg}")

    def peek(self) -> str:
        """The next non-whitespace character ('' at the end of the file), not consumed."""
        while True:
            m = _WS.match(self.buf, self.pos)
            assert m is not None
            self.pos = m.end()
            if self.pos < len(self.buf):
                return self.buf[self.pos]
            if self.eof:
                return ""
            self._fill()

    def expect(self, chars: str, what: str) -> str:
        c = self.peek()
        if not c or c not in chars:
            raise self._error(f"Expecting {what}", self.pos)
        self.pos += 1
        return c

    def value(self) -> Any:
        """The next complete JSON value."""
        if not self.peek():
            raise self._error("Expecting value", self.pos)
        while True:
            try:
                obj, end = _DECODER.raw_decode(self.buf, self.pos)
            except json.JSONDecodeError as e:
                # at the end of the buffer the value may only be cut off: read on and retry
                incomplete = e.msg.startswith("Unterminated string") or e.pos >= len(self.buf) - 6
                if incomplete and not self.eof:
                    self._fill()
                    continue
                raise self._error(e.msg, e.pos) from None
            if end >= len(self.buf) and not self.eof:  # a number may go on in the next chunk
                self._fill()
                continue
            self.pos = end
            return obj

    def array_items(self) -> Iterator[Any]:
        """Elements of the array that starts at the cursor; leaves the cursor after its ``]``."""
        self.expect("[", "'['")
        if self.peek() == "]":
            self.pos += 1
            return
        while True:
            yield self.value()
            if self.expect(",]", "',' delimiter") == "]":
                return

    def skip_value(self) -> None:
        if self.peek() == "[":
            for _ in self.array_items():
                pass
        else:
            self.value()

    def end(self) -> None:
        if self.peek():
            raise self._error("Extra data", self.pos)


class JsonArray:
    """A JSON array streamed from its file on every iteration (see the module docstring)."""

    def __init__(self, path: str, member: int | None = None, key: str | None = None) -> None:
        #: None: the document is this array; else the index of the top-level member that holds it
        self.path, self.member, self.key = path, member, key

    def __iter__(self) -> Iterator[Any]:
        with _Reader(self.path) as r:
            if self.member is None:
                yield from r.array_items()
                r.end()
                return
            for i, (_, is_array, _) in enumerate(_members(r)):
                if i == self.member and is_array:
                    yield from r.array_items()
                    return
                if is_array:
                    r.skip_value()
        raise SourceError(f"{self.path} changed while it was read (member {self.key!r} is gone)")

    def __len__(self) -> int:
        raise TypeError("a streamed JSON array has no len(); iterate it")

    def __getitem__(self, i: Any) -> Any:
        raise TypeError("a streamed JSON array cannot be indexed; iterate it")

    def __repr__(self) -> str:
        where = "document" if self.member is None else f"member {self.key!r}"
        return f"JsonArray({self.path!r}, {where})"


def _members(r: _Reader) -> Iterator[tuple[str, bool, Any]]:
    """``(key, is_array, value)`` per member of the top-level object at the cursor.

    For an array the value is None and the caller consumes it (``skip_value`` or ``array_items``)
    before asking for the next member; any other value is parsed here.
    """
    r.expect("{", "'{'")
    if r.peek() == "}":
        r.pos += 1
        return
    while True:
        if r.peek() != '"':
            raise r._error("Expecting property name enclosed in double quotes", r.pos)
        key = r.value()
        r.expect(":", "':' delimiter")
        if r.peek() == "[":
            yield key, True, None
        else:
            yield key, False, r.value()
        if r.expect(",}", "',' delimiter") == "}":
            return


def lazy_json(path: str | Path) -> Any:
    """The document at ``path`` with its arrays (top level or top-level members) as :class:`JsonArray`.

    An object is read through once here, in bounded memory, to check it and learn its keys.
    """
    path = str(path)
    with _Reader(path) as r:
        first = r.peek()
        if first == "[":
            return JsonArray(path)
        if first != "{":
            doc = r.value()
            r.end()
            return doc
        obj: dict[str, Any] = {}
        for i, (key, is_array, value) in enumerate(_members(r)):
            if is_array:
                r.skip_value()
                value = JsonArray(path, i, key)
            obj[key] = value  # as json.loads: a repeated key keeps its first place and its last value
        r.end()
        return obj
