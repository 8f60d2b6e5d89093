"""The EIF v4 format itself: constants, the 548-byte header, section types and section headers.

Shared by the reader, the writer and the checker; it reads and writes no files of its own
(spec §3 for the layout, §5 for what each section is measured into).
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING, Final

from ..arch import Arch, info
from ..errors import EifFormatError

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Iterator

    from .pcr import PcrRole

MAGIC: Final = b".eif"
EIF_VERSION: Final = 4  # what eif_build and nitro-cli write
SUPPORTED_VERSIONS: Final = range(2, 5)
HEADER_SIZE: Final = 548
SECTION_HEADER_SIZE: Final = 12
MAX_SECTIONS: Final = 32
CRC_OFFSET: Final = 544
DEFAULT_MEM: Final = 1 << 30  # eif_build hard-codes these; nothing reads them
DEFAULT_CPUS: Final = 2
FLAG_AARCH64: Final = 0x0001

_FIXED: Final = struct.Struct(">4sHHQQHH")
_TABLE: Final = struct.Struct(">32Q")
_TAIL: Final = struct.Struct(">II")
_SECTION: Final = struct.Struct(">HHQ")


class SectionType(enum.IntEnum):
    INVALID = 0
    KERNEL = 1
    CMDLINE = 2
    RAMDISK = 3
    SIGNATURE = 4
    METADATA = 5


@dataclass(frozen=True)
class EifHeader:
    """The 548-byte main header. ``offsets``/``sizes`` hold all 32 table entries."""

    version: int
    flags: int
    default_mem: int
    default_cpus: int
    reserved: int
    num_sections: int
    offsets: tuple[int, ...]
    sizes: tuple[int, ...]
    unused: int
    crc: int

    @classmethod
    def build(cls, *, flags: int, offsets: Iterable[int], sizes: Iterable[int], crc: int = 0) -> EifHeader:
        """A header as eif_build writes it for sections at ``offsets`` with data ``sizes``."""
        offs, szs = tuple(offsets), tuple(sizes)
        if len(offs) > MAX_SECTIONS:
            msg = f"{len(offs)} sections: an EIF holds at most {MAX_SECTIONS}"
            raise EifFormatError(msg)
        pad = (0,) * (MAX_SECTIONS - len(offs))
        return cls(EIF_VERSION, flags, DEFAULT_MEM, DEFAULT_CPUS, 0, len(offs), offs + pad, szs + pad, 0, crc)

    def crc_prefix(self) -> bytes:
        """Header bytes 0..544: what the CRC covers before the sections."""
        return (
            _FIXED.pack(
                MAGIC,
                self.version,
                self.flags,
                self.default_mem,
                self.default_cpus,
                self.reserved,
                self.num_sections,
            )
            + _TABLE.pack(*self.offsets)
            + _TABLE.pack(*self.sizes)
            + self.unused.to_bytes(4, "big")
        )

    def pack(self) -> bytes:
        return self.crc_prefix() + self.crc.to_bytes(4, "big")

    @classmethod
    def unpack(cls, data: bytes) -> EifHeader:
        if len(data) < HEADER_SIZE:
            msg = f"truncated: {len(data)} bytes, an EIF header needs {HEADER_SIZE}"
            raise EifFormatError(msg)
        magic, version, flags, mem, cpus, reserved, count = _FIXED.unpack_from(data, 0)
        if magic != MAGIC:
            msg = f"not an EIF file: magic is {magic.hex()}, expected {MAGIC.hex()} ('.eif')"
            raise EifFormatError(msg)
        unused, crc = _TAIL.unpack_from(data, CRC_OFFSET - 4)
        return cls(
            version,
            flags,
            mem,
            cpus,
            reserved,
            count,
            _TABLE.unpack_from(data, 28),
            _TABLE.unpack_from(data, 28 + _TABLE.size),
            unused,
            crc,
        )

    @property
    def arch(self) -> Arch:
        return "aarch64" if self.flags & FLAG_AARCH64 else "x86_64"


def section_header(kind: SectionType, size: int) -> bytes:
    """The 12 bytes before a section's data: type, flags (always 0 when we write), data size."""
    return _SECTION.pack(kind, 0, size)


def unpack_section_header(data: bytes) -> tuple[int, int, int]:
    """(raw type, flags, data size) of a 12-byte section header."""
    raw_type, flags, size = _SECTION.unpack(data)
    return raw_type, flags, size


def arch_flags(arch: Arch) -> int:
    return info(arch).eif_flags


def pcr_role(kind: SectionType, *, first_ramdisk: bool) -> PcrRole | None:
    """What a section's bytes are measured into (spec §5): the kernel, the cmdline and the first
    ramdisk into PCR0 and PCR1, later ramdisks into PCR0 and PCR2, metadata and signature into none.
    """
    if kind in (SectionType.KERNEL, SectionType.CMDLINE) or first_ramdisk:
        return "boot"
    return "app" if kind == SectionType.RAMDISK else None


def read_exactly(
    fh: IO[bytes], size: int, chunk_size: int, shortfall: Callable[[int], Exception]
) -> Iterator[bytes]:
    """``size`` bytes of ``fh`` in chunks; ``shortfall(missing)`` is raised if the file ends first
    (it shrank since its size was taken: the reader and the writer report that differently)."""
    left = size
    while left:
        chunk = fh.read(min(chunk_size, left))
        if not chunk:
            raise shortfall(left)
        left -= len(chunk)
        yield chunk
