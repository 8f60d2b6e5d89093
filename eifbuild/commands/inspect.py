"""``diff`` and ``extract``: explaining what differs between two EIFs, and taking one apart."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

from .. import log
from ..eif import dumps as json_dumps
from ..eif import parse_algo
from .common import EXIT_FAILED, EXIT_OK, PRESERVE_SPECIAL_HELP, Adder, add_algo

if TYPE_CHECKING:
    import argparse


def _add_diff(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "diff",
        help="explain how two EIFs differ: which PCRs, which input, which file",
        description="Exit 0 when the files are identical; otherwise print the PCRs that differ and "
        "every change (measured ones first, down to ramdisk members) and exit 1.",
    )
    p.add_argument("a", type=Path, metavar="A.eif")
    p.add_argument("b", type=Path, metavar="B.eif")
    add_algo(p)
    p.add_argument("--json", action="store_true", help="print one JSON object (schema in the README)")
    p.set_defaults(func=_cmd_diff)


def _cmd_diff(args: argparse.Namespace) -> int:
    from ..inspect import diff_files, diff_json, diff_text  # noqa: PLC0415

    result = diff_files(args.a, args.b, parse_algo(args.algo))
    if args.json:
        sys.stdout.write(json_dumps(diff_json(result, args.a, args.b), indent=2) + "\n")
    else:
        sys.stdout.write(diff_text(result, args.a, args.b))
    return EXIT_OK if result.identical else EXIT_FAILED


def _add_extract(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "extract",
        help="write an EIF's sections (and with --unpack its ramdisk trees) into a directory",
        description="Write kernel, cmdline, ramdisks, metadata and signature parts plus manifest.json, "
        "whose 'pack' arguments (run in the directory) rebuild the same EIF.",
    )
    p.add_argument("eif", type=Path, metavar="FILE")
    p.add_argument("-o", "--output", required=True, type=Path, metavar="DIR", help="new or empty directory")
    p.add_argument("--unpack", action="store_true", help="also unpack each ramdisk into ramdisk-<i>/")
    p.add_argument("--preserve-special", action="store_true", help=f"with --unpack: {PRESERVE_SPECIAL_HELP}")
    p.set_defaults(func=_cmd_extract)


def _cmd_extract(args: argparse.Namespace) -> int:
    from ..inspect import extract  # noqa: PLC0415

    result = extract(args.eif, args.output, unpack=args.unpack, preserve_special=args.preserve_special)
    log.step(f"extracted {args.eif} into {result.directory}")
    _warn_skipped(result.manifest.get("unpacked"))
    for reason in result.differences:
        log.warn(f"pack cannot rebuild the same bytes: {reason}")
    print(json_dumps(result.manifest, indent=2))
    return EXIT_OK


def _warn_skipped(unpacked: object) -> None:
    """Say what --unpack left out (the manifest lists each): nodes not made, setuid/setgid bits dropped."""
    if not isinstance(unpacked, list):
        return
    nodes = sum(len(u.get("not_created", [])) for u in unpacked if isinstance(u, dict))
    bits = sum(len(u.get("special_bits_dropped", [])) for u in unpacked if isinstance(u, dict))
    if nodes or bits:
        log.warn(
            f"unpack left out {nodes} device nodes, fifos or sockets and the setuid/setgid bits of {bits} "
            "files (listed in manifest.json; --preserve-special makes them)"
        )


COMMANDS: list[Adder] = [_add_diff, _add_extract]
