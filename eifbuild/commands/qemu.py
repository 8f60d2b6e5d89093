"""``qemu build``: a QEMU with the nitro-enclave machine, for ``eifbuild boot``."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from .common import EXIT_OK, Adder

if TYPE_CHECKING:
    import argparse


def _add_qemu(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "qemu",
        help="build a QEMU that has the nitro-enclave machine (Debian's builds lack it)",
        description="QEMU for `eifbuild boot`'s nitro-enclave machine.",
    )
    actions = p.add_subparsers(dest="qemu_action", required=True, metavar="ACTION")
    build = actions.add_parser(
        "build",
        help="build qemu-system-x86_64 with nitro-enclave from Debian's pinned source (or reuse it)",
        description="Build qemu-system-x86_64 with the nitro-enclave machine (libcbor, gnutls) from "
        "Debian's bookworm-backports source package, checked by apt against the signed Sources index. "
        "Needs Debian 12 with deb and deb-src lines for bookworm-backports, and root (or sudo) to "
        "install the build dependencies unless --no-deps. About 12 CPU-minutes once; a prefix that "
        "already holds a working binary is reused. Prints the binary's path: pass it as "
        "`eifbuild boot --qemu PATH` or set EIFBUILD_QEMU_X86_64.",
    )
    build.add_argument(
        "--prefix",
        type=Path,
        metavar="DIR",
        help="install here (default: ~/.cache/eifbuild/qemu-nitro/<version>, honouring XDG_CACHE_HOME)",
    )
    build.add_argument("--version", metavar="DEBIAN_VERSION", help="another Debian version of qemu")
    build.add_argument("--no-deps", action="store_true", help="do not apt-get install the build dependencies")
    build.set_defaults(func=_cmd_qemu_build)


def _cmd_qemu_build(args: argparse.Namespace) -> int:
    from ..runtime import build_qemu_nitro  # noqa: PLC0415

    print(build_qemu_nitro(prefix=args.prefix, version=args.version, deps=not args.no_deps))
    return EXIT_OK


COMMANDS: list[Adder] = [_add_qemu]
