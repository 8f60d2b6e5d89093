"""``eifbuild boot``: smoke-test an EIF under QEMU (TCG) and report one verdict.

Two machines. x86_64 EIFs boot by default on QEMU's ``nitro-enclave`` machine when the QEMU has it
(see :mod:`eifbuild.runtime._qemu`): QEMU reads the EIF file itself (``-kernel app.eif``), checks its CRC and
measures it into its emulated NSM; eifbuild's vhost-user-vsock back-end (:mod:`eifbuild.runtime.vsock`)
answers the enclave heartbeat, so the EIF boots with its production command line and any init
that keeps AWS's boot contract. Only ``reboot=t panic=-1`` (and, with ``--attest``,
``eifbuild.attest=1 eifbuild.nonce=<hex>``: a fresh nonce per boot) are appended, after QEMU
measured the command line.

Otherwise (``--machine microvm``/``pc``/``q35``, or aarch64's ``virt``) the EIF's kernel and its
ramdisks (concatenated, each zero-padded to 4 bytes: the kernel only finds an uncompressed cpio at
a 4-byte aligned offset) are written to a temp dir and booted directly. The command line is the
EIF's plus what a local run needs: ``eifbuild.local=1`` (eifbuild's init then skips a missing vsock
peer and ends the machine when the command exits), ``console=ttyAMA0`` on aarch64 (QEMU's virt
board has a PL011, not the ttyS0 Nitro uses), ``reboot=t`` on microvm (no keyboard controller to
reset through), and ``panic=-1`` (reboot at once on a panic, which ``-no-reboot`` turns into an
exit). With ``local_init`` the bootstrap ramdisk is replaced by one holding eifbuild's init
compiled for the EIF's arch, plus the original ``nsm.ko`` if there was one.
"""

from __future__ import annotations

import gzip
import io
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import IO, TYPE_CHECKING, Final

from .. import log
from ..eif import EifImage, iter_section, measure, min_enclave_memory_mib, read_eif
from ..errors import ArchiveError, InputError, UsageError
from ..ramdisk import bootstrap_entries, read_cpio, write_cpio
from ..toolchain import EIFBUILD_INIT_C
from ._attest import append_words, check_document, compare, new_nonce, read_document
from ._console import BootResult, run_qemu
from ._qemu import (
    NITRO_ENCLAVE,
    find_qemu,
    has_nitro_enclave,
    nitro_command,
    no_nitro_enclave,
    unpacked_command,
)
from .vsock import HEARTBEAT_PORT, VsockBackend, parse_forwards, parse_publishes

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from ..arch import Arch
    from ..eif import Section
    from ..store import Store

LOCAL_FLAG: Final = "eifbuild.local=1"
NITRO_APPEND: Final = "reboot=t panic=-1"  # after the measured command line: no PCR moves
DEFAULT_TIMEOUT: Final = 60.0
MACHINES: Final[dict[Arch, tuple[str, ...]]] = {
    "x86_64": (NITRO_ENCLAVE, "microvm", "pc", "q35"),
    "aarch64": ("virt",),
}
MIN_MEMORY_MIB: Final = 256
UNPACK_HEADROOM_MIB: Final = 96  # the kernel, init and the app's first needs, beside the unpacked files
MIB: Final = 1 << 20
ACCELS: Final = ("tcg", "kvm")
ALIGN: Final = 4


@dataclass(frozen=True)
class BootOptions:
    expect: str | None = None
    timeout: float = DEFAULT_TIMEOUT
    local_init: bool = False
    machine: str | None = None  # default: nitro-enclave for x86_64 if the QEMU has it, else microvm; virt
    memory_mib: int | None = None
    accel: str = "tcg"
    qemu: str | None = None  # the QEMU binary; default $EIFBUILD_QEMU_<ARCH>, else from PATH
    attest: bool = False  # nitro-enclave only: compare the PCRs the guest reads from its NSM
    vsock_forwards: tuple[str, ...] = ()  # nitro-enclave only: PORT=tcp:HOST:PORT | PORT=unix:PATH
    publishes: tuple[str, ...] = ()  # nitro-enclave only: [HOSTADDR:]HOSTPORT:ENCLAVEPORT
    extra_initrd: Path | None = None  # nitro-enclave only: QEMU measures it too (a negative control)


# -- preparing the files ----------------------------------------------------------------------------
def local_cmdline(cmdline: str, arch: Arch, machine: str) -> str:
    """The EIF's command line plus what a local QEMU run needs (later values win in the kernel)."""
    extra = [LOCAL_FLAG]
    if arch == "aarch64":
        extra.append("console=ttyAMA0")
    elif "console=" not in cmdline:
        extra.append("console=ttyS0")
    if machine == "microvm":
        extra.append("reboot=t")
    extra.append("panic=-1")
    return " ".join([cmdline.strip(), *extra]).strip()


def write_initrd(chunks: Iterator[Iterator[bytes]], out: IO[bytes]) -> int:
    """Concatenate ramdisks, zero-padding each to a multiple of 4 bytes; returns the total size."""
    total = 0
    for ramdisk in chunks:
        size = 0
        for chunk in ramdisk:
            out.write(chunk)
            size += len(chunk)
        pad = -size % ALIGN
        out.write(b"\0" * pad)
        total += size + pad
    return total


def _nsm_from_bootstrap(data: bytes, where: str) -> bytes | None:
    """The ``nsm.ko`` of a bootstrap ramdisk (plain or gzip cpio), or None."""
    raw = gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data
    found = None
    for member in read_cpio(io.BytesIO(raw), path=where, data=lambda m: m.name == "nsm.ko"):
        if member.name == "nsm.ko":
            found = member.data
    return found


def local_bootstrap(image: EifImage, init: Path) -> bytes:
    """A bootstrap ramdisk with ``init`` and the EIF's own nsm.ko (if it had one)."""
    first = image.ramdisks[0]
    data = b"".join(iter_section(image, first))
    try:
        nsm = _nsm_from_bootstrap(data, f"{image.path} (ramdisk 1)")
    except (ArchiveError, OSError, EOFError) as exc:
        msg = f"cannot read the bootstrap ramdisk to keep its nsm.ko: {exc}"
        raise ArchiveError(msg, path=image.path) from None
    buf = io.BytesIO()
    write_cpio(bootstrap_entries(init, nsm), buf, mtime=0, align=ALIGN)
    return buf.getvalue()


def eifbuild_init(store: Store, arch: Arch) -> Path:
    """eifbuild's own init compiled for ``arch`` (through the store: compiled once)."""
    from ..toolchain import init_from_source  # noqa: PLC0415 - zig is only needed for --local-init

    return init_from_source(store, EIFBUILD_INIT_C, arch).file("init")


def prepare(image: EifImage, work: Path, *, init: Path | None = None) -> tuple[Path, Path]:
    """Write ``kernel`` and ``initrd`` into ``work``; ``init`` replaces the bootstrap ramdisk's init."""
    if not image.ramdisks:
        msg = "the EIF has no ramdisk"
        raise InputError(msg, path=image.path)
    kernel, initrd = work / "kernel", work / "initrd"
    with kernel.open("wb") as fh:
        for chunk in iter_section(image, image.kernel):
            fh.write(chunk)
    ramdisks: list[Iterator[bytes]] = [iter_section(image, r) for r in image.ramdisks]
    if init is not None:
        ramdisks[0] = iter([local_bootstrap(image, init)])
    with initrd.open("wb") as fh:
        write_initrd(iter(ramdisks), fh)
    return kernel, initrd


# -- choosing the machine ---------------------------------------------------------------------------
def _check_options(arch: Arch, options: BootOptions) -> None:
    if options.machine is not None and _base(options.machine) not in MACHINES[arch]:
        msg = f"machine {options.machine!r} for {arch}: expected one of {', '.join(MACHINES[arch])}"
        raise UsageError(msg, key="--machine")
    if options.accel not in ACCELS:
        msg = f"accelerator {options.accel!r}: expected one of {', '.join(ACCELS)}"
        raise UsageError(msg, key="--accel")
    if not options.timeout > 0:
        msg = f"timeout {options.timeout}: expected a positive number of seconds"
        raise UsageError(msg, key="--timeout")
    if options.expect == "":
        msg = "the expected text is empty"
        raise UsageError(msg, key="--expect")
    parse_forwards(list(options.vsock_forwards))
    parse_publishes(list(options.publishes))


def _base(machine: str) -> str:
    """The machine type without its options (``microvm,x-option-roms=off`` → ``microvm``)."""
    return machine.split(",", maxsplit=1)[0]


def _nitro_only(options: BootOptions) -> list[tuple[str, str]]:
    """(option, what) pairs the options ask for that only nitro-enclave can do."""
    wanted = [("--attest", "the NSM device"), ("--vsock-forward", "vsock"), ("--publish", "vsock")]
    given = [options.attest, bool(options.vsock_forwards), bool(options.publishes)]
    found = [pair for pair, on in zip(wanted, given, strict=True) if on]
    if options.extra_initrd is not None:
        found.append(("extra_initrd", "measuring it"))
    return found


def choose_machine(arch: Arch, qemu: str, options: BootOptions) -> str:
    """The machine to boot on: --machine, else nitro-enclave where available (x86_64), else the
    unpacked boot's default. Options that need nitro-enclave get it or a clear error."""
    needs = _nitro_only(options)
    machine = options.machine
    if machine is None:
        if arch == "aarch64":
            machine = "virt"
        elif options.local_init:
            machine = "microvm"  # --local-init changes the ramdisk: only an unpacked boot can
        else:
            machine = NITRO_ENCLAVE if needs or has_nitro_enclave(qemu) else "microvm"
    is_nitro = _base(machine) == NITRO_ENCLAVE
    if not is_nitro and needs:
        option, what = needs[0]
        msg = f"{option} needs QEMU's {NITRO_ENCLAVE} machine ({what}; x86_64 only), not {machine}"
        raise UsageError(msg, key=option)
    if is_nitro and options.local_init:
        msg = f"--local-init changes the ramdisks; {NITRO_ENCLAVE} boots the EIF as it is (use -M microvm)"
        raise UsageError(msg, key="--local-init")
    if is_nitro and not has_nitro_enclave(qemu):
        raise no_nitro_enclave(qemu)
    return machine


def memory_for(image: EifImage, requested: int | None) -> int:
    """Enough RAM to unpack the ramdisks: at least 256 MiB, 4x the EIF like nitro-cli wants, and
    room for the EIF plus its ramdisks unpacked (a gzip ramdisk can hold several times its size)."""
    if requested is not None:
        return requested
    unpacked = image.file_size + sum(_unpacked_size(image.path, s) for s in image.ramdisks)
    return max(
        MIN_MEMORY_MIB, min_enclave_memory_mib(image.file_size), -(-unpacked // MIB) + UNPACK_HEADROOM_MIB
    )


def _unpacked_size(path: Path, section: Section) -> int:
    """A ramdisk's size once unpacked: a gzip stream's ISIZE trailer (its size mod 4 GiB), else its size."""
    with open(path, "rb") as fh:
        fh.seek(section.data_offset)
        if section.size < 18 or fh.read(2) != b"\x1f\x8b":
            return section.size
        fh.seek(section.end - 4)
        return max(section.size, int.from_bytes(fh.read(4), "little"))


# -- booting ------------------------------------------------------------------------------------------
def boot_eif(
    path: Path,
    options: BootOptions,
    *,
    store: Store | None = None,
    console: Callable[[str], None] | None = None,
) -> BootResult:
    """Boot the EIF at ``path`` under QEMU and watch its console; QEMU never outlives this call.

    ``console`` receives the console output as it arrives. ``store`` is needed for ``local_init``
    (the compiled init is cached there).
    """
    image = read_eif(path)
    arch = image.arch
    _check_options(arch, options)
    qemu = find_qemu(arch, options.qemu)
    machine = choose_machine(arch, qemu, options)
    log.step(f"boot: {Path(qemu).name} -M {machine} ({arch}, {options.accel}, timeout {options.timeout:g} s)")
    if _base(machine) == NITRO_ENCLAVE:
        return _boot_nitro(image, qemu, options, console)
    return _boot_unpacked(image, qemu, machine=machine, options=options, store=store, console=console)


def _boot_unpacked(
    image: EifImage,
    qemu: str,
    *,
    machine: str,
    options: BootOptions,
    store: Store | None,
    console: Callable[[str], None] | None,
) -> BootResult:
    init = None
    if options.local_init:
        if store is None:
            msg = "--local-init needs a store to compile eifbuild's init into"
            raise UsageError(msg, key="--local-init")
        init = eifbuild_init(store, image.arch)
    with tempfile.TemporaryDirectory(prefix="eifbuild-boot.") as tmp:
        kernel, initrd = prepare(image, Path(tmp), init=init)
        cmd = unpacked_command(
            qemu,
            image.arch,
            kernel=kernel,
            initrd=initrd,
            cmdline=local_cmdline(image.cmdline, image.arch, _base(machine)),
            machine=machine,
            memory_mib=memory_for(image, options.memory_mib),
            accel=options.accel,
        )
        result = run_qemu(cmd, expect=options.expect, timeout=options.timeout, console=console)
    return replace(result, notes=(f"-M {machine}",))


def _boot_nitro(
    image: EifImage, qemu: str, options: BootOptions, console: Callable[[str], None] | None
) -> BootResult:
    nonce = new_nonce() if options.attest else None
    append = NITRO_APPEND if nonce is None else f"{NITRO_APPEND} {append_words(nonce)}"
    with tempfile.TemporaryDirectory(prefix="eifbuild-boot.") as tmp:
        forwards = parse_forwards(list(options.vsock_forwards))
        publishes = parse_publishes(list(options.publishes))
        backend = VsockBackend(Path(tmp) / "vsock.sock", forwards=forwards, publishes=publishes)
        cmd = nitro_command(
            qemu,
            eif=image.path,
            vsock_socket=backend.socket_path,
            append=append,
            memory_mib=memory_for(image, options.memory_mib),
            accel=options.accel,
            extra_initrd=options.extra_initrd,
        )
        backend.start()
        try:
            result = run_qemu(
                cmd,
                expect=options.expect,
                timeout=options.timeout,
                console=console,
                abort=lambda: backend.error,
            )
        finally:
            backend.stop()
    if nonce is None:
        return _judge_nitro(result, backend, None)
    document, problem = read_document(result.attest_lines)
    return _judge_nitro(replace(result, document=document, nonce=nonce), backend, (image, problem))


def _judge_nitro(
    result: BootResult, backend: VsockBackend, attest: tuple[EifImage, str] | None
) -> BootResult:
    """Add what only nitro-enclave can tell: the back-end's health, the heartbeat, the PCRs read
    and the attestation document."""
    notes = [f"-M {NITRO_ENCLAVE}"]
    beat = backend.heartbeats > 0
    notes.append("heartbeat answered" if beat else "no heartbeat")
    if backend.error is not None and result.reason != "vsock":
        return replace(result, ok=False, reason="vsock", detail=backend.error, notes=tuple(notes))
    if not result.ok:
        detail = result.detail
        if not beat and result.reason in {"timeout", "no-expect", "exited"}:
            detail += f"; the enclave sent no heartbeat (vsock CID 3 port {HEARTBEAT_PORT})"
        return replace(result, detail=detail, notes=tuple(notes))
    if not beat:
        why = f"{result.detail}, but the enclave sent no heartbeat (vsock CID 3 port {HEARTBEAT_PORT})"
        return replace(result, ok=False, reason="no-heartbeat", detail=why, notes=tuple(notes))
    if attest is not None and result.nonce is not None:
        image, problem = attest  # problem: why init's lines held no document
        expected = measure(image)
        for attestation in (
            compare("\n".join(result.attest_lines), expected),
            check_document(result.document, problem, expected, result.nonce),
        ):
            if not attestation.ok:
                detail = f"{attestation.detail} ({result.detail})"
                return replace(result, ok=False, reason="attest", detail=detail, notes=tuple(notes))
            notes.append(attestation.detail)
    return replace(result, notes=tuple(notes))
