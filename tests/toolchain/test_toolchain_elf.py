"""ELF checks on hand-built headers (every rejection path) and on a real dynamic host binary."""

from __future__ import annotations

import io
import shutil
import struct
from pathlib import Path

import pytest

from eifbuild.errors import ToolError
from eifbuild.toolchain import _elf as elf


def make_elf(
    *,
    machine: int = 62,
    elf_type: int = elf.ET_EXEC,
    entry: int = 0x401000,
    interp: bytes | None = None,
    ident: bytes = b"\x7fELF\x02\x01\x01",
    phentsize: int = 56,
) -> bytes:
    """A 64-bit LE ELF header with a PT_LOAD and, when ``interp`` is given, a PT_INTERP."""
    phdrs = [(1, 5, 0, 0x400000, 0x400000, 0x1000, 0x1000, 0x1000)]
    data_off = 64 + 56 * 2
    if interp is not None:
        phdrs.insert(0, (elf.PT_INTERP, 4, data_off, 0, 0, len(interp), len(interp), 1))
    header = struct.pack(
        "<16sHHIQQQIHHHHHH",
        ident.ljust(16, b"\0"),
        elf_type,
        machine,
        1,
        entry,
        64,
        0,
        0,
        64,
        phentsize,
        len(phdrs),
        64,
        0,
        0,
    )
    body = b"".join(struct.pack("<IIQQQQQQ", *p) for p in phdrs)
    return header + body.ljust(56 * 2, b"\0") + (interp or b"")


def parse(data: bytes) -> elf.ElfInfo:
    return elf.parse_elf(io.BytesIO(data), "prog")


def test_static_executable_passes() -> None:
    info = parse(make_elf(machine=183))
    assert info == elf.ElfInfo(elf.ET_EXEC, 183, 0x401000, None)
    assert info.machine_name == "aarch64"
    elf.check_static_executable(info, "aarch64", "prog")


def test_static_pie_passes() -> None:
    elf.check_static_executable(parse(make_elf(elf_type=elf.ET_DYN, entry=0x1000)), "x86_64", "prog")


def test_wrong_machine() -> None:
    with pytest.raises(ToolError) as exc:
        elf.check_static_executable(parse(make_elf(machine=62)), "aarch64", "init (aarch64)")
    assert (
        str(exc.value) == "init (aarch64): built for x86_64 (e_machine 62), expected aarch64 (e_machine 183)"
    )


def test_unknown_machine_is_named_by_number() -> None:
    with pytest.raises(ToolError, match=r"^prog: built for machine 999 \(e_machine 999\), expected x86_64"):
        elf.check_static_executable(parse(make_elf(machine=999)), "x86_64", "prog")


def test_interpreter_means_dynamic() -> None:
    info = parse(make_elf(interp=b"/lib/ld-musl-x86_64.so.1\0"))
    assert info.interpreter == "/lib/ld-musl-x86_64.so.1"
    with pytest.raises(ToolError) as exc:
        elf.check_static_executable(info, "x86_64", "prog")
    assert (
        str(exc.value)
        == "prog: dynamically linked (interpreter /lib/ld-musl-x86_64.so.1), expected a static executable"
    )


@pytest.mark.parametrize(
    ("elf_type", "entry", "kind"),
    [
        (1, 0, "relocatable object"),
        (elf.ET_DYN, 0, "shared object"),
        (4, 0, "core dump"),
        (9, 1, "ELF type 9"),
    ],
)
def test_not_an_executable(elf_type: int, entry: int, kind: str) -> None:
    with pytest.raises(ToolError) as exc:
        elf.check_static_executable(parse(make_elf(elf_type=elf_type, entry=entry)), "x86_64", "prog")
    assert str(exc.value) == f"prog: is a {kind}, expected an executable"


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"#!/bin/sh\n", "prog: not an ELF file (starts with b'#!/b')"),
        (b"", "prog: not an ELF file (starts with b'')"),
        (b"\x7fELF\x02\x01", "prog: truncated ELF file (6 bytes, header needs 64)"),
        (
            make_elf(ident=b"\x7fELF\x01\x01\x01"),
            "prog: ELF class 1, byte order 1: expected 64-bit little-endian (2, 1)",
        ),
        (
            make_elf(ident=b"\x7fELF\x02\x02\x01"),
            "prog: ELF class 2, byte order 2: expected 64-bit little-endian (2, 1)",
        ),
        (make_elf()[:100], "prog: truncated ELF file (program header 0 at offset 64 runs past the end)"),
        (make_elf(phentsize=32), "prog: program header entry size 32 is smaller than 56"),
        (
            make_elf(interp=b"/lib/ld.so\0")[:-4],
            "prog: truncated ELF file (PT_INTERP at offset 176 runs past the end)",
        ),
    ],
)
def test_malformed(data: bytes, message: str) -> None:
    with pytest.raises(ToolError) as exc:
        parse(data)
    assert str(exc.value) == message


def test_real_dynamic_host_binary(tmp_path: Path) -> None:
    """The host's own ``true`` is a dynamically linked executable: the check must say so."""
    true = shutil.which("true")
    assert true is not None
    copy = tmp_path / "true"
    shutil.copyfile(true, copy)
    info = elf.read_elf(copy)
    assert info.interpreter is not None
    assert info.interpreter.startswith("/lib")
    with pytest.raises(ToolError, match=r"^true: dynamically linked \(interpreter /lib"):
        elf.check_static_executable(info, "x86_64" if info.machine == 62 else "aarch64", "true")
