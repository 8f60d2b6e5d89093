"""Command-line interface: the parser and the error boundary; the subcommands live in
:mod:`eifbuild.commands` (one module per area, each a ``_add_<name>(subparsers)`` that sets
``func`` to a ``_cmd_<name>(args) -> int`` handler calling the library).

Exit codes: 0 success; 1 a check ran and failed (verify, boot, store verify); 2 bad input or usage
(``error: <one line>`` on stderr, never a traceback unless ``-v -v``).
"""

from __future__ import annotations

import argparse
import signal
import sys
import traceback
from typing import TYPE_CHECKING

from . import __version__, log
from .commands import COMMANDS
from .commands.common import EXIT_ERROR, EXIT_FAILED, EXIT_OK
from .errors import EifbuildError

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = ["EXIT_ERROR", "EXIT_FAILED", "EXIT_OK", "build_parser", "entrypoint", "main"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="eifbuild",
        description="Build AWS Nitro Enclave images (EIF) reproducibly from pinned inputs.",
    )
    parser.add_argument("--version", action="version", version=f"eifbuild {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more output (-vv: tracebacks)")
    parser.add_argument("-q", "--quiet", action="count", default=0, help="only results and errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for add in COMMANDS:
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    verbosity = args.verbose - args.quiet
    with log.use(log.StderrReporter(verbosity=verbosity)):
        try:
            result: int = args.func(args)
        except EifbuildError as exc:
            if verbosity >= 2:
                traceback.print_exc()
            print(f"error: {exc}", file=sys.stderr)
            return EXIT_ERROR
        except Terminated:
            print("error: terminated", file=sys.stderr)
            return 128 + signal.SIGTERM
        except KeyboardInterrupt:
            print("error: interrupted", file=sys.stderr)
            return 130
        except BrokenPipeError:
            return EXIT_OK
    return result


class Terminated(KeyboardInterrupt):
    """SIGTERM (or SIGHUP) arrived: unwind like Ctrl-C, so what a command started (QEMU, a temp
    dir, a lock) is stopped and cleaned up by its ``finally`` before the process exits."""


def _raise_terminated(signum: int, frame: object) -> None:
    raise Terminated


def entrypoint() -> None:
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _raise_terminated)
    sys.exit(main())
