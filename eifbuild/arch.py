"""The two architectures an EIF can target, and their names in the tools we talk to."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal

from .errors import UsageError

Arch = Literal["x86_64", "aarch64"]
ARCHES: Final[tuple[Arch, ...]] = ("x86_64", "aarch64")


@dataclass(frozen=True)
class ArchInfo:
    name: Arch
    eif_flags: int  # EIF header flags bit 0
    elf_machine: int  # e_machine in the ELF header
    zig_target: str
    oci_arch: str  # OCI/Docker platform architecture (os is always linux)
    kernel_image: str  # file name nitro-cli's blobs use for the kernel
    linux_arch: str  # ARCH= for the kernel build
    qemu_system: str


ARCH_INFO: Final[dict[Arch, ArchInfo]] = {
    "x86_64": ArchInfo(
        "x86_64", 0, 62, "x86_64-linux-musl", "amd64", "bzImage", "x86_64", "qemu-system-x86_64"
    ),
    "aarch64": ArchInfo(
        "aarch64", 1, 183, "aarch64-linux-musl", "arm64", "Image", "arm64", "qemu-system-aarch64"
    ),
}

_ALIASES: Final[dict[str, Arch]] = {
    "x86_64": "x86_64",
    "amd64": "x86_64",
    "aarch64": "aarch64",
    "arm64": "aarch64",
}


def parse_arch(value: str, *, where: str = "arch") -> Arch:
    """Accept x86_64/amd64 and aarch64/arm64; anything else is a :class:`UsageError`."""
    try:
        return _ALIASES[value]
    except KeyError:
        msg = f"unknown architecture {value!r}: expected one of x86_64, aarch64"
        raise UsageError(msg, key=where) from None


def info(arch: Arch) -> ArchInfo:
    return ARCH_INFO[arch]
