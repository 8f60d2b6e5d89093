"""Command-line interface: argument parsing and the error boundary, nothing else.

Each subcommand is a pair: ``_add_<name>(subparsers)`` declares it and sets ``func`` to a
``_cmd_<name>(args) -> int`` handler that calls the library and prints the result on stdout.

Exit codes: 0 success; 1 a check ran and failed (verify, boot, check); 2 bad input or usage
(``error: <one line>`` on stderr, never a traceback unless ``-v -v``).
"""

from __future__ import annotations

import argparse
import sys
import traceback
from typing import TYPE_CHECKING

from . import __version__, log
from .errors import EifbuildError

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_ERROR = 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="eifbuild",
        description="Build AWS Nitro Enclave images (EIF) reproducibly from pinned inputs.",
    )
    parser.add_argument("--version", action="version", version=f"eifbuild {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more output (-vv: tracebacks)")
    parser.add_argument("-q", "--quiet", action="count", default=0, help="only results and errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for add in _COMMANDS:
        add(sub)
    return parser


_COMMANDS: list[Callable[[argparse._SubParsersAction[argparse.ArgumentParser]], None]] = []


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
        except KeyboardInterrupt:
            print("error: interrupted", file=sys.stderr)
            return 130
        except BrokenPipeError:
            return EXIT_OK
    return result


def entrypoint() -> None:
    sys.exit(main())
