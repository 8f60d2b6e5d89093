"""``eifbuild boot``: smoke-test an EIF under QEMU (TCG) and report one verdict.

The EIF's kernel and its ramdisks (concatenated, each zero-padded to 4 bytes: the kernel only finds
an uncompressed cpio at a 4-byte aligned offset) are written to a temp dir and booted with
``qemu-system-x86_64 -M microvm`` (or ``pc``) or ``qemu-system-aarch64 -M virt -cpu cortex-a57``,
``-nographic -no-reboot``, the serial console on a pipe. The kernel command line is the EIF's plus
what a local run needs: ``eifbuild.local=1`` (eifbuild's init then skips a missing vsock peer and
ends the machine when the command exits), ``console=ttyAMA0`` on aarch64 (QEMU's virt board has a
PL011, not the ttyS0 Nitro uses), ``reboot=t`` on microvm (no keyboard controller to reset
through), and ``panic=-1`` (reboot at once on a panic, which ``-no-reboot`` turns into an exit).

The console is streamed to a callback while it is watched for: the ``expect`` text (success), a
kernel panic, the timeout, or QEMU exiting. QEMU is always killed before :func:`boot` returns.
With ``local_init`` the bootstrap ramdisk is replaced by one holding eifbuild's init compiled for
the EIF's arch, plus the original ``nsm.ko`` if there was one.
"""

from __future__ import annotations

import codecs
import contextlib
import gzip
import io
import os
import selectors
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Final

from . import log
from .arch import info
from .build import EIFBUILD_INIT_C
from .eif import EifImage, iter_section, min_enclave_memory_mib, read_eif
from .errors import ArchiveError, InputError, ToolError, UsageError
from .ramdisk import bootstrap_entries, read_cpio, write_cpio

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from .arch import Arch
    from .store import Store

LOCAL_FLAG: Final = "eifbuild.local=1"
DEFAULT_TIMEOUT: Final = 60.0
DEFAULT_MACHINES: Final[dict[Arch, str]] = {"x86_64": "microvm", "aarch64": "virt"}
MACHINES: Final[dict[Arch, tuple[str, ...]]] = {"x86_64": ("microvm", "pc", "q35"), "aarch64": ("virt",)}
MIN_MEMORY_MIB: Final = 256
ACCELS: Final = ("tcg", "kvm")
PANIC_MARKER: Final = "Kernel panic"
ALIGN: Final = 4
KILL_GRACE: Final = 2.0
_QEMU_PACKAGE: Final[dict[Arch, str]] = {"x86_64": "qemu-system-x86", "aarch64": "qemu-system-arm"}  # Debian
_INIT_LINE: Final = "eifbuild-init:"
_KEEP: Final = 1 << 16  # console bytes kept for the verdict (the tail)


@dataclass(frozen=True)
class BootOptions:
    expect: str | None = None
    timeout: float = DEFAULT_TIMEOUT
    local_init: bool = False
    machine: str | None = None
    memory_mib: int | None = None
    accel: str = "tcg"
    qemu: str | None = None  # the QEMU binary; default from the EIF's arch, looked up on PATH


@dataclass(frozen=True)
class BootResult:
    """How a boot ended. ``reason``: expected, shutdown (both ok), panic, timeout, app-failed,
    no-expect, exited."""

    ok: bool
    reason: str
    detail: str
    seconds: float
    returncode: int | None
    console: str  # the last 64 KiB of console output

    @property
    def verdict(self) -> str:
        return f"{'PASS' if self.ok else 'FAIL'}: {self.detail} ({self.seconds:.1f} s)"


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
    from .toolchain import init_from_source  # noqa: PLC0415 - zig is only needed for --local-init

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


# -- QEMU -------------------------------------------------------------------------------------------
def find_qemu(arch: Arch, override: str | None = None) -> str:
    package = _QEMU_PACKAGE[arch]
    name = override or info(arch).qemu_system
    found = shutil.which(name)
    if found is None:
        msg = (
            f"{name} not found: install QEMU to boot {arch} images "
            f"(Debian/Ubuntu: apt-get install {package}; Fedora: dnf install qemu-system-{arch})"
        )
        raise ToolError(msg, cmd=[name])
    return found


def qemu_command(
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
    cmd += ["-accel", accel, "-m", str(memory_mib), "-smp", "1"]
    cmd += ["-nographic", "-no-reboot", "-nodefaults", "-serial", "stdio"]
    cmd += ["-kernel", str(kernel), "-initrd", str(initrd), "-append", cmdline]
    return cmd


def _check_options(arch: Arch, options: BootOptions) -> str:
    machine = options.machine or DEFAULT_MACHINES[arch]
    if machine.split(",")[0] not in MACHINES[arch]:
        msg = f"machine {machine!r} for {arch}: expected one of {', '.join(MACHINES[arch])}"
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
    return machine


def memory_for(image: EifImage, requested: int | None) -> int:
    """Enough RAM to unpack the ramdisks: at least 256 MiB, and 4x the EIF like nitro-cli wants."""
    if requested is not None:
        return requested
    return max(MIN_MEMORY_MIB, min_enclave_memory_mib(image.file_size))


def boot(
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
    machine = _check_options(arch, options)
    qemu = find_qemu(arch, options.qemu)
    init = None
    if options.local_init:
        if store is None:
            msg = "--local-init needs a store to compile eifbuild's init into"
            raise UsageError(msg, key="--local-init")
        init = eifbuild_init(store, arch)
    with tempfile.TemporaryDirectory(prefix="eifbuild-boot.") as tmp:
        kernel, initrd = prepare(image, Path(tmp), init=init)
        cmd = qemu_command(
            qemu,
            arch,
            kernel=kernel,
            initrd=initrd,
            cmdline=local_cmdline(image.cmdline, arch, machine.split(",")[0]),
            machine=machine,
            memory_mib=memory_for(image, options.memory_mib),
            accel=options.accel,
        )
        log.step(
            f"boot: {Path(qemu).name} -M {machine} ({arch}, {options.accel}, timeout {options.timeout:g} s)"
        )
        return run_qemu(cmd, expect=options.expect, timeout=options.timeout, console=console)


# -- watching the console ---------------------------------------------------------------------------
class _Watch:
    """Scans the console text as it arrives (matches may span chunks)."""

    def __init__(self, expect: str | None) -> None:
        self.expect = expect
        self.text = ""  # the tail kept for the verdict
        self.scanned = 0  # offset in self.text up to which markers were searched
        self.found_expect = False
        self.panic_at: int | None = None

    def feed(self, chunk: str) -> None:
        self.text += chunk
        longest = max(len(PANIC_MARKER), len(self.expect or ""))
        start = max(0, self.scanned - longest)
        if self.expect and not self.found_expect and self.expect in self.text[start:]:
            self.found_expect = True
        if self.panic_at is None:
            at = self.text.find(PANIC_MARKER, start)
            if at >= 0:
                self.panic_at = at
        self.scanned = len(self.text)
        if len(self.text) > 2 * _KEEP and self.panic_at is None:
            drop = len(self.text) - _KEEP
            self.text = self.text[drop:]
            self.scanned -= drop

    def panic_line(self) -> str:
        if self.panic_at is None:
            return ""
        return self.text[self.panic_at :].splitlines()[0].strip()

    def init_lines(self, word: str) -> list[str]:
        return [ln.strip() for ln in self.text.splitlines() if _INIT_LINE in ln and word in ln]


def run_qemu(
    cmd: list[str], *, expect: str | None, timeout: float, console: Callable[[str], None] | None = None
) -> BootResult:
    """Run ``cmd`` (QEMU with the serial console on stdout), watch it, kill it, judge it."""
    start = time.monotonic()
    watch = _Watch(expect)
    try:
        proc = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
    except OSError as exc:
        msg = f"cannot run {cmd[0]}: {exc.strerror or exc}"
        raise ToolError(msg, cmd=cmd) from None
    reader = _Console(proc, watch, console)
    try:
        timed_out = reader.follow(start + timeout)
    finally:
        returncode = _stop(proc, exiting=reader.eof)
    seconds = time.monotonic() - start
    return _judge(watch, timed_out=timed_out, returncode=returncode, seconds=seconds, timeout=timeout)


class _Console:
    """QEMU's stdout, decoded (any bytes, CRLF) and fed to the watcher and the caller's sink."""

    def __init__(
        self, proc: subprocess.Popen[bytes], watch: _Watch, sink: Callable[[str], None] | None
    ) -> None:
        if proc.stdout is None:
            msg = "QEMU was started without a pipe for its console"
            raise ToolError(msg)
        self.fd = proc.stdout.fileno()
        self.watch = watch
        self.sink = sink
        self.utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self.newlines = io.IncrementalNewlineDecoder(None, translate=True)
        self.selector = selectors.DefaultSelector()
        self.selector.register(self.fd, selectors.EVENT_READ)
        self.eof = False

    def follow(self, deadline: float) -> bool:
        """Read until a verdict is possible or QEMU exits; True when the deadline passed first."""
        try:
            while (left := deadline - time.monotonic()) > 0:
                if not self.read(min(left, 0.5)):
                    return False
                if self.watch.panic_at is not None:
                    self.drain(0.5)  # the panic's own lines, for the verdict
                    return False
                if self.watch.found_expect:
                    return False
            return True
        finally:
            self.selector.close()

    def read(self, wait: float) -> bool:
        """Read what arrived within ``wait`` seconds; False at end of output (QEMU exited)."""
        if not self.selector.select(wait):
            return True
        data = os.read(self.fd, 1 << 16)
        if not data:
            self.eof = True
            return False
        text = self.newlines.decode(self.utf8.decode(data))
        if self.sink is not None:
            self.sink(text)
        self.watch.feed(text)
        return True

    def drain(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while (left := end - time.monotonic()) > 0 and self.read(left):
            pass


def _stop(proc: subprocess.Popen[bytes], *, exiting: bool) -> int | None:
    """Kill QEMU if it still runs; its exit status, or None when it had to be killed.

    ``exiting``: its output ended, so it is exiting by itself; give it a moment to finish.
    """
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(KILL_GRACE if exiting else 0)
    if proc.returncode is not None:
        if proc.stdout is not None:
            proc.stdout.close()
        return proc.returncode
    proc.terminate()
    try:
        proc.wait(KILL_GRACE)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    if proc.stdout is not None:
        proc.stdout.close()
    return None


def _judge(
    watch: _Watch, *, timed_out: bool, returncode: int | None, seconds: float, timeout: float
) -> BootResult:
    reason, detail = _verdict(watch, timed_out=timed_out, returncode=returncode, timeout=timeout)
    ok = reason in {"expected", "shutdown"}
    return BootResult(ok, reason, detail, seconds, returncode, watch.text)


def _verdict(watch: _Watch, *, timed_out: bool, returncode: int | None, timeout: float) -> tuple[str, str]:
    """(reason, detail) of a finished run; the order decides which of several signs wins."""
    if watch.panic_at is not None:
        fatal = watch.init_lines("fatal:")
        why = f" after {fatal[-1]!r}" if fatal else ""
        return "panic", f"kernel panic{why}: {watch.panic_line()}"
    if watch.found_expect:
        return "expected", f"saw {watch.expect!r}"
    if timed_out:
        want = f" waiting for {watch.expect!r}" if watch.expect else ""
        return "timeout", f"timed out after {timeout:g} s{want}"
    return _exit_verdict(watch, returncode)


def _exit_verdict(watch: _Watch, returncode: int | None) -> tuple[str, str]:
    """QEMU exited by itself: did the app fail (per init's lines), was the text missing?"""
    status = [ln for ln in watch.init_lines("command ") if "signal" in ln or "status 0" not in ln]
    reason = watch.init_lines("cannot run")  # says more than the status that follows it
    if status or reason:
        return "app-failed", (reason or status)[-1]
    if watch.expect:
        return "no-expect", f"QEMU exited (status {returncode}) before {watch.expect!r} appeared"
    if returncode != 0:
        return "exited", f"QEMU exited with status {returncode}"
    return "shutdown", "the machine shut down"
