"""Reading one section of an EIF as a stream: its raw bytes hashed as they pass, a gzip ramdisk
decompressed on the fly, and a ramdisk's cpio members streamed out (never a whole ramdisk in memory).

Shared by the summary (``diff``, which reads the sections as :func:`eifbuild.eif.scan` passes them)
and by ``extract --unpack`` (which opens the section itself): both go through :func:`ramdisk_members`.
"""

from __future__ import annotations

import contextlib
import gzip
import struct
import zlib
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING, Final, Protocol

from ..errors import ArchiveError, EifFormatError, first_line
from ..ramdisk import CpioMember, read_cpio
from ..util.fsutil import CHUNK, StreamHasher

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from ..eif import EifImage, Section

GZIP_MAGIC: Final = b"\x1f\x8b"
CPIO_MAGIC: Final = b"0707"
_GZIP_FIXED: Final = struct.Struct("<2sBBIBB")
_FEXTRA, _FNAME = 0x04, 0x08


class Source(Protocol):
    """Where a section's bytes come from: the EIF file at the section's data, or a scan's section."""

    def read(self, size: int, /) -> bytes: ...


class SectionStream:
    """The data of ``section`` read from ``fh`` (positioned at its start), hashed (sha256, unless not
    ``hashed``: then only counted) as it is read, and written to ``copy`` (when given) in the same
    pass; ``peek`` looks ahead."""

    def __init__(
        self, fh: Source, section: Section, where: str, *, hashed: bool = True, copy: IO[bytes] | None = None
    ) -> None:
        self.fh = fh
        self.left = section.size
        self.where = where
        self.hasher = _hasher(hashed)
        self.copy = copy
        self._ahead = b""

    def peek(self, size: int) -> bytes:
        if len(self._ahead) < size:
            self._ahead += self._take(size - len(self._ahead))
        return self._ahead[:size]

    def read(self, size: int = -1, /) -> bytes:
        want = CHUNK if size < 0 else size  # callers read in bounded pieces; -1 is one chunk, not all
        ahead, self._ahead = self._ahead[:want], self._ahead[want:]
        data = ahead + self._take(want - len(ahead)) if ahead else self._take(want)
        if self.copy is not None:  # here, not in _take: peeked bytes are copied when read, in order
            self.copy.write(data)
        return data

    def drain(self) -> None:
        while self.read(CHUNK):
            pass

    def close(self) -> None:
        """Nothing to close: the caller owns the file."""

    def _take(self, size: int) -> bytes:
        size = min(size, self.left)
        try:
            data = self.fh.read(size)
        except OSError as exc:
            msg = f"cannot read {self.where}: {exc.strerror or exc}"
            raise EifFormatError(msg) from None
        if len(data) != size:
            msg = f"file shrank while reading {self.where}"
            raise EifFormatError(msg)
        self.left -= size
        self.hasher.update(data)
        return data


def _hasher(hashed: bool) -> StreamHasher:
    return StreamHasher() if hashed else StreamHasher(())


def sha256_of(hasher: StreamHasher) -> str:
    """The sha256 ``hasher`` took, or "" when it was only counting (hashed=False)."""
    return hasher.hexdigest() if hasher.algorithms else ""


class HashingReader:
    """Everything read through it is hashed, unless not ``hashed`` (the decompressed cpio of a gzip
    ramdisk)."""

    def __init__(self, inner: IO[bytes] | SectionStream, *, hashed: bool = True) -> None:
        self.inner = inner
        self.hasher = _hasher(hashed)

    def read(self, size: int = -1, /) -> bytes:
        data = self.inner.read(CHUNK if size < 0 else size)
        self.hasher.update(data)
        return data

    def close(self) -> None:
        """The inner stream is closed by its owner."""


@dataclass(frozen=True)
class GzipHeader:
    """The fields of a gzip member header that differ between compressors and runs."""

    flags: int
    mtime: int
    xfl: int
    os: int
    name: str | None


def parse_gzip_header(head: bytes) -> GzipHeader | None:
    """The header at the start of ``head`` (None when it is cut short before the name ends)."""
    if len(head) < _GZIP_FIXED.size:
        return None
    _, _, flags, mtime, xfl, os_byte = _GZIP_FIXED.unpack_from(head)
    pos = _GZIP_FIXED.size
    if flags & _FEXTRA:
        if len(head) < pos + 2:
            return None
        pos += 2 + int.from_bytes(head[pos : pos + 2], "little")
    name = None
    if flags & _FNAME:
        end = head.find(b"\0", pos)
        if end < 0:
            return None
        name = head[pos:end].decode("latin-1")
    return GzipHeader(flags, mtime, xfl, os_byte, name)


@dataclass(frozen=True)
class Container:
    """How a ramdisk's bytes hold its cpio: ``gzip`` (with its header), ``none``, or ``opaque``
    (neither gzip nor cpio: compared as bytes only, as the test vectors' random ramdisks are)."""

    compression: str
    gzip_header: GzipHeader | None = None


@dataclass
class RamdiskStreams:
    """While a ramdisk is being read: its raw section stream, the cpio stream and the container."""

    raw: SectionStream
    cpio: HashingReader
    container: Container
    trailing: int = 0  # bytes after the TRAILER!!! record
    trailing_nonzero: bool = False

    @property
    def cpio_sha256(self) -> str:
        """The cpio archive's sha256: the section's own when it is not compressed (the same bytes,
        hashed once)."""
        return sha256_of((self.raw if self.container.compression == "none" else self.cpio).hasher)


@contextlib.contextmanager
def open_section(
    image: EifImage, section: Section, where: str, *, hashed: bool = True, copy: IO[bytes] | None = None
) -> Iterator[SectionStream]:
    try:
        fh = image.path.open("rb")
    except OSError as exc:
        raise _unreadable(image, exc) from None
    with fh:
        fh.seek(section.data_offset)
        yield SectionStream(fh, section, f"{image.path}, {where}", hashed=hashed, copy=copy)


def _unreadable(image: EifImage, exc: OSError) -> EifFormatError:
    msg = f"cannot read EIF: {exc.strerror or exc}"
    return EifFormatError(msg, path=image.path)


@contextlib.contextmanager
def ramdisk_members(
    raw: SectionStream,
    *,
    data: Callable[[CpioMember], bool],
    copy_to: Callable[[CpioMember], IO[bytes] | None] | None = None,
    hashed: bool = True,
) -> Iterator[tuple[RamdiskStreams, Iterator[CpioMember]]]:
    """The streams of the ramdisk ``raw`` reads and an iterator over its members (the cpio stream
    and each content hashed unless not ``hashed``, the contents ``data`` selects loaded, each
    content copied to ``copy_to``'s file). Leaving the
    block reads the rest of the section (padding after the trailer is counted). A corrupt gzip
    stream or cpio archive is an ArchiveError naming the EIF and the ramdisk (``raw.where``)."""
    located = raw.where
    head = raw.peek(512)
    container = _container(head)
    try:
        with _decompressed(raw, container) as inner:
            # an uncompressed cpio is the section itself: hashed once, as the section (cpio_sha256)
            cpio_hashed = hashed and container.compression != "none"
            streams = RamdiskStreams(raw, HashingReader(inner, hashed=cpio_hashed), container)
            members: Iterator[CpioMember] = iter(())
            if container.compression != "opaque":
                members = read_cpio(streams.cpio, path=located, data=data, hashed=hashed, copy_to=copy_to)
            yield streams, members
            for _ in members:
                pass
            if container.compression != "opaque":
                _count_trailing(streams)
        raw.drain()
    except (gzip.BadGzipFile, EOFError, zlib.error) as exc:
        msg = f"corrupt gzip stream: {first_line(exc)}"
        raise ArchiveError(msg, path=located) from None


def _container(head: bytes) -> Container:
    if head.startswith(GZIP_MAGIC):
        return Container("gzip", parse_gzip_header(head))
    if head.startswith(CPIO_MAGIC):
        return Container("none")
    return Container("opaque")


@contextlib.contextmanager
def _decompressed(raw: SectionStream, container: Container) -> Iterator[IO[bytes] | SectionStream]:
    if container.compression != "gzip":
        yield raw
        return
    with gzip.GzipFile(fileobj=raw, mode="rb") as unzipped:  # type: ignore[call-overload]
        yield unzipped


def _count_trailing(streams: RamdiskStreams) -> None:
    while chunk := streams.cpio.read(CHUNK):
        streams.trailing += len(chunk)
        streams.trailing_nonzero = streams.trailing_nonzero or chunk.count(0) != len(chunk)
