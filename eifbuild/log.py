"""Progress and log messages, routed through a context-local reporter.

Library code calls :func:`step`, :func:`info`, :func:`warn` and :func:`progress`; it never prints.
The default reporter drops everything. The CLI and the doit tasks install a :class:`StderrReporter`
with :func:`use`, which writes ``* step`` lines to stderr and shows tqdm bars only on a terminal.
"""

from __future__ import annotations

import contextlib
import sys
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, Protocol, TextIO

if TYPE_CHECKING:
    from collections.abc import Iterator


class Progress(Protocol):
    def update(self, n: int) -> None: ...


class Reporter(Protocol):
    def step(self, message: str) -> None: ...
    def info(self, message: str) -> None: ...
    def warn(self, message: str) -> None: ...
    def progress(
        self, description: str, total: int | None
    ) -> contextlib.AbstractContextManager[Progress]: ...


class _NullProgress:
    def update(self, n: int) -> None:
        pass


class _TqdmProgress:
    def __init__(self, bar: Any) -> None:
        self._bar = bar

    def update(self, n: int) -> None:
        self._bar.update(n)


class NullReporter:
    def step(self, message: str) -> None:
        pass

    def info(self, message: str) -> None:
        pass

    def warn(self, message: str) -> None:
        pass

    @contextlib.contextmanager
    def progress(self, description: str, total: int | None) -> Iterator[Progress]:
        yield _NullProgress()


class StderrReporter:
    """``* step`` lines and warnings on stderr; ``info`` only when verbose; bars only on a TTY."""

    # Downloads and packs smaller than this finish before a bar would be useful.
    BAR_THRESHOLD = 4 * 1024 * 1024

    def __init__(self, stream: TextIO | None = None, *, verbosity: int = 0) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.verbosity = verbosity

    def step(self, message: str) -> None:
        if self.verbosity >= 0:
            print(f"* {message}", file=self.stream, flush=True)

    def info(self, message: str) -> None:
        if self.verbosity >= 1:
            print(f"  {message}", file=self.stream, flush=True)

    def warn(self, message: str) -> None:
        print(f"warning: {message}", file=self.stream, flush=True)

    @contextlib.contextmanager
    def progress(self, description: str, total: int | None) -> Iterator[Progress]:
        show = self.verbosity >= 0 and self.stream.isatty() and (total is None or total >= self.BAR_THRESHOLD)
        if not show:
            yield _NullProgress()
            return
        from tqdm import tqdm  # noqa: PLC0415 - only needed on a terminal

        with tqdm(
            total=total,
            desc=description,
            unit="B",
            unit_scale=True,
            unit_divisor=1024,
            file=self.stream,
            leave=False,
        ) as bar:
            yield _TqdmProgress(bar)


_NULL = NullReporter()
_reporter: ContextVar[Reporter | None] = ContextVar("eifbuild_reporter", default=None)


def get() -> Reporter:
    return _reporter.get() or _NULL


@contextlib.contextmanager
def use(reporter: Reporter) -> Iterator[Reporter]:
    token = _reporter.set(reporter)
    try:
        yield reporter
    finally:
        _reporter.reset(token)


def step(message: str) -> None:
    get().step(message)


def info(message: str) -> None:
    get().info(message)


def warn(message: str) -> None:
    get().warn(message)


def progress(description: str, total: int | None) -> contextlib.AbstractContextManager[Progress]:
    return get().progress(description, total)
