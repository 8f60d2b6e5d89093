"""Measuring commands: wall time, CPU time and peak RSS of one child process, and their statistics.

Every benchmarked command runs as a child process; ``os.wait4`` gives its own CPU time. Its peak RSS
comes from GNU time (``/usr/bin/time -f %M``) when installed: Linux carries the RSS high-water mark
of a process across fork and exec, so the rusage of a direct child of this (larger) Python process
would report at least this process's size. Without GNU time the wait4 figure is shown, an upper
bound. The environment of the children drops ``PYTHONDONTWRITEBYTECODE``: with it set, every run
recompiles eifbuild's modules, which a user's machine (which writes ``.pyc`` files) does not do.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence

DROPPED_ENV: Final = ("PYTHONDONTWRITEBYTECODE",)
MIB: Final = 1 << 20
GNU_TIME: Final = "/usr/bin/time"


class CommandFailed(Exception):
    """A benchmarked command exited non-zero (or produced a wrong result)."""


@dataclass(frozen=True)
class Sample:
    wall: float  # seconds
    cpu: float  # user + system seconds of the child (and its waited-for children)
    rss: int  # peak resident set size in bytes
    stdout: str = ""
    rss_exact: bool = True  # False: an upper bound (no GNU time)


@dataclass
class Series:
    """Repeated samples of one command."""

    label: str
    samples: list[Sample] = field(default_factory=list)

    def walls(self) -> list[float]:
        return [s.wall for s in self.samples]

    @property
    def median(self) -> float:
        return statistics.median(self.walls())

    @property
    def low(self) -> float:
        return min(self.walls())

    @property
    def high(self) -> float:
        return max(self.walls())

    @property
    def cpu(self) -> float:
        return statistics.median(s.cpu for s in self.samples)

    @property
    def rss(self) -> int:
        return max(s.rss for s in self.samples)

    @property
    def rss_exact(self) -> bool:
        return all(s.rss_exact for s in self.samples)


def child_env(extra: Mapping[str, str] | None = None, *, drop: Sequence[str] = ()) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in DROPPED_ENV and k not in drop}
    env.update(extra or {})
    return env


def run(
    cmd: Sequence[str | os.PathLike[str]],
    *,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    capture: bool = False,
) -> Sample:
    """Run ``cmd`` once and measure it; raise CommandFailed (with its stderr) unless it exits 0.

    ``capture`` keeps stdout (for commands whose output is small), otherwise it is discarded.
    """
    timed = os.access(GNU_TIME, os.X_OK)
    with tempfile.NamedTemporaryFile(prefix="rss-") as rss_file:
        prefix = [GNU_TIME, "-f", "%M", "-o", rss_file.name] if timed else []
        start = time.perf_counter()
        proc = subprocess.Popen(
            [*prefix, *cmd],
            cwd=cwd,
            env=dict(env) if env is not None else child_env(),
            stdout=subprocess.PIPE if capture else subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        out, err = _drain(proc)  # before waiting: a full pipe would block the child
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        rss_text = Path(rss_file.name).read_text()
    if proc.returncode != 0:
        shown = " ".join(map(str, cmd))
        tail = err.decode(errors="replace").strip()[-2000:]
        msg = f"command failed with exit code {proc.returncode}: {shown}\n{tail}"
        raise CommandFailed(msg)
    rss_kib = int(rss_text.split()[-1]) if timed else usage.ru_maxrss
    cpu = usage.ru_utime + usage.ru_stime
    return Sample(wall, cpu, rss_kib * 1024, out.decode(errors="replace"), rss_exact=timed)


def _drain(proc: subprocess.Popen[bytes]) -> tuple[bytes, bytes]:
    """Read stdout (if piped) and stderr to their ends without reaping the child."""
    import selectors  # noqa: PLC0415

    streams = {s: bytearray() for s in (proc.stdout, proc.stderr) if s is not None}
    with selectors.DefaultSelector() as sel:
        for stream in streams:
            sel.register(stream, selectors.EVENT_READ)
        while sel.get_map():
            for key, _ in sel.select():
                chunk = os.read(key.fd, 1 << 16)
                if chunk:
                    streams[key.fileobj].extend(chunk)  # type: ignore[index]
                else:
                    sel.unregister(key.fileobj)
    for stream in streams:
        stream.close()
    out = bytes(streams[proc.stdout]) if proc.stdout is not None else b""
    err = bytes(streams[proc.stderr]) if proc.stderr is not None else b""
    return out, err


def interleaved(
    repeat: int,
    commands: Sequence[tuple[str, Callable[[], Sample]]],
    *,
    warmup: bool = True,
    between: Callable[[], None] | None = None,
) -> dict[str, Series]:
    """Run every command ``repeat`` times, alternating them, so load changes hit all alike.

    One untimed run of each first (page cache, .pyc files) when ``warmup``; ``between`` runs
    untimed after every measured command (e.g. ``os.sync`` so writeback of one run does not land
    in the next).
    """
    series = {label: Series(label) for label, _ in commands}
    if warmup:
        for _, command in commands:
            command()
            if between is not None:
                between()
    for _ in range(repeat):
        for label, command in commands:
            series[label].samples.append(command())
            if between is not None:
                between()
    return series


def load_average() -> tuple[float, float, float]:
    return os.getloadavg()


def progress(text: str) -> None:
    print(f"[bench] {text}", file=sys.stderr, flush=True)
