"""Real boots of the app kernels (examples/kernel/app/<arch>/) under QEMU (TCG): eifbuild's init runs a
`#!` script whose interpreter is a static program (appcheck.c), which talks TCP to itself on
127.0.0.1 and ::1 after bringing `lo` up, calls the system calls runtimes expect and reads the clock.
x86_64 also boots on QEMU's nitro-enclave machine (heartbeat, NSM attestation), when that QEMU is
there (``EIFBUILD_QEMU_X86_64``, see test_boot_nitro.py); aarch64 on ``virt``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from conftest import require_tool

from eifbuild.arch import info
from eifbuild.eif.metadata import make_metadata
from eifbuild.eif.writer import write_eif
from eifbuild.ramdisk import Entry, bootstrap_entries, write_cpio_file
from eifbuild.runtime import boot
from eifbuild.toolchain import init_from_source
from eifbuild.toolchain.zig import compile_c_binary

if TYPE_CHECKING:
    from eifbuild.arch import Arch
    from eifbuild.store import Store

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
KERNELS = REPO / "examples" / "kernel"
APPCHECK_C = Path(__file__).with_name("appcheck.c")
ARCHES: tuple[Arch, ...] = ("x86_64", "aarch64")
SCRIPT = b"#!/app/appcheck\n# a script: binfmt_script runs /app/appcheck /app/run\n"


def _kernel_dir(arch: Arch, profile: str) -> Path:
    return KERNELS / arch if profile == "tiny" else KERNELS / profile / arch


def _app(store: Store, arch: Arch) -> list[Entry]:
    """/cmd runs the script /app/run, whose `#!` line names the static appcheck."""
    appcheck = compile_c_binary(store, [APPCHECK_C], arch=arch, output_name="appcheck").path
    return [
        Entry.file("cmd", b"/app/run\n"),
        Entry.file("env", b"PATH=/app\n"),
        Entry.directory("rootfs"),
        Entry.directory("rootfs/app"),
        Entry.file("rootfs/app/appcheck", appcheck, mode=0o755),
        Entry.file("rootfs/app/run", SCRIPT, mode=0o755),
        *(Entry.directory(f"rootfs/{d}") for d in ("dev", "proc", "run", "sys", "tmp")),
    ]


def _eif(tmp_path: Path, store: Store, arch: Arch, profile: str = "app") -> Path:
    """An EIF of the profile's kernel and AWS's command line, eifbuild's init, the script app."""
    folder = _kernel_dir(arch, profile)
    kernel = folder / info(arch).kernel_image
    init = init_from_source(store, boot.EIFBUILD_INIT_C, arch).file("init")
    ramdisks = []
    for part, entries in (("bootstrap", bootstrap_entries(init)), ("app", _app(store, arch))):
        path = tmp_path / f"{profile}-{part}.cpio"
        write_cpio_file(entries, path, mtime=0)
        ramdisks.append(path)
    out = tmp_path / f"{profile}-{arch}.eif"
    cmdline = (folder / "cmdline").read_text().strip()
    write_eif(
        out,
        kernel=kernel,
        cmdline=cmdline,
        ramdisks=ramdisks,
        metadata=make_metadata(kernel=kernel),
        arch=arch,
    )
    return out


def _assert_the_app_ran(console: str) -> None:
    assert "appcheck: run by #! for /app/run" in console, console
    assert "appcheck: TCP on 127.0.0.1: OK" in console, console
    assert "appcheck: TCP on ::1: OK" in console, console
    assert "ENOSYS" not in console, console
    assert "appcheck: all OK" in console, console
    assert "eifbuild-init: command exited with status 0" in console, console


@pytest.mark.parametrize("arch", ARCHES)
def test_the_app_kernel_runs_a_script_with_loopback_and_the_runtime_system_calls(
    tmp_path: Path, shared_store: Store, arch: Arch
) -> None:
    require_tool(info(arch).qemu_system)
    eif = _eif(tmp_path, shared_store, arch)
    machine = "microvm" if arch == "x86_64" else None
    result = boot.boot_eif(eif, boot.BootOptions(timeout=180, machine=machine), store=None)
    assert (result.ok, result.reason) == (True, "shutdown"), result.console
    _assert_the_app_ran(result.console)
    if arch == "aarch64":  # the PL031 RTC: QEMU's virt board gives it the host's time
        year = re.search(r"appcheck: the clock says (\d{4})-", result.console)
        assert year is not None, result.console
        assert int(year.group(1)) >= 2024, result.console
        assert "rtc-pl031" in result.console


@pytest.mark.parametrize("arch", ARCHES)
def test_the_tiny_kernel_cannot_run_the_script(tmp_path: Path, shared_store: Store, arch: Arch) -> None:
    """The negative control: without CONFIG_BINFMT_SCRIPT, init cannot execute /app/run."""
    require_tool(info(arch).qemu_system)
    eif = _eif(tmp_path, shared_store, arch, profile="tiny")
    machine = "microvm" if arch == "x86_64" else None
    result = boot.boot_eif(eif, boot.BootOptions(timeout=180, machine=machine), store=None)
    assert (result.ok, result.reason) == (False, "app-failed"), result.console
    assert result.detail == "eifbuild-init: cannot run '/app/run': Exec format error"




def test_the_app_kernel_boots_on_the_nitro_enclave_machine_and_attests(
    tmp_path: Path, shared_store: Store, nitro_qemu: str
) -> None:
    eif = _eif(tmp_path, shared_store, "x86_64")
    result = boot.boot_eif(
        eif, boot.BootOptions(qemu=nitro_qemu, timeout=180, attest=True), store=shared_store
    )
    assert result.ok, result.console
    assert result.notes[:2] == ("-M nitro-enclave", "heartbeat answered"), result.notes
    assert any(note.startswith("attested: PCR0, PCR1, PCR2 equal the EIF's") for note in result.notes), (
        result.notes
    )
    assert "appcheck: hwrng: nsm-hwrng" in result.console  # NSM's RNG, registered by the built-in driver
    _assert_the_app_ran(result.console)
