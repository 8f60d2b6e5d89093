"""Running QEMU with its serial console on a pipe, and judging how the boot ended.

The console is streamed to a callback while it is watched for: the ``expect`` text (success), a
kernel panic, the timeout, QEMU exiting, or a failure reported by ``abort`` (the vsock back-end).
QEMU is always killed before :func:`run_qemu` returns.
"""

from __future__ import annotations

import codecs
import contextlib
import io
import os
import re
import selectors
import subprocess
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final

from ..errors import ToolError

if TYPE_CHECKING:
    from collections.abc import Callable

PANIC_MARKER: Final = "Kernel panic"
KILL_GRACE: Final = 2.0
INIT_LINE: Final = "eifbuild-init:"
_QEMU_ERROR: Final = re.compile(r"^qemu-system-[\w-]+: (.+)$", re.MULTILINE)
_KEEP: Final = 1 << 16  # console bytes kept for the verdict (the tail)
ATTEST_LINE: Final = "eifbuild-init: attest:"
INITRAMFS_FAILED: Final = "Initramfs unpacking failed"  # the kernel ran out of room for the ramdisks
_ATTEST_LINES: Final = 256  # init prints 4 PCR lines and a document of at most 32 lines
_LONGEST_LINE: Final = 4096  # a longer line is cut (an attest line is under 450 characters)


@dataclass(frozen=True)
class BootResult:
    """How a boot ended. ``reason``: expected, shutdown (both ok), panic, timeout, app-failed,
    no-expect, exited, vsock, initramfs, no-heartbeat, attest."""

    ok: bool
    reason: str
    detail: str
    seconds: float
    returncode: int | None
    console: str  # the last 64 KiB of console output
    notes: tuple[str, ...] = field(default=())  # the machine, the heartbeat, the attestation
    attest_lines: tuple[str, ...] = field(default=(), repr=False)  # init's attest lines, wherever they were
    document: bytes | None = field(default=None, repr=False)  # the attestation document (--attest)
    nonce: bytes | None = field(default=None, repr=False)  # the nonce the host passed for it

    @property
    def verdict(self) -> str:
        extra = "".join(f", {note}" for note in self.notes)
        return f"{'PASS' if self.ok else 'FAIL'}: {self.detail} ({self.seconds:.1f} s{extra})"


class _Watch:
    """Scans the console text as it arrives (matches may span chunks)."""

    def __init__(self, expect: str | None) -> None:
        self.expect = expect
        self.text = ""  # the tail kept for the verdict
        self.scanned = 0  # offset in self.text up to which markers were searched
        self.found_expect = False
        self.panic_at: int | None = None
        self.abort: Callable[[], str | None] | None = None
        self.aborted: str | None = None
        self.attest_lines: list[str] = []  # kept apart: an app's output can push them out of the tail
        self.partial = ""  # the console's unfinished last line
        self.initramfs_failed = ""  # the kernel's line, if it could not unpack the ramdisks

    def collect(self, chunk: str) -> None:
        lines = (self.partial + chunk).split("\n")
        self.partial = lines.pop()[-_LONGEST_LINE:]
        for line in lines:
            if INITRAMFS_FAILED in line and not self.initramfs_failed:
                self.initramfs_failed = line[line.index(INITRAMFS_FAILED) :].strip()[:200]
            if ATTEST_LINE in line and len(self.attest_lines) < _ATTEST_LINES:
                self.attest_lines.append(line[line.index(ATTEST_LINE) :].strip()[:_LONGEST_LINE])

    def feed(self, chunk: str) -> None:
        self.collect(chunk)
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
        return [ln.strip() for ln in self.text.splitlines() if INIT_LINE in ln and word in ln]


def run_qemu(
    cmd: list[str],
    *,
    expect: str | None,
    timeout: float,
    console: Callable[[str], None] | None = None,
    abort: Callable[[], str | None] | None = None,
) -> BootResult:
    """Run ``cmd`` (QEMU with the serial console on stdout), watch it, kill it, judge it.

    ``abort`` is asked between reads; a text it returns ends the run as a failure with that text.
    """
    start = time.monotonic()
    watch = _Watch(expect)
    watch.abort = abort
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
                if self.watch.abort is not None and (why := self.watch.abort()) is not None:
                    self.watch.aborted = why
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
    watch.collect("\n")  # the last line, if the console ended without a newline
    return BootResult(
        ok, reason, detail, seconds, returncode, watch.text, attest_lines=tuple(watch.attest_lines)
    )


def _verdict(watch: _Watch, *, timed_out: bool, returncode: int | None, timeout: float) -> tuple[str, str]:
    """(reason, detail) of a finished run; the order decides which of several signs wins."""
    if watch.aborted is not None:
        return "vsock", watch.aborted
    if watch.initramfs_failed:  # whatever followed (a panic, a missing command) came from this
        return "initramfs", (
            f"the kernel could not unpack the ramdisks ({watch.initramfs_failed}): "
            "give the guest more memory (--memory MIB)"
        )
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
    complaint = _qemu_complaint(watch.text) if returncode else ""
    if watch.expect:
        return "no-expect", f"QEMU exited (status {returncode}) before {watch.expect!r} appeared{complaint}"
    if returncode != 0:
        return "exited", f"QEMU exited with status {returncode}{complaint}"
    return "shutdown", "the machine shut down"


def _qemu_complaint(console: str) -> str:
    """``: <QEMU's last error line>`` (e.g. the EIF loader's CRC mismatch), or ``""``."""
    lines = [m[1] for m in _QEMU_ERROR.finditer(console)]
    return f": {lines[-1].strip()}" if lines else ""
