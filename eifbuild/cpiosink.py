"""Output plumbing of the cpio writer: sha256 while writing, deterministic gzip, a writer thread."""

from __future__ import annotations

import hashlib
import queue
import struct
import threading
import zlib
from typing import Final, Protocol

MAX_U32: Final = 0xFFFFFFFF


class Writable(Protocol):
    """A binary stream to write to (files, ``io.BytesIO``, ...)."""

    def write(self, data: bytes | bytearray | memoryview, /) -> object: ...


class HashingSink:
    """Writes through to ``out`` while computing sha256 and size of everything written."""

    def __init__(self, out: Writable) -> None:
        self.out = out
        self.hasher = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.hasher.update(data)
        self.out.write(data)
        self.size += len(data)


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


class Background:
    """Runs the downstream sinks (gzip, hashing, the output) on a worker thread.

    Compression, hashing and write system calls release the GIL, so they overlap with reading the
    next files. The bounded queue keeps memory at a few chunks; chunks handed over are never
    mutated afterwards. A failure downstream is re-raised in the caller's thread.
    """

    def __init__(self, sink: HashingSink | GzipSink) -> None:
        self.sink = sink
        self.queue: queue.Queue[bytes | bytearray | memoryview | None] = queue.Queue(maxsize=4)
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="cpio-writer", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while (chunk := self.queue.get()) is not None:
            if self.error is None:
                try:
                    self.sink.write(chunk)
                except BaseException as exc:  # handed to the caller's thread
                    self.error = exc

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self.error is not None:
            raise self.error
        self.queue.put(data)

    def close(self, *, reraise: bool = True) -> None:
        """Wait for everything queued to be written; re-raise a downstream failure if asked."""
        if self.thread.is_alive():
            self.queue.put(None)
            self.thread.join()
        if reraise and self.error is not None:
            raise self.error
