"""``compile`` (C with zig) and ``ramdisk`` (canonical cpio archives)."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import TYPE_CHECKING

from ..arch import parse_arch
from ..errors import UsageError
from .common import EXIT_OK, STORE_HELP, Adder, store_of

if TYPE_CHECKING:
    import argparse


def _add_compile(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "compile",
        help="cross-compile C into a static binary with zig, through the store",
        description="Compile C sources (.h files listed are copied beside them) into a static musl "
        "executable for --arch with the zig of the ziglang package; cached in the store by content.",
    )
    p.add_argument("sources", nargs="+", type=Path, metavar="SRC", help="C sources and headers")
    p.add_argument("--arch", required=True, help="x86_64 (amd64) or aarch64 (arm64)")
    p.add_argument(
        "-o", "--output", required=True, type=Path, metavar="OUT", help="where to write the binary"
    )
    p.add_argument(
        "--cflags",
        action="append",
        default=[],
        metavar="FLAGS",
        help="extra compiler flags, split like a shell would; repeatable (write --cflags='-Wall -Wextra')",
    )
    p.add_argument("--cache", type=Path, metavar="DIR", help=STORE_HELP)
    p.set_defaults(func=_cmd_compile)


def _cmd_compile(args: argparse.Namespace) -> int:
    arch = parse_arch(args.arch, where="--arch")
    cflags = [flag for group in args.cflags for flag in shlex.split(group)]
    store = store_of(args)
    from ..toolchain import compile_to  # noqa: PLC0415

    binary = compile_to(store, args.sources, args.output, arch=arch, cflags=cflags)
    print(f"{binary.sha256}  {args.output}")
    return EXIT_OK


def _add_ramdisk(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "ramdisk",
        help="pack a directory or a Nitro ramdisk layout into a canonical newc cpio archive",
        description="Write TREE, the bootstrap layout (--sys) or the app layout (--app) as a canonical "
        "newc cpio archive: the bytes GNU cpio writes for the normalised tree, whatever the host, "
        "umask or mtimes. --list FILE prints the members of an archive (plain or gzip).",
    )
    p.add_argument("tree", nargs="?", type=Path, metavar="TREE", help="directory to pack as is")
    layout = p.add_mutually_exclusive_group()
    layout.add_argument("--sys", action="store_true", help="bootstrap layout: dev/, init, nsm.ko")
    layout.add_argument("--app", action="store_true", help="app layout: cmd, env and rootfs/")
    layout.add_argument("--list", type=Path, metavar="FILE", help="list FILE's members like cpio -tv")
    p.add_argument("--init", type=Path, metavar="FILE", help="--sys: the init executable")
    p.add_argument("--nsm", type=Path, metavar="FILE", help="--sys: the NSM kernel module (optional)")
    p.add_argument("--rootfs", type=Path, metavar="DIR", help="--app: the app's root filesystem")
    p.add_argument(
        "--cmd", action="append", metavar="ARG", help="--app: one argv entry; repeat (--cmd=-x for a dash)"
    )
    p.add_argument("--env", action="append", metavar="KEY=VALUE", help="--app: one variable; repeatable")
    p.add_argument("-o", "--output", type=Path, metavar="OUT", help="archive to write")
    p.add_argument(
        "--mtime", type=int, metavar="N", help="mtime of every entry (default: $SOURCE_DATE_EPOCH or 0)"
    )
    p.add_argument(
        "--modes",
        choices=("normalize", "preserve"),
        default="normalize",
        help="normalize (default): dirs 0755, files 0755/0644; preserve: keep permission bits",
    )
    p.add_argument("--gzip", action="store_true", help="deterministic gzip, zero-padded to 4 bytes")
    p.set_defaults(func=_cmd_ramdisk)


def _ramdisk_misuse(args: argparse.Namespace) -> str | None:
    mode = "--list" if args.list else "--sys" if args.sys else "--app" if args.app else "TREE"
    allowed = {
        "--list": set(),
        "--sys": {"--init", "--nsm", "-o", "--mtime", "--gzip"},
        "--app": {"--rootfs", "--cmd", "--env", "-o", "--mtime", "--modes", "--gzip"},
        "TREE": {"TREE", "-o", "--mtime", "--modes", "--gzip"},
    }[mode]
    given = {
        "TREE": args.tree, "--init": args.init, "--nsm": args.nsm, "--rootfs": args.rootfs,
        "--cmd": args.cmd, "--env": args.env, "-o": args.output, "--mtime": args.mtime,
        "--modes": args.modes != "normalize" or None, "--gzip": args.gzip or None,
    }  # fmt: skip
    for option, value in given.items():
        if value is not None and option not in allowed:
            return f"ramdisk: {option} cannot be used with {mode}"
    required = {
        "--list": [],
        "--sys": ["--init", "-o"],
        "--app": ["--rootfs", "--cmd", "-o"],
        "TREE": ["TREE", "-o"],
    }
    missing = [option for option in required[mode] if given.get(option) is None]
    return f"ramdisk: {mode} needs {' and '.join(missing)}" if missing else None


def _cmd_ramdisk(args: argparse.Namespace) -> int:
    from .. import ramdisk  # noqa: PLC0415

    if (problem := _ramdisk_misuse(args)) is not None:
        raise UsageError(problem)
    if args.list is not None:
        for line in ramdisk.list_archive(args.list):
            print(line)
        return EXIT_OK
    if args.sys:
        entries = ramdisk.bootstrap_entries(args.init, args.nsm)
    elif args.app:
        env = ramdisk.parse_env_args(args.env or [])
        entries = ramdisk.app_entries(args.rootfs, args.cmd, env, modes=args.modes)
    else:
        entries = ramdisk.tree_entries(args.tree, modes=args.modes)
    compression: ramdisk.Compression = "gzip" if args.gzip else "none"
    result = ramdisk.write_cpio_file(
        entries,
        args.output,
        mtime=args.mtime,
        compression=compression,
        align=ramdisk.eif_alignment([compression]),
    )
    print(f"{result.sha256}  {args.output}")
    return EXIT_OK


COMMANDS: list[Adder] = [_add_compile, _add_ramdisk]
