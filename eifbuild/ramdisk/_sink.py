"""Output plumbing of the cpio writer: sha256 while writing, deterministic gzip."""

from __future__ import annotations

import struct
import zlib
from typing import Final, Protocol

from ..util.fsutil import StreamHasher

MAX_U32: Final = 0xFFFFFFFF


class Writable(Protocol):
    """A binary stream to write to (files, ``io.BytesIO``, ...)."""

    def write(self, data: bytes | bytearray | memoryview, /) -> object: ...


class HashingSink:
    """Writes through to ``out`` while computing sha256 and size of everything written."""

    def __init__(self, out: Writable) -> None:
        self.out = out
        self.hashed = StreamHasher()

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.hashed.update(data)
        self.out.write(data)


class GzipSink:
    """One gzip member written by hand so every header byte is fixed (RFC 1952)."""

    HEADER: Final = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"  # deflate, no flags, mtime 0, OS unknown

    def __init__(self, out: HashingSink, level: int) -> None:
        self.out = out
        self.deflate = zlib.compressobj(level, zlib.DEFLATED, -zlib.MAX_WBITS, 9, zlib.Z_DEFAULT_STRATEGY)
        self.crc = 0
        self.length = 0
        out.write(self.HEADER)

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.crc = zlib.crc32(data, self.crc)
        self.length += len(data)
        if chunk := self.deflate.compress(data):
            self.out.write(chunk)

    def close(self) -> None:
        self.out.write(self.deflate.flush())
        self.out.write(struct.pack("<II", self.crc, self.length & MAX_U32))
