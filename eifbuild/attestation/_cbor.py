"""A strict, bounded CBOR decoder for attestation documents (outside input), and the one encoder the
signature check needs (COSE's ``Sig_structure``).

cbor2 is not used on the way in: it has no depth limit, accepts trailing bytes, keeps the last of
duplicate map keys and turns tags into objects (value sharing, string references, dates …). This
decoder knows only what an NSM writes: integers, byte and text strings, arrays, maps, ``false``,
``true`` and ``null``, definite lengths only, at most :data:`MAX_DEPTH` nested containers, unique
map keys, and one tag (COSE_Sign1's 18) where the caller allows it. Everything else is
:class:`Malformed`, with a ``code`` saying which structure reason applies.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

MAX_DEPTH: Final = 8  # an NSM document nests 3 deep (tag, array, map); its payload 2 (map, map)

_UINT, _NINT, _BYTES, _TEXT, _ARRAY, _MAP, _TAG, _SIMPLE = range(8)
_SIMPLE_VALUES: Final[dict[int, object]] = {20: False, 21: True, 22: None}


class Malformed(Exception):
    """Not a document this decoder accepts; ``code`` is the structure reason (``cbor``, ``depth``,
    ``tag``, ``trailing``)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class Tagged:
    """A tagged item (only where the caller allowed tags: the document's outermost item)."""

    tag: int
    value: object


def decode(data: bytes, *, what: str, top_tags: bool = False) -> object:
    """The one CBOR item that is all of ``data``; Malformed if it is not (trailing bytes included).
    ``top_tags``: the outermost item may be tagged (the caller judges which tag)."""
    reader = _Reader(data, what)
    value = reader.item(0, top_tags=top_tags)
    if reader.pos != len(data):
        msg = f"{what}: {len(data) - reader.pos} bytes after the CBOR item"
        raise Malformed("trailing", msg)
    return value


class _Reader:
    def __init__(self, data: bytes, what: str) -> None:
        self.data = data
        self.what = what
        self.pos = 0

    def _fail(self, code: str, message: str) -> Malformed:
        return Malformed(code, f"{self.what}: {message} (offset {self.pos})")

    def _take(self, n: int) -> bytes:
        if n > len(self.data) - self.pos:
            raise self._fail("cbor", "truncated CBOR")
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def _head(self) -> tuple[int, int, int]:
        """(major type, additional info, argument)."""
        first = self._take(1)[0]
        major, info = first >> 5, first & 0x1F
        if info < 24:
            return major, info, info
        if info in (24, 25, 26, 27):
            return major, info, int.from_bytes(self._take(1 << (info - 24)), "big")
        if info == 31:
            raise self._fail("cbor", "indefinite-length CBOR item (an NSM writes definite lengths)")
        raise self._fail("cbor", f"reserved CBOR additional information {info}")

    def item(self, depth: int, *, top_tags: bool = False) -> object:
        start = self.pos
        major, info, arg = self._head()
        if major in (_ARRAY, _MAP, _TAG):
            if depth >= MAX_DEPTH:
                self.pos = start
                raise self._fail("depth", f"CBOR nested more than {MAX_DEPTH} deep")
            if major == _ARRAY:
                return [self.item(depth + 1) for _ in range(arg)]
            if major == _MAP:
                return self._map(arg, depth)
            if not top_tags:
                self.pos = start
                raise self._fail("tag", f"CBOR tag {arg} where no tag is allowed")
            return Tagged(arg, self.item(depth + 1))
        return self._scalar(start, major, info, arg)

    def _scalar(self, start: int, major: int, info: int, arg: int) -> object:
        if major in (_UINT, _NINT):
            return arg if major == _UINT else -1 - arg
        if major == _BYTES:
            return self._take(arg)
        if major == _TEXT:
            try:
                return self._take(arg).decode("utf-8")
            except UnicodeDecodeError:
                self.pos = start
                raise self._fail("cbor", "text string is not UTF-8") from None
        if info in _SIMPLE_VALUES:
            return _SIMPLE_VALUES[info]
        self.pos = start
        raise self._fail("cbor", "CBOR float or simple value (an NSM writes none)")

    def _map(self, count: int, depth: int) -> dict[object, object]:
        result: dict[object, object] = {}
        for _ in range(count):
            at = self.pos
            key = self.item(depth + 1)
            if not isinstance(key, (int, str, bytes)) or isinstance(key, bool):
                self.pos = at
                raise self._fail("cbor", "map key is not an integer or a string")
            if key in result:
                self.pos = at
                raise self._fail("cbor", f"duplicate map key {key!r}")
            result[key] = self.item(depth + 1)
        return result
