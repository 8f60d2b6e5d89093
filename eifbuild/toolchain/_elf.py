"""Just enough ELF parsing to tell whether a file is a static executable for one architecture.

Reads the 64-byte header and the program header table (never the whole file). Only 64-bit
little-endian ELF is accepted, which covers both EIF architectures.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING, Final

from ..arch import info
from ..errors import ToolError

if TYPE_CHECKING:
    import os

    from ..arch import Arch

ELF_MAGIC: Final = b"\x7fELF"
ELFCLASS64: Final = 2
ELFDATA2LSB: Final = 1
ET_EXEC: Final = 2
ET_DYN: Final = 3
PT_INTERP: Final = 3

_HEADER: Final = struct.Struct("<16sHHIQQQIHHHHHH")  # Elf64_Ehdr, 64 bytes
_PHDR: Final = struct.Struct("<IIQQQQQQ")  # Elf64_Phdr, 56 bytes
_MAX_INTERP: Final = 4096  # PATH_MAX: a longer PT_INTERP is corrupt, not a path

_TYPE_NAMES: Final = {
    0: "no file type",
    1: "relocatable object",
    2: "executable",
    3: "shared object",
    4: "core dump",
}
_MACHINE_NAMES: Final = {
    3: "i386",
    8: "mips",
    20: "ppc",
    21: "ppc64",
    40: "arm",
    62: "x86_64",
    183: "aarch64",
    243: "riscv",
}


@dataclass(frozen=True)
class ElfInfo:
    elf_type: int  # e_type: ET_EXEC, ET_DYN (PIE or shared object), ...
    machine: int  # e_machine
    entry: int  # e_entry; 0 in a shared library, which is ET_DYN like a static PIE
    interpreter: str | None  # PT_INTERP contents; None for a static binary

    @property
    def machine_name(self) -> str:
        return _MACHINE_NAMES.get(self.machine, f"machine {self.machine}")


def _read_at(fh: IO[bytes], offset: int, size: int, what: str, part: str) -> bytes:
    fh.seek(offset)
    data = fh.read(size)
    if len(data) != size:
        msg = f"{what}: truncated ELF file ({part} at offset {offset} runs past the end)"
        raise ToolError(msg)
    return data


def parse_elf(fh: IO[bytes], what: str) -> ElfInfo:
    """Header facts of the ELF file in ``fh`` (seekable); ``what`` names it in error messages."""
    head = fh.read(_HEADER.size)
    if head[:4] != ELF_MAGIC:
        msg = f"{what}: not an ELF file (starts with {head[:4]!r})"
        raise ToolError(msg)
    if len(head) < _HEADER.size:
        msg = f"{what}: truncated ELF file ({len(head)} bytes, header needs {_HEADER.size})"
        raise ToolError(msg)
    if head[4] != ELFCLASS64 or head[5] != ELFDATA2LSB:
        msg = f"{what}: ELF class {head[4]}, byte order {head[5]}: expected 64-bit little-endian (2, 1)"
        raise ToolError(msg)
    _, e_type, e_machine, _, e_entry, e_phoff, _, _, _, e_phentsize, e_phnum, _, _, _ = _HEADER.unpack(head)
    interpreter = None
    if e_phnum and e_phentsize < _PHDR.size:
        msg = f"{what}: program header entry size {e_phentsize} is smaller than {_PHDR.size}"
        raise ToolError(msg)
    for i in range(e_phnum):
        raw = _read_at(fh, e_phoff + i * e_phentsize, _PHDR.size, what, f"program header {i}")
        p_type, _, p_offset, _, _, p_filesz, _, _ = _PHDR.unpack(raw)
        if p_type == PT_INTERP:
            size = min(p_filesz, _MAX_INTERP)
            interp = _read_at(fh, p_offset, size, what, "PT_INTERP")
            interpreter = interp.split(b"\0", 1)[0].decode("utf-8", "replace")
    return ElfInfo(e_type, e_machine, e_entry, interpreter)


def read_elf(path: str | os.PathLike[str], what: str | None = None) -> ElfInfo:
    with open(path, "rb") as fh:
        return parse_elf(fh, what or str(path))


def check_static_executable(info_: ElfInfo, arch: Arch, what: str) -> None:
    """Raise :class:`ToolError` unless ``info_`` is a static executable for ``arch``."""
    want = info(arch).elf_machine
    if info_.machine != want:
        got = f"{info_.machine_name} (e_machine {info_.machine})"
        msg = f"{what}: built for {got}, expected {arch} (e_machine {want})"
        raise ToolError(msg)
    executable = info_.elf_type == ET_EXEC or (info_.elf_type == ET_DYN and info_.entry != 0)
    if not executable:
        kind = _TYPE_NAMES.get(info_.elf_type, f"ELF type {info_.elf_type}")
        msg = f"{what}: is a {kind}, expected an executable"
        raise ToolError(msg)
    if info_.interpreter is not None:
        msg = f"{what}: dynamically linked (interpreter {info_.interpreter}), expected a static executable"
        raise ToolError(msg)
