"""Reading newc ("070701") cpio archives: headers as :class:`CpioMember` records, contents on request.

Used to list ramdisks (``eifbuild ramdisk --list``), to inspect an EIF's ramdisks and in tests. It
stops at ``TRAILER!!!``; anything malformed is an :class:`~eifbuild.errors.ArchiveError` naming the
offset and what was expected.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, Protocol

from ..errors import ArchiveError
from ..util.fsutil import CHUNK

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

MAGIC: Final = b"070701"
MAGIC_CRC: Final = b"070702"
TRAILER: Final = "TRAILER!!!"
HEADER_LEN: Final = 110
# PATH_MAX on Linux; longer names are refused by the kernel unpacker anyway.
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

    def skip(self, n: int, what: str) -> None:
        while n:
            n -= len(self.exact(min(n, CHUNK), what))


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
    stream: Readable, *, path: str | None = None, data: bool | Callable[[CpioMember], bool] = False
) -> Iterator[CpioMember]:
    """Yield the members of one newc archive up to (not including) ``TRAILER!!!``.

    ``data`` says whose content to load into :attr:`CpioMember.data` (all, none, or a predicate on the
    header); other contents are skipped.
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
        if data is True or (callable(data) and data(member)):
            member = dataclasses.replace(member, data=rd.exact(size, f"{size} bytes of {name!r}"))
        else:
            rd.skip(size, f"{size} bytes of {name!r}")
        rd.skip(-size % 4, "data padding")
        yield member
