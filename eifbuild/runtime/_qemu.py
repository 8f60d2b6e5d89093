"""Which QEMU, which machine, and its command line, for ``eifbuild boot``.

Two ways to boot: the unpacked boot (kernel and concatenated ramdisks given to ``-M microvm``,
``pc``, ``q35`` or aarch64's ``virt``), and QEMU's ``nitro-enclave`` machine (QEMU ≥ 9.2 built
with libcbor and gnutls), which reads the EIF file itself, checks its CRC, measures it into its
emulated NSM device's PCRs and needs a vhost-user-vsock back-end on a unix socket.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING, Final

from ..arch import info
from ..errors import ToolError
from .qemubuild import BUILD_COMMAND

if TYPE_CHECKING:
    from ..arch import Arch

NITRO_ENCLAVE: Final = "nitro-enclave"
QEMU_ENV: Final[dict[Arch, str]] = {"x86_64": "EIFBUILD_QEMU_X86_64", "aarch64": "EIFBUILD_QEMU_AARCH64"}
FIRMWARE_DIR: Final = Path("/usr/share/qemu")  # Debian's qemu-system-data and seabios
_QEMU_PACKAGE: Final[dict[Arch, str]] = {"x86_64": "qemu-system-x86", "aarch64": "qemu-system-arm"}  # Debian
_HELP_TIMEOUT: Final = 30.0


def find_qemu(arch: Arch, override: str | None = None) -> str:
    """The QEMU for ``arch``: ``override`` (--qemu), else $EIFBUILD_QEMU_<ARCH>, else on PATH."""
    name = override or os.environ.get(QEMU_ENV[arch]) or info(arch).qemu_system
    found = shutil.which(name)
    if found is None:
        package = _QEMU_PACKAGE[arch]
        msg = (
            f"{name} not found: install QEMU to boot {arch} images "
            f"(Debian/Ubuntu: apt-get install {package}; Fedora: dnf install qemu-system-{arch})"
        )
        raise ToolError(msg, cmd=[name])
    return found


@functools.cache
def machines(qemu: str) -> frozenset[str]:
    """The machine types ``qemu -M help`` lists (empty if it cannot say)."""
    try:
        proc = subprocess.run(
            [qemu, "-M", "help"], capture_output=True, text=True, timeout=_HELP_TIMEOUT, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return frozenset()
    lines = proc.stdout.splitlines()[1:]  # "Supported machines are:"
    return frozenset(line.split()[0] for line in lines if line.strip())


def has_nitro_enclave(qemu: str) -> bool:
    return NITRO_ENCLAVE in machines(qemu)


def no_nitro_enclave(qemu: str) -> ToolError:
    msg = (
        f"{qemu} has no {NITRO_ENCLAVE} machine (QEMU >= 9.2 built with libcbor; Debian's builds lack it): "
        f"build one with '{BUILD_COMMAND}' and pass --qemu PATH or set {QEMU_ENV['x86_64']}"
    )
    return ToolError(msg, cmd=[qemu, "-M", "help"])


def _common(accel: str, memory_mib: int) -> list[str]:
    return ["-accel", accel, "-m", str(memory_mib), "-smp", "1", "-nographic", "-no-reboot", "-nodefaults"]


def unpacked_command(
    qemu: str,
    arch: Arch,
    *,
    kernel: Path,
    initrd: Path,
    cmdline: str,
    machine: str,
    memory_mib: int,
    accel: str,
) -> list[str]:
    cmd = [qemu, "-M", machine]
    if arch == "aarch64":
        cmd += ["-cpu", "cortex-a57"]
    cmd += [*_common(accel, memory_mib), "-serial", "stdio"]
    cmd += ["-kernel", str(kernel), "-initrd", str(initrd), "-append", cmdline]
    return cmd


def nitro_command(
    qemu: str,
    *,
    eif: Path,
    vsock_socket: Path,
    append: str,
    memory_mib: int,
    accel: str,
    extra_initrd: Path | None = None,
) -> list[str]:
    """``-M nitro-enclave`` booting the EIF file itself; ``append`` follows the EIF's command line
    (QEMU adds it after measuring). ``extra_initrd`` is measured too (a negative control)."""
    cmd = [qemu]
    if FIRMWARE_DIR.is_dir():
        cmd += ["-L", str(FIRMWARE_DIR)]
    cmd += ["-M", f"{NITRO_ENCLAVE},vsock=vsock0,id=eifbuild-boot", *_common(accel, memory_mib)]
    cmd += ["-serial", "stdio", "-chardev", f"socket,id=vsock0,path={vsock_socket}"]
    cmd += ["-kernel", str(eif)]
    if extra_initrd is not None:
        cmd += ["-initrd", str(extra_initrd)]
    cmd += ["-append", append]
    return cmd
