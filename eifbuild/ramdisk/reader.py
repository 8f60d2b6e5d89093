"""Reading newc ("070701") cpio archives: headers as :class:`CpioMember` records, contents on request.

Used to list ramdisks (``eifbuild ramdisk --list``), to inspect an EIF's ramdisks and in tests. It
stops at ``TRAILER!!!``; anything malformed is an :class:`~eifbuild.errors.ArchiveError` naming the
offset and what was expected.
"""

from __future__ import annotations

import dataclasses
import hashlib
import stat
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING, Final, Protocol

from ..errors import ArchiveError
from ..util.fsutil import CHUNK, StreamHasher

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

MAGIC: Final = b"070701"
MAGIC_CRC: Final = b"070702"
TRAILER: Final = "TRAILER!!!"
HEADER_LEN: Final = 110
# PATH_MAX on Linux; longer names (and symlink targets) are refused by the kernel unpacker anyway.
MAX_NAME: Final = 4096


class Readable(Protocol):
    """A binary stream to read from (files, ``io.BytesIO``, tar members, gzip streams)."""

    def read(self, size: int = ..., /) -> bytes: ...
    def close(self) -> None: ...


@dataclass(frozen=True, slots=True)
class CpioMember:
    """One header of a newc archive as stored (``data`` only filled when asked for)."""

    name: str
    ino: int
    mode: int
    uid: int
    gid: int
    nlink: int
    mtime: int
    size: int
    dev: tuple[int, int]
    rdev: tuple[int, int]
    offset: int
    data: bytes = b""
    sha256: str | None = None  # of the content, when read with ``hashed``


class _Reader:
    def __init__(self, stream: Readable, where: str | None) -> None:
        self.stream = stream
        self.where = where
        self.offset = 0

    def exact(self, n: int, what: str) -> bytes:
        data = self.stream.read(n)
        if len(data) != n:
            msg = f"truncated archive at offset {self.offset + len(data)}: expected {what}"
            raise ArchiveError(msg, path=self.where)
        self.offset += n
        return data

    def skip(
        self, n: int, what: str, hasher: StreamHasher | None = None, out: IO[bytes] | None = None
    ) -> None:
        """Read past ``n`` bytes, feeding them to ``hasher`` and ``out`` when given."""
        while n:
            chunk = self.exact(min(n, CHUNK), what)
            n -= len(chunk)
            if hasher is not None:
                hasher.update(chunk)
            if out is not None:
                out.write(chunk)


def _parse_header(raw: bytes, offset: int, where: str | None) -> list[int]:
    if raw[:6] not in (MAGIC, MAGIC_CRC):
        msg = f"bad magic {raw[:6]!r} at offset {offset}: expected a newc cpio header (070701)"
        raise ArchiveError(msg, path=where)
    try:
        return [int(raw[i : i + 8], 16) for i in range(6, HEADER_LEN, 8)]
    except ValueError:
        msg = f"malformed header at offset {offset}: expected 13 hex fields"
        raise ArchiveError(msg, path=where) from None


def read_cpio(
    stream: Readable,
    *,
    path: str | None = None,
    data: bool | Callable[[CpioMember], bool] = False,
    hashed: bool = False,
    copy_to: Callable[[CpioMember], IO[bytes] | None] | None = None,
) -> Iterator[CpioMember]:
    """Yield the members of one newc archive up to (not including) ``TRAILER!!!``.

    ``data`` says whose content to load into :attr:`CpioMember.data` (all, none, or a predicate on the
    header); other contents are streamed past in CHUNK reads: with ``hashed`` into
    :attr:`CpioMember.sha256`, and into the file ``copy_to`` returns for the header (if any).
    """
    rd = _Reader(stream, path)
    while True:
        offset = rd.offset
        ino, mode, uid, gid, nlink, mtime, size, dmaj, dmin, rmaj, rmin, namesize, _ = _parse_header(
            rd.exact(HEADER_LEN, "a header"), offset, path
        )
        if not 1 < namesize <= MAX_NAME:
            msg = f"name size {namesize} at offset {offset}: expected 2..{MAX_NAME}"
            raise ArchiveError(msg, path=path)
        raw_name = rd.exact(namesize, "a name")
        if raw_name[-1] != 0 or 0 in raw_name[:-1]:
            msg = f"name at offset {offset} is not a single NUL-terminated string"
            raise ArchiveError(msg, path=path)
        rd.skip(-(HEADER_LEN + namesize) % 4, "name padding")
        name = raw_name[:-1].decode("utf-8", "surrogateescape")
        if name == TRAILER:
            return
        member = CpioMember(name, ino, mode, uid, gid, nlink, mtime, size, (dmaj, dmin), (rmaj, rmin), offset)
        if stat.S_ISLNK(mode) and size >= MAX_NAME:  # the kernel's unpacker refuses these too
            msg = f"symlink target of {size} bytes at offset {offset}: at most {MAX_NAME - 1} (PATH_MAX)"
            raise ArchiveError(msg, path=path, member=name)
        what = f"{size} bytes of {name!r}"
        if data is True or (callable(data) and data(member)):
            content = rd.exact(size, what)
            if copy_to is not None and (out := copy_to(member)) is not None:
                out.write(content)
            digest = hashlib.sha256(content).hexdigest() if hashed else None
            member = dataclasses.replace(member, data=content, sha256=digest)
        else:
            hasher = StreamHasher() if hashed else None
            rd.skip(size, what, hasher, None if copy_to is None else copy_to(member))
            if hasher is not None:
                member = dataclasses.replace(member, sha256=hasher.hexdigest())
        rd.skip(-size % 4, "data padding")
        yield member
