"""The EIF reader: the header and section table of an existing file, and its small sections decoded.

The reader follows the section table like the hypervisor and QEMU do, and refuses (with an
:class:`EifFormatError`) anything it cannot interpret unambiguously: a short file, wrong magic, an
unknown version or section type, more than 32 sections, sections outside the file, overlapping or
out of order, a table that disagrees with a section header, a missing or repeated kernel/cmdline,
no ramdisk, malformed metadata JSON or signature CBOR. Softer defects that the tools disagree on
(gaps, trailing bytes, a bad CRC, stray flag bits) are left to :func:`eifbuild.eif.checker.verify`.
The format itself (constants, header, section types) is :mod:`eifbuild.eif.format`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Final

from ..errors import EifFormatError
from ..util import fsutil
from ._cose import SignatureInfo, decode_signature_section
from .format import (
    EIF_VERSION,
    HEADER_SIZE,
    MAX_SECTIONS,
    SECTION_HEADER_SIZE,
    SUPPORTED_VERSIONS,
    EifHeader,
    SectionType,
    pcr_role,
    read_exactly,
    unpack_section_header,
)
from .metadata import EifMetadata
from .pcr import DEFAULT_ALGO, HashAlgo, Measurements, PcrHashers, parallel_hashing
from .sign import certificate_pcr

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Iterator

    from ..arch import Arch

METADATA_MAX_SIZE: Final = 1 << 24  # ours: a sanity bound before reading the JSON into memory
CMDLINE_MAX_SIZE: Final = 1 << 20


@dataclass(frozen=True)
class Section:
    index: int
    type: SectionType
    offset: int  # of the 12-byte section header
    size: int  # of the data
    flags: int

    @property
    def data_offset(self) -> int:
        return self.offset + SECTION_HEADER_SIZE

    @property
    def end(self) -> int:
        return self.data_offset + self.size


@dataclass(frozen=True)
class EifImage:
    """A parsed EIF: header, sections in table (= file) order, and the small sections decoded."""

    path: Path
    file_size: int
    header: EifHeader
    sections: tuple[Section, ...]
    cmdline_bytes: bytes
    metadata: EifMetadata | None
    metadata_bytes: bytes | None
    signature: SignatureInfo | None = field(repr=False)

    @property
    def arch(self) -> Arch:
        return self.header.arch

    @property
    def kernel(self) -> Section:
        return self._only(SectionType.KERNEL)

    @property
    def cmdline(self) -> str:
        """The kernel command line (the section holds it without a trailing NUL)."""
        return self.cmdline_bytes.decode("utf-8", errors="replace")

    @property
    def ramdisks(self) -> tuple[Section, ...]:
        return self.of_type(SectionType.RAMDISK)

    @property
    def is_signed(self) -> bool:
        return self.signature is not None

    def of_type(self, kind: SectionType) -> tuple[Section, ...]:
        return tuple(s for s in self.sections if s.type == kind)

    def _only(self, kind: SectionType) -> Section:
        return self.of_type(kind)[0]  # read_eif guarantees exactly one kernel and cmdline


@dataclass(frozen=True)
class SectionGaps:
    """Bytes outside the header and the sections (eif_build writes none; nitro-cli's sequential
    reader cannot read them)."""

    before: tuple[tuple[Section, int], ...]  # each section that starts after a gap, and the gap's size
    trailing: int  # bytes after the last section

    @property
    def total(self) -> int:
        return sum(size for _, size in self.before) + self.trailing


def section_gaps(image: EifImage) -> SectionGaps:
    """Where ``image`` has bytes between its header and sections, or after them."""
    before = []
    end = HEADER_SIZE
    for section in image.sections:
        if section.offset != end:
            before.append((section, section.offset - end))
        end = section.end
    return SectionGaps(tuple(before), image.file_size - end)


def read_eif(path: Path) -> EifImage:
    """Parse and structurally validate the EIF at ``path`` (reads only headers and small sections)."""
    path = Path(path)
    try:
        with path.open("rb") as fh:
            return _read(path, fh)
    except OSError as exc:
        raise _unreadable(path, exc) from None
    except EifFormatError as exc:
        if exc.path is not None:
            raise
        located = EifFormatError(exc.message, path=path)
        located.offset, located.section = exc.offset, exc.section
        raise located from None


def _read(path: Path, fh: IO[bytes]) -> EifImage:
    size = fh.seek(0, 2)
    fh.seek(0)
    header = EifHeader.unpack(fh.read(HEADER_SIZE))
    if header.version not in SUPPORTED_VERSIONS:
        msg = f"unsupported EIF version {header.version}: expected 2 to {EIF_VERSION}"
        raise EifFormatError(msg, offset=4)
    if header.num_sections > MAX_SECTIONS:
        msg = f"header claims {header.num_sections} sections: an EIF holds at most {MAX_SECTIONS}"
        raise EifFormatError(msg, offset=26)
    sections = tuple(_read_sections(fh, header, size))
    _check_cardinality(sections)
    small = {s.type: _read_small(fh, s) for s in sections if s.type in _SMALL_LIMITS}
    metadata_bytes = small.get(SectionType.METADATA)
    signature_bytes = small.get(SectionType.SIGNATURE)
    return EifImage(
        path=path,
        file_size=size,
        header=header,
        sections=sections,
        cmdline_bytes=small[SectionType.CMDLINE],
        metadata=None if metadata_bytes is None else EifMetadata.from_bytes(metadata_bytes),
        metadata_bytes=metadata_bytes,
        signature=None if signature_bytes is None else decode_signature_section(signature_bytes),
    )


def _read_sections(fh: IO[bytes], header: EifHeader, file_size: int) -> Iterator[Section]:
    previous_end = HEADER_SIZE
    for index in range(header.num_sections):
        offset, size = header.offsets[index], header.sizes[index]
        if offset < previous_end:
            msg = (
                f"starts at {offset}, before the end of the previous section or header at {previous_end}: "
                "sections must be in file order and must not overlap"
            )
            raise EifFormatError(msg, section=index, offset=offset)
        if offset + SECTION_HEADER_SIZE > file_size:
            msg = f"section header at {offset} is past the end of the file ({file_size} bytes)"
            raise EifFormatError(msg, section=index)
        fh.seek(offset)
        raw_type, flags, hdr_size = unpack_section_header(fh.read(SECTION_HEADER_SIZE))
        kind = _section_type(raw_type, index, offset)
        if hdr_size != size:
            msg = f"section header says {hdr_size} bytes, the header table says {size}"
            raise EifFormatError(msg, section=index, offset=offset)
        section = Section(index, kind, offset, size, flags)
        if section.end > file_size:
            msg = f"data ends at {section.end}, past the end of the file ({file_size} bytes)"
            raise EifFormatError(msg, section=index, offset=offset)
        previous_end = section.end
        yield section


def _section_type(raw: int, index: int, offset: int) -> SectionType:
    if SectionType.KERNEL <= raw <= max(SectionType):
        return SectionType(raw)
    msg = f"unknown section type {raw}: expected 1 to {max(SectionType)}"
    raise EifFormatError(msg, section=index, offset=offset)


def _check_cardinality(sections: tuple[Section, ...]) -> None:
    counts = {kind: sum(1 for s in sections if s.type == kind) for kind in SectionType}
    for kind, allowed in _CARDINALITY.items():
        if counts[kind] not in allowed:
            msg = f"{counts[kind]} {kind.name.lower()} sections: expected {_CARDINALITY_TEXT[kind]}"
            raise EifFormatError(msg)


_CARDINALITY: Final = {
    SectionType.KERNEL: range(1, 2),
    SectionType.CMDLINE: range(1, 2),
    SectionType.RAMDISK: range(1, MAX_SECTIONS + 1),
    SectionType.SIGNATURE: range(2),
    SectionType.METADATA: range(2),
}
_CARDINALITY_TEXT: Final = {
    SectionType.KERNEL: "exactly one",
    SectionType.CMDLINE: "exactly one",
    SectionType.RAMDISK: "at least one",
    SectionType.SIGNATURE: "at most one",
    SectionType.METADATA: "at most one",
}
_SMALL_LIMITS: Final = {
    SectionType.CMDLINE: CMDLINE_MAX_SIZE,
    SectionType.METADATA: METADATA_MAX_SIZE,
    SectionType.SIGNATURE: METADATA_MAX_SIZE,  # decode_signature_section enforces the real limit
}


def _read_small(fh: IO[bytes], section: Section) -> bytes:
    limit = _SMALL_LIMITS[section.type]
    if section.size > limit:
        msg = f"{section.type.name.lower()} section is {section.size} bytes, more than {limit}"
        raise EifFormatError(msg, section=section.index, offset=section.offset)
    fh.seek(section.data_offset)
    return fh.read(section.size)


# ---------------------------------------------------------------------------------------------
# Streaming sections out, and measuring an existing file


def iter_section(image: EifImage, section: Section, chunk_size: int = fsutil.CHUNK) -> Iterator[bytes]:
    """The data of ``section`` in chunks (constant memory)."""
    with image.path.open("rb") as fh:
        fh.seek(section.data_offset)
        yield from _read_exactly(fh, section.size, chunk_size, image.path)


def read_section(image: EifImage, section: Section) -> bytes:
    """The whole data of a (small) section."""
    return b"".join(iter_section(image, section))


def _read_exactly(fh: IO[bytes], size: int, chunk_size: int, path: Path) -> Iterator[bytes]:
    return read_exactly(fh, size, chunk_size, _shrank(path))


def _shrank(path: Path) -> Callable[[int], Exception]:
    def error(left: int) -> Exception:
        msg = f"file shrank while reading: {left} bytes missing"
        return EifFormatError(msg, path=path)

    return error


@dataclass(frozen=True)
class Scan:
    """One pass over an EIF: its PCRs (in each algorithm asked for) and its CRC."""

    measurements: dict[HashAlgo, Measurements]
    crc: int  # computed like nitro-cli: header[0:544] then every byte from 548 to the end
    section_sha256: dict[int, str] = dataclasses.field(default_factory=dict)  # by index, when asked


class SectionData:
    """One section's data during a :func:`scan`, for its visitor: read from the file in CHUNK blocks,
    each block CRC'd and measured once as it arrives, handed out in pieces of any size."""

    def __init__(
        self, fh: IO[bytes], section: Section, feeds: list[Callable[[bytes], None]], path: Path
    ) -> None:
        self._blocks = _read_exactly(fh, section.size, fsutil.CHUNK, path)
        self._feeds = feeds
        self._path = path
        self._block = b""
        self._at = 0
        self.left = section.size  # not yet handed out

    def read(self, size: int = -1, /) -> bytes:
        """Up to ``size`` bytes (all that is left when negative): fewer only at the section's end."""
        want = self.left if size < 0 else min(size, self.left)
        pieces = []
        while want:
            if self._at == len(self._block):
                self._next()
            piece = self._block[self._at : self._at + want]
            self._at += len(piece)
            want -= len(piece)
            pieces.append(piece)
        data = pieces[0] if len(pieces) == 1 else b"".join(pieces)
        self.left -= len(data)
        return data

    def drain(self) -> None:
        """Read (and measure) what the visitor left unread."""
        for block in self._blocks:
            self._feed(block)
        self._block, self._at, self.left = b"", 0, 0

    def _next(self) -> None:
        try:
            self._block, self._at = next(self._blocks), 0  # the section has bytes left: a block follows
        except OSError as exc:  # as the scan reports it, though the visitor's read met it
            raise _unreadable(self._path, exc) from None
        self._feed(self._block)

    def _feed(self, block: bytes) -> None:
        for feed in self._feeds:
            feed(block)


def scan(
    image: EifImage,
    algos: Iterable[HashAlgo] = (DEFAULT_ALGO,),
    *,
    visit: Callable[[Section, SectionData], None] | None = None,
    section_sha256: bool = False,
) -> Scan:
    """Hash the kernel, cmdline and ramdisks into PCRs and CRC the file, in one sequential read.

    ``visit`` (when given) reads each section's data as it passes, in file order, from the same
    read: what it leaves unread is read after it returns. ``section_sha256``: also each section's
    sha256, hashed beside PCR2 and the CRC (on the worker thread when there is a second CPU), so a
    visitor that needs the section's digest leaves that work to the other CPU.
    """
    digests: dict[int, hashlib._Hash] = {}
    crc = zlib.crc32(image.header.crc_prefix())

    def update_crc(chunk: bytes) -> None:
        nonlocal crc
        crc = zlib.crc32(chunk, crc)

    # the CRC runs beside the first algorithm's PCR2 (on its worker thread when there is a second CPU)
    threaded = parallel_hashing()
    hashers = {
        algo: PcrHashers(algo, threaded=threaded, side=update_crc if i == 0 else None)
        for i, algo in enumerate(dict.fromkeys(algos))
    }
    crc_feed = next(iter(hashers.values())).feeder(None)
    first_ramdisk = next(s.index for s in image.sections if s.type == SectionType.RAMDISK)
    try:
        with image.path.open("rb") as fh:
            fh.seek(HEADER_SIZE)
            position = HEADER_SIZE
            for section in image.sections:
                # gap bytes and the section header: CRC'd, never measured
                for chunk in _read_exactly(fh, section.data_offset - position, fsutil.CHUNK, image.path):
                    crc_feed(chunk)
                role = pcr_role(section.type, first_ramdisk=section.index == first_ramdisk)
                extra = digests.setdefault(section.index, hashlib.sha256()) if section_sha256 else None
                feeds = [h.feeder(role, extra if i == 0 else None) for i, h in enumerate(hashers.values())]
                data = SectionData(fh, section, feeds, image.path)
                if visit is not None:
                    visit(section, data)
                data.drain()
                position = section.end
            while chunk := fh.read(fsutil.CHUNK):
                crc_feed(chunk)
        measured = {algo: h.finish() for algo, h in hashers.items()}  # the CRC is complete after these
    except OSError as exc:
        raise _unreadable(image.path, exc) from None
    finally:
        for h in hashers.values():
            h.close()
    cert = image.signature.certificate if image.signature else None
    return Scan(
        {
            algo: dataclasses.replace(m, pcr8=None if cert is None else certificate_pcr(cert, algo))
            for algo, m in measured.items()
        },
        crc,
        {index: digest.hexdigest() for index, digest in digests.items()},
    )


def _unreadable(path: Path, exc: OSError) -> EifFormatError:
    msg = f"cannot read EIF: {exc.strerror or exc}"
    return EifFormatError(msg, path=path)


def as_image(source: EifImage | Path) -> EifImage:
    """``source`` itself, or the EIF read from that path."""
    return source if isinstance(source, EifImage) else read_eif(Path(source))


def measure(image: EifImage | Path, algo: HashAlgo = DEFAULT_ALGO) -> Measurements:
    """PCR0/1/2 (and PCR8 when signed) of an existing EIF."""
    return scan(as_image(image), (algo,)).measurements[algo]
